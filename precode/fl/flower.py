"""The Flower apps: clients that train locally, and a curious FedAvg server that reconstructs their data.

Flower 1.x's Message API (``flwr >= 1.42``, Python 3.11 or newer):

* :func:`make_client_app`: a ``ClientApp`` whose ``@app.train()`` function reads the global
  weights and the round's configuration (``local-steps``, ``lr``, ``batch-size``) from the
  message, loads the client's own batch for the round (its ``partition-id``), runs
  :func:`precode.fl.client_update` (``E`` plain SGD steps, under the client's defense)
  and replies with its new weights and ``num-examples``;
* :class:`CuriousFedAvg`: a subclass of ``flwr.serverapp.strategy.FedAvg`` that remembers the
  weights it sends in ``configure_train`` and, in ``aggregate_train``, hands every reply to a
  :class:`~precode.fl.CuriousServer` before aggregating exactly as ``FedAvg`` does;
* :func:`make_server_app`: a ``ServerApp`` that runs the strategy for ``rounds`` rounds and
  tests the global model on the server after every round (``evaluate_fn``).

Secure aggregation: Flower's SecAgg+ (``secaggplus_mod`` on the clients, ``SecAggPlusWorkflow``
on the server) runs, in flwr 1.42, only through Flower's compatibility layer: the workflow calls a
*legacy* strategy (``flwr.server.strategy.FedAvg``'s ``configure_fit``/``aggregate_fit``) inside a
``LegacyContext``, and the mod wraps a legacy ``NumPyClient``. :func:`make_secagg_client_app`,
:class:`CuriousSecAggFedAvg` and :func:`make_secagg_server_app` are those counterparts; the
client runs the same :func:`~precode.fl.client_update`, and the curious strategy sees, as
SecAgg+ intends, only the round's aggregate.

The ``flwr`` imports live in this module (and :mod:`precode.fl.simulation`) only.

Used in chapter 10 (``book/10_federated.ipynb``) and by ``python -m precode federate``.
"""
from __future__ import annotations

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no network here; and no telemetry from a textbook
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from collections.abc import Callable, Iterable

import numpy as np
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from .client import client_batch, client_update
from .experiment import FederationConfig
from .server import CuriousServer
from .streams import derive_seed

__all__ = [
    "CuriousFedAvg",
    "CuriousSecAggFedAvg",
    "make_client_app",
    "make_secagg_client_app",
    "make_secagg_server_app",
    "make_server_app",
    "train_config",
]

EvaluateFn = Callable[[int, dict[str, torch.Tensor]], float]


def train_config(config: FederationConfig) -> dict[str, int | float]:
    """What the server tells the clients every round (so it knows it): ``local-steps``, ``lr``, ``batch-size``."""
    return {"local-steps": int(config.local_steps), "lr": float(config.lr), "batch-size": int(config.batch_size)}


