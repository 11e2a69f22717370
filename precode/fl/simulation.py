"""Run one federated experiment in Flower's simulation engine and score what the server recovered.

:func:`run_federation` builds the global model, the curious server and the Flower apps of
``precode.fl.flower`` from a :class:`~precode.fl.experiment.FederationConfig`, runs them with
``flwr.simulation.run_simulation`` (Ray, one CPU per virtual client) and returns a
:class:`~precode.fl.experiment.FederationReport`.

The same ``ClientApp`` and ``ServerApp`` objects run unchanged on Flower's deployment engine
(a SuperLink, one SuperNode per client machine, ``flwr run`` against a remote federation);
chapter 10 says how.

Used in chapter 10 (``book/10_federated.ipynb``) and by ``python -m precode federate``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from ..training import evaluate as evaluate_model
from .experiment import FederationConfig, FederationReport, score
from .server import CuriousServer

__all__ = ["backend_config", "run_federation"]


def backend_config(cpus_per_client: float = 1.0) -> dict[str, Any]:
    """Ray's settings for the simulation: ``cpus_per_client`` CPUs per virtual client (Flower's default is 2)."""
    return {"client_resources": {"num_cpus": float(cpus_per_client), "num_gpus": 0.0},
            "init_args": {"logging_level": logging.ERROR, "log_to_driver": False}}


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Keep Flower's and Ray's logs off stdout and, unless ``verbose``, show only their errors.

    Hidden when quiet: Flower's notice that ``run_simulation`` is deprecated in favour of
    ``flwr run``, its note that federated evaluation is off (the server evaluates), Ray's notes.
    """
    logger = logging.getLogger("flwr")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    saved = os.dup(1)
    sys.stdout.flush()
    os.dup2(2, 1)  # Ray's subprocesses inherit file descriptor 1: point it at stderr
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deprecated.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            if not verbose:
                warnings.filterwarnings("ignore", category=FutureWarning, module="ray")
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        logger.setLevel(level)


def run_federation(config: FederationConfig, *, progress: bool = False, verbose: bool = False,
                   cpus_per_client: float = 1.0, **attack_options) -> FederationReport:
    """Run ``config`` in Flower's simulation engine: ``config.clients`` virtual clients on Ray.

    Args:
        config: the experiment.
        progress: show the attack's progress bar (stderr).
        verbose: show Flower's INFO log (stderr).
        cpus_per_client: Ray resources per virtual client.
        **attack_options: passed to the server's attack (``lr``, ``tv`` for ``ig``).

    Returns:
        A :class:`~precode.fl.experiment.FederationReport`: test accuracy after every round and,
        unless ``config.attack == "none"``, each client's reconstruction scores every round.

    Used in chapter 10.
    """
    from flwr.simulation import run_simulation

    from . import flower

    start = time.perf_counter()
    train, test = config.train_data(), config.test_data()
    model = config.build_model(train.input_shape, train.num_classes)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    server = None
    if config.attack != "none":
        server = CuriousServer(model, train.input_shape, attack=config.attack, batch_size=config.batch_size,
                               local_steps=config.local_steps, lr=config.lr, seed=config.seed,
                               iterations=config.iterations, restarts=config.restarts, progress=progress,
                               **attack_options)
    referee = config.build_model(train.input_shape, train.num_classes)

    def evaluate(_round: int, weights: dict[str, torch.Tensor]) -> float:
        referee.load_state_dict(weights)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # PRECODE samples in eval mode too: test with fixed noise
            return evaluate_model(referee, test)[1]

    accuracy: dict[int, float] = {}
    if config.secagg:
        def labels_of(server_round, partitions):  # the experiment hands the attacker the true labels
            return config.victims(server_round, partitions).labels

        server_app = flower.make_secagg_server_app(config, server, initial, evaluate, accuracy, labels_of)
        client_app = flower.make_secagg_client_app(config)
        engine = "Flower simulation engine (Ray), SecAgg+ workflow"
    else:
        server_app = flower.make_server_app(config, server, initial, evaluate, accuracy)
        client_app = flower.make_client_app(config)
        engine = "Flower simulation engine (Ray)"
    with _quiet(verbose):
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=config.clients,
                       backend_config=backend_config(cpus_per_client))
    records = server.reconstructions if server is not None else []
    if server is not None and len({r.server_round for r in records}) < config.rounds:
        raise RuntimeError(f"the simulation finished {len({r.server_round for r in records})} of {config.rounds} "
                           "rounds; see Flower's log (verbose=True)")
    scores: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        scores.setdefault(record.server_round, []).extend(score(config, record))
    for rows in scores.values():
        rows.sort(key=lambda c: c["client"])
    return FederationReport(
        config=config, test_accuracy=dict(sorted(accuracy.items())), reconstructions=records, scores=scores,
        seconds=time.perf_counter() - start, attack_seconds=sum(r.seconds for r in records),
        data_source=train.source, engine=engine, server=server,
    )
