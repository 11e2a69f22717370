"""``python -m precode federate``: FedAvg in Flower, with a curious server that attacks every update.

::

    python -m precode federate --model {mlp,cnn,lenet} [--precode] --data D --clients N --rounds R
        --local-steps E --batch-size B [--lr LR] [--defense SPEC] [--attack {analytic,ig,none}] [--secagg]
        [--iterations K] [--restarts R] [--seed S] [--json PATH|-]

``N`` virtual clients run in Flower's simulation engine (Ray, one CPU each). Every round each
client trains the global model on its own batch of ``B`` training images for ``E`` plain SGD
steps (under ``--defense``) and sends its weights back; the server aggregates them exactly as
``FedAvg`` does and reconstructs each client's images from its update with ``--attack``
(``analytic``: the division of the first layer's update; ``ig``: Inverting Gradients that
simulates the ``E`` local steps). With ``--secagg`` the clients send their weights through
SecAgg+ and the server attacks the one aggregate it sees, handed the true labels. The command
prints, per round and client, MSE, PSNR, SSIM and label accuracy, and the global model's test
accuracy; ``--json -`` leaves only the JSON on stdout
(``{"config", "rounds": [{"round", "test_accuracy", "clients": [...]}], "summary"}``).

Ctrl-C or SIGTERM ends it within seconds, Ray stopped, with one line and the exit status 130 or
143. Needs ``flwr[simulation]`` (Python 3.11 or newer). Used in chapter 10 (``book/10_federated.ipynb``).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import torch

from ..attacks import first_linear_layer
from ..defenses import parse_defense
from ..errors import InputError
from ..fl.experiment import ATTACK_CHOICES, FederationConfig
from ..fl.simulation import run_federation
from ..models import MODEL_NAMES
from .common import (
    MAX_ITERATIONS,
    MAX_RESTARTS,
    SEED_MAX,
    Interrupted,
    UserError,
    check_integers,
    check_output_path,
    format_or_na,
    write_json,
)

__all__ = ["add_parser", "run"]

MAX_CLIENTS = 10_000
"""The most virtual clients (Flower's simulation runs them in a pool of Ray actors, a few at a time)."""
MAX_ROUNDS = 100_000
"""The most rounds, and local steps per round."""


def add_parser(subparsers) -> argparse.ArgumentParser:

    p = subparsers.add_parser(
        "federate",
        help="run FedAvg in Flower with a curious server that reconstructs every client's images",
        description="Run FedAvg in Flower's simulation engine: N clients train locally (E SGD steps on B images "
        "per round), an honest-but-curious server aggregates their weights and reconstructs each client's "
        "images from its update; report the reconstructions and the global model's test accuracy.",
        epilog="Needs flwr[simulation] (Python 3.11+). One CPU per virtual client; the server's attack uses one "
        "thread unless OMP_NUM_THREADS is set. Iterations and restarts default to the profile's values.",
    )
    p.add_argument("--model", required=True, metavar="{" + ",".join(MODEL_NAMES) + "}", help="the global model")
    p.add_argument("--precode", action="store_true", help="insert a PRECODE bottleneck before the classifier")
    p.add_argument("--data", required=True, metavar="D",
                   help="data set whose train split the clients hold (fashion-mnist, mnist, cifar10, cifar100)")
    p.add_argument("--clients", required=True, type=int, metavar="N", help="number of clients (at least 2)")
    p.add_argument("--rounds", required=True, type=int, metavar="R", help="FedAvg rounds")
    p.add_argument("--local-steps", required=True, type=int, metavar="E", help="local SGD steps per round")
    p.add_argument("--batch-size", required=True, type=int, metavar="B", help="images per client per round")
    p.add_argument("--lr", type=float, default=0.1, metavar="LR", help="the clients' SGD learning rate (0.1)")
    p.add_argument("--defense", default="none", metavar="SPEC",
                   help="what each client applies to every local step's gradient: none, gaussian:S, laplacian:S, "
                        "prune:P, dp:clip=C,noise=Z (default: none)")
    p.add_argument("--attack", default="analytic", metavar="{" + ",".join(ATTACK_CHOICES) + "}",
                   help="the server's attack on each update (default: analytic)")
    p.add_argument("--secagg", action="store_true", help="secure aggregation (SecAgg+): the server sees only the sum")
    p.add_argument("--iterations", type=int, metavar="K",
                   help="Inverting Gradients iterations (default: the profile's)")
    p.add_argument("--restarts", type=int, metavar="R", help="Inverting Gradients restarts (default: the profile's)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="the experiment's seed (every random stream)")
    p.add_argument("--json", metavar="PATH|-", help="write the results as JSON to PATH, or to stdout with '-'")

    def one_line_error(message: str) -> None:
        print(f"error: {message} (see 'python -m precode federate --help')", file=sys.stderr)
        sys.exit(2)

    p.error = one_line_error  # type: ignore[method-assign]
    return p


def _config(args: argparse.Namespace):
    check_integers(("--seed", args.seed, 0, SEED_MAX), ("--clients", args.clients, 2, MAX_CLIENTS),
                   ("--rounds", args.rounds, 1, MAX_ROUNDS), ("--local-steps", args.local_steps, 1, MAX_ROUNDS),
                   ("--batch-size", args.batch_size, 1, None), ("--iterations", args.iterations, 1, MAX_ITERATIONS),
                   ("--restarts", args.restarts, 1, MAX_RESTARTS))
    if args.json not in (None, "-"):
        check_output_path(args.json, "--json")
    if args.data.lower() == "photos" or args.data.lower().endswith(".npz"):
        raise UserError(f"--data {args.data!r} has no training split for the clients; use fashion-mnist, mnist, "
                        "cifar10 or cifar100")
    try:
        config = FederationConfig(
            model=args.model.lower(), precode=bool(args.precode), data=args.data, clients=args.clients,
            rounds=args.rounds, local_steps=args.local_steps, batch_size=args.batch_size, lr=args.lr,
            defense=args.defense, attack=args.attack.lower(), secagg=bool(args.secagg), seed=args.seed,
            iterations=args.iterations, restarts=args.restarts,
        )
    except ValueError as e:
        raise UserError(str(e).replace("local_steps", "--local-steps")) from None
    data = config.train_data()  # enough training images for every client and round, or one line
    model = config.build_model(data.input_shape, data.num_classes)
    if config.attack == "analytic":
        try:
            first_linear_layer(model, data.input_shape)
        except ValueError as e:
            raise UserError(f"{e}; use --attack ig for this model") from None
    # one client's step on one image, here, so that a defense the model cannot take (partial-gaussian without
    # PRECODE) fails in a line now rather than in a Ray worker after Flower's start-up
    try:
        with torch.random.fork_rng(devices=[]):
            parse_defense(config.defense).shared_gradients(model, data.images[:1], data.labels[:1])
    except InputError as e:
        raise UserError(f"--defense {config.defense}: {e}" + ("" if config.precode else ", or add --precode")) from None
    return config


def _table(report) -> str:
    c = report.config
    lines = [
        (f"FedAvg in {report.engine}: {c.clients} clients x {c.rounds} rounds, E={c.local_steps} local SGD steps "
         f"on B={c.batch_size} images (lr {c.lr:g}), model {c.model}{' + PRECODE' if c.precode else ''}, "
         f"defense {c.defense}, attack {c.attack}{' on the SecAgg+ aggregate' if c.secagg else ''}, seed {c.seed}"),
        f"data: {report.data_source}",
        f"{'round':>5} {'client':>6} {'mse':>10} {'psnr':>8} {'ssim':>7} {'label':>6}",
    ]
    for r in range(1, c.rounds + 1):
        for s in report.scores.get(r, []):
            lines.append(f"{r:>5} {s['client']:>6} {s['mse']:>10.3g} {s['psnr']:>8.2f} "
                         f"{format_or_na(s['ssim'], '7.4f'):>7} {format_or_na(s['label_accuracy'], '6.2f'):>6}")
        lines.append(f"{r:>5} {'test':>6} accuracy of the global model {100 * report.test_accuracy[r]:.1f}%")
    s = report.summary()
    if s["victims"]:
        lines.append(f"{'mean':>12} {s['mse']:>10.3g} {s['psnr']:>8.2f} {format_or_na(s['ssim'], '7.4f'):>7} "
                     f"{format_or_na(s['label_accuracy'], '6.2f'):>6}   over {s['victims']} client updates; "
                     f"attacks {s['attack_seconds']:.1f} s")
    lines.append(f"total {s['seconds']:.1f} s, Flower's start-up included")
    return "\n".join(lines)


def _stop_ray() -> None:
    ray = sys.modules.get("ray")  # imported by Flower's simulation once it started Ray; else nothing to stop
    if ray is not None:
        with contextlib.suppress(Exception):  # on the way out: what is left, the end of the process takes along
            ray.shutdown()  # stops the workers and the local cluster this process started


def _descendants() -> list[int]:
    """The PIDs of this process's children, their children and so on (Linux's ``/proc``; elsewhere none)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _end(signum: int, _frame) -> None:
    """Ctrl-C or SIGTERM during a federation: one line, Ray stopped, the process ended (130 / 143).

    The process is ended here rather than unwound: Flower runs the ServerApp in a thread of its own
    that is no daemon and waits for replies that will never come, so an unwound process would hang
    at its exit until a second Ctrl-C. Nothing is written before the end of a federation, so
    nothing is lost."""
    try:
        with contextlib.suppress(OSError):  # stderr may be a closed pipe
            os.write(2, f"error: {Interrupted(signum, 'Flower and Ray stopped, nothing written')}\n".encode())
            quiet = os.open(os.devnull, os.O_WRONLY)  # what Flower's threads print while Ray stops is noise now
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
        ray_processes = _descendants()  # before Ray stops: its agents outlive a killed raylet for a minute
        stopper = threading.Thread(target=_stop_ray, daemon=True)
        stopper.start()
        stopper.join(timeout=5)  # Ray's own shutdown, bounded; then whatever of it is left
        for pid in ray_processes:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    finally:
        os._exit(128 + signum)


@contextlib.contextmanager
def _ending_on_signals() -> Iterator[None]:
    """:func:`_end` on Ctrl-C and SIGTERM while Flower runs.

    Ray installs SIGTERM handlers of its own when Flower starts it: one in Python (it stops Ray's
    processes and exits with status 1, into Flower's hanging thread) and one in C (stack traces of
    crashes, which aborts the process). While this block runs, ``signal.signal`` keeps this
    command's handlers for SIGINT and SIGTERM, and Ray's documented switch
    ``RAY_DISABLE_FAILURE_SIGNAL_HANDLER`` turns its C handler off (in its workers too).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ours = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER" not in os.environ
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    constants = sys.modules.get("ray._private.ray_constants")  # read when Ray is imported: too late if it was
    if constants is not None and os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] == "1":
        constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    install = signal.signal
    previous = {sig: install(sig, _end) for sig in (signal.SIGINT, signal.SIGTERM)}

    def keeping(sig, handler):
        if sig in previous:
            return _end  # this command's handler stays (see above)
        return install(sig, handler)

    signal.signal = keeping
    try:
        yield
    finally:
        signal.signal = install
        for sig, handler in previous.items():
            install(sig, handler)
        if ours:
            os.environ.pop("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", None)


def run(args: argparse.Namespace) -> int:
    """Run the command for parsed ``args``; returns the exit status (user errors raise ``UserError``).
    The thread count it sets is restored by :func:`precode.cli.main`."""
    config = _config(args)
    if importlib.util.find_spec("flwr") is None or importlib.util.find_spec("ray") is None:
        raise UserError("the federate command needs Flower's simulation engine: "
                        "pip install 'flwr[simulation]>=1.42,<1.43' "
                        "(Python 3.11 or newer)")

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)  # the attacks are many small operations (see python -m precode attack --help)
    with _ending_on_signals():
        report = run_federation(config, progress=sys.stderr.isatty())
    payload: dict[str, Any] = report.to_json()
    print(_table(report), file=sys.stderr if args.json == "-" else sys.stdout)
    write_json(payload, args.json)
    return 0