def _client_train(config: FederationConfig, partition: int, clients: int, server_round: int,
                  settings, weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """One client's round: its batch, its E local steps; the weights to send back and ``num-examples``."""
    torch.set_num_threads(1)  # one CPU per virtual client
    data = config.train_data()
    batch = client_batch(data, partition, server_round, clients, int(settings["batch-size"]))
    model = config.build_model(data.input_shape, data.num_classes)
    new = client_update(model, batch.images, batch.labels, local_steps=int(settings["local-steps"]),
                        lr=float(settings["lr"]), defense=config.defense_of(partition),
                        seed=derive_seed(config.seed, "client", server_round, partition), weights=weights)
    return new, len(batch)


def make_client_app(config: FederationConfig) -> ClientApp:
    """The ``ClientApp`` (Message API) of a client that trains on its own batch and may defend.

    The client's defense and data set come from ``config`` (the client's own settings); ``E``,
    ``B`` and the learning rate from the server's message. Its reply carries its new weights
    (``arrays``) and ``num-examples`` (FedAvg's weight), plus its ``partition-id`` for the
    experiment's bookkeeping (the server knows who sent a reply anyway).
    """
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        clients = int(context.node_config["num-partitions"])
        settings = msg.content["config"]
        weights = msg.content["arrays"].to_torch_state_dict()
        new, n = _client_train(config, partition, clients, int(settings["server-round"]), settings, weights)
        content = RecordDict({
            "arrays": ArrayRecord(new),
            "metrics": MetricRecord({"num-examples": n, "partition-id": partition}),
        })
        return Message(content=content, reply_to=msg)

    return app


def _partition(msg: Message) -> int:
    return int(msg.content["metrics"]["partition-id"])


def _train_metrics(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    total = sum(float(r["metrics"][weighting_key]) for r in records)
    return MetricRecord({"num-examples": total, "clients": len(records)})


class CuriousFedAvg(FedAvg):
    """``FedAvg`` that also reconstructs every client's data from its update (honest-but-curious).

    Aggregation is ``FedAvg.aggregate_train`` itself, on the replies sorted by partition (the
    weighted mean does not depend on the order; sorting makes its floating-point sum, and so the
    run, reproducible).

    Args:
        server: the :class:`~precode.fl.CuriousServer` that attacks, or ``None`` to only
            aggregate (an honest server).
        **kwargs: ``FedAvg``'s arguments.
    """

    def __init__(self, server: CuriousServer | None, **kwargs):
        kwargs.setdefault("train_metrics_aggr_fn", _train_metrics)
        super().__init__(**kwargs)
        self.server = server

    # [curious-fedavg]
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if self.server is not None:
            self.server.remember(server_round, arrays.to_torch_state_dict())
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = sorted(replies, key=lambda m: (m.has_error(), 0 if m.has_error() else _partition(m)))
        valid = [m for m in replies if not m.has_error()]
        if self.server is not None and valid:
            self.server.attack_updates(server_round, [_partition(m) for m in valid],
                                       [m.content["arrays"].to_torch_state_dict() for m in valid])
        return super().aggregate_train(server_round, replies)
    # [/curious-fedavg]


def make_server_app(config: FederationConfig, server: CuriousServer | None, initial: dict[str, torch.Tensor],
                    evaluate: EvaluateFn, accuracy: dict[int, float]) -> ServerApp:
    """The ``ServerApp``: :class:`CuriousFedAvg` over all ``config.clients`` clients for ``config.rounds`` rounds.

    Args:
        config: the run.
        server: the curious server (``None``: honest).
        initial: the initial global weights.
        evaluate: ``(round, weights) -> test accuracy``, called before round 1 and after every round.
        accuracy: filled with ``{round: test accuracy}``.
    """
    app = ServerApp()

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        accuracy[server_round] = float(evaluate(server_round, arrays.to_torch_state_dict()))
        return MetricRecord({"accuracy": accuracy[server_round]})

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = CuriousFedAvg(server, fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=config.clients,
                                 min_available_nodes=config.clients)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(initial), num_rounds=config.rounds,
                       train_config=ConfigRecord(train_config(config)), evaluate_fn=evaluate_fn)

    return app


# -- secure aggregation (SecAgg+, through Flower's compatibility layer) ---------------------------


def make_secagg_client_app(config: FederationConfig) -> ClientApp:
    """A ``ClientApp`` with ``secaggplus_mod``: the same local training, its weights sent masked.

    SecAgg+ quantises the weights with stochastic rounding drawn from NumPy's global generator;
    the client seeds it from its own stream first, so runs are reproducible.
    """
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod

    class SecAggClient(NumPyClient):
        def __init__(self, partition: int, clients: int):
            self.partition, self.clients = partition, clients

        def fit(self, parameters, settings):
            data = config.train_data()
            keys = list(config.build_model(data.input_shape, data.num_classes).state_dict())
            weights = {k: torch.from_numpy(np.asarray(v)) for k, v in zip(keys, parameters)}
            server_round = int(settings["server-round"])
            new, n = _client_train(config, self.partition, self.clients, server_round, settings, weights)
            np.random.seed(derive_seed(config.seed, "client", server_round, self.partition, 2) % 2**32)
            return [new[k].numpy() for k in keys], n, {"partition-id": self.partition}

    def client_fn(context: Context):
        return SecAggClient(int(context.node_config["partition-id"]),
                            int(context.node_config["num-partitions"])).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


def _legacy_fedavg():
    from flwr.server.strategy import FedAvg as LegacyFedAvg

    return LegacyFedAvg


class CuriousSecAggFedAvg(_legacy_fedavg()):
    """Flower's legacy ``FedAvg`` behind SecAgg+: the server sees only the aggregate, and attacks it.

    Under ``SecAggPlusWorkflow`` every result handed to ``aggregate_fit`` carries the same
    unmasked *aggregate*; no client's own update reaches the strategy. The curious server
    attacks that aggregate as the mean of ``len(results)`` clients' updates.

    Args:
        server: the curious server, or ``None``.
        keys: the state dict's keys, in the order of the parameter arrays.
        label_oracle: ``(round, partitions) -> labels`` handed to the attacker (the experiment's
            concession to it), or ``None`` to infer them.
        **kwargs: the legacy ``FedAvg``'s arguments.
    """

    def __init__(self, server: CuriousServer | None, keys: list[str],
                 label_oracle: Callable[[int, list[int]], torch.Tensor] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.server, self.keys, self.label_oracle = server, keys, label_oracle

    def _state(self, parameters) -> dict[str, torch.Tensor]:
        from flwr.common import parameters_to_ndarrays

        return {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in
                zip(self.keys, parameters_to_ndarrays(parameters))}

    def configure_fit(self, server_round, parameters, client_manager):
        if self.server is not None:
            self.server.remember(server_round, self._state(parameters))
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        aggregated, metrics = super().aggregate_fit(server_round, results, failures)
        if self.server is not None and aggregated is not None:
            partitions = sorted(int(res.metrics["partition-id"]) for _, res in results)
            labels = self.label_oracle(server_round, partitions) if self.label_oracle else None
            self.server.attack_aggregate(server_round, partitions, self._state(aggregated), labels)
        return aggregated, metrics


def make_secagg_server_app(config: FederationConfig, server: CuriousServer | None, initial: dict[str, torch.Tensor],
                           evaluate: EvaluateFn, accuracy: dict[int, float],
                           label_oracle: Callable[[int, list[int]], torch.Tensor] | None = None) -> ServerApp:
    """The ``ServerApp`` with ``SecAggPlusWorkflow``: every client's key is shared with all the others
    (``num_shares=1.0``), half of them needed to unmask; weights quantised in SecAgg+'s default
    range ``[-8, 8]`` with ``2**22`` levels; ``max_weight`` is the batch size, so the client's weight
    ``num-examples / max_weight`` is 1 and costs no precision.
    """
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    keys = list(initial)
    app = ServerApp()

    def evaluate_fn(server_round, ndarrays, _config):
        weights = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in zip(keys, ndarrays)}
        accuracy[server_round] = float(evaluate(server_round, weights))
        return 0.0, {"accuracy": accuracy[server_round]}

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = CuriousSecAggFedAvg(
            server, keys, label_oracle, fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=config.clients,
            min_available_clients=config.clients, evaluate_fn=evaluate_fn,
            on_fit_config_fn=lambda server_round: {**train_config(config), "server-round": server_round},
            initial_parameters=ndarrays_to_parameters([v.numpy() for v in initial.values()]),
            fit_metrics_aggregation_fn=lambda m: {"clients": len(m)},
        )
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=config.rounds), strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
            num_shares=1.0, reconstruction_threshold=0.5, max_weight=float(config.batch_size)))
        workflow(grid, legacy)

    return app
