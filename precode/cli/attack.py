"""``python -m precode attack``: reconstruct victims' images from their shared gradients.

::

    python -m precode attack --attack {dlg,idlg,ig,analytic,ig-omit,ig-joint,ig-mean,ig-eot}
        --model {mlp,cnn,lenet} [--precode] [--server {honest,malicious}]
        --data {fashion-mnist,mnist,cifar10,cifar100,photos,PATH.npz} --images N
        [--batch-size B] [--iterations K] [--restarts R] [--trained-epochs E] [--seed S]
        [--json PATH|-] [--figure PATH]

The server is honest-but-curious unless ``--server malicious``: then it sends weights that switch
PRECODE's sampling off (:func:`precode.attacks.switch_off_sampling`; needs ``--precode``) before the
clients compute their gradients.

The victims are the first ``N`` images of the test split (of an ``.npz``: its first ``N``), cut
in order into ``N / B`` client batches. Each client shares the gradient of its batch; the
server runs the attack on all of them at once and the command reports, per victim image and
on average, MSE, PSNR and SSIM against the original and whether the label was recovered (for
batches of ``B > 1``, reconstructions are matched to the batch's originals by least MSE and
labels are compared as a set per batch, since an attacker cannot know the client's order).

On the CPU the command computes with one thread unless ``OMP_NUM_THREADS`` says otherwise: the
batched attacks consist of many small operations, which a second thread barely speeds up and,
when other jobs share the CPU, slows down many times over (measured on a busy 2-core machine:
DLG on 8 victims took 20 s with one thread and 590 s with two).

Used in chapter 2 (``book/02_attacks.ipynb``) and by the scripts that reproduce its tables.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from ..attacks import ATTACK_NAMES, first_linear_layer, resolved_budget
from ..attacks.matching import at_or_below
from ..bottleneck import add_precode
from ..data import load_data
from ..defenses import parse_defense
from ..experiment import run_attack
from ..files import atomic_write
from ..models import MODEL_NAMES, build_model
from ..profiles import get_profile
from ..threat import ThreatModel, label_rule_of
from ..training import train
from .common import (
    MAX_EPOCHS,
    MAX_ITERATIONS,
    MAX_RESTARTS,
    SEED_MAX,
    UserError,
    check_figure,
    check_integers,
    check_output_path,
    format_or_na,
    write_json,
)

__all__ = ["add_parser", "run"]

DATA_CHOICES = "{fashion-mnist,mnist,cifar10,cifar100,photos,PATH.npz}"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "attack",
        help="reconstruct victims' images from their shared gradients",
        description="Reconstruct the first N test images from the gradients their clients share "
        "(the server knows the model's weights) and report how much was recovered.",
        epilog="On the CPU one thread is used unless OMP_NUM_THREADS is set. Iterations and restarts "
        "default to the profile's values (PRECODE_PROFILE=quick|full).",
    )
    p.add_argument("--attack", required=True, metavar="{" + ",".join(ATTACK_NAMES) + "}", help="the attack")
    p.add_argument("--model", required=True, metavar="{" + ",".join(MODEL_NAMES) + "}", help="the victim model")
    p.add_argument("--precode", action="store_true", help="insert a PRECODE bottleneck before the classifier")
    p.add_argument("--precode-at", metavar="LAYER",
                   help="insert the PRECODE bottleneck before the layer LAYER instead (implies --precode)")
    p.add_argument("--labels", default="inferred", metavar="{inferred,given}",
                   help="inferred (default): the server reads each victim's label off the gradient (DLG optimises "
                        "it); given: the server knows the labels (the PRECODE paper's evaluation, the attacker's "
                        "best case)")
    p.add_argument("--server", default="honest", metavar="{honest,malicious}",
                   help="honest-but-curious (default), or malicious: sends weights that switch PRECODE's sampling off")
    p.add_argument("--defense", default="none", metavar="SPEC",
                   help="what each client applies to its gradients before sharing them: none, gaussian:S, "
                        "laplacian:S, prune:P or dp:clip=C,noise=Z (default: none)")
    p.add_argument("--data", required=True, metavar=DATA_CHOICES, help="where the victims come from (test split)")
    p.add_argument("--images", required=True, type=int, metavar="N", help="number of victim images (the first N)")
    p.add_argument("--batch-size", type=int, default=1, metavar="B", help="images per client batch (N/B clients)")
    p.add_argument("--iterations", type=int, metavar="K", help="attack iterations (default: the profile's)")
    p.add_argument("--restarts", type=int, metavar="R", help="random restarts (default: the profile's)")
    p.add_argument("--trained-epochs", type=int, default=0, metavar="E",
                   help="train the model for E epochs on the train split first (default 0: untrained)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="experiment seed: the model's weights; the clients' noise and the attacker's come "
                   "from separate streams derived from it (precode.seeds)")
    p.add_argument("--json", metavar="PATH|-", help="write the results as JSON to PATH, or to stdout with '-'")
    p.add_argument("--figure", metavar="PATH", help="save originals above reconstructions as a PNG")

    def one_line_error(message: str) -> None:
        print(f"error: {message} (see 'python -m precode attack --help')", file=sys.stderr)
        sys.exit(2)

    p.error = one_line_error  # type: ignore[method-assign]
    return p


def threat_model(args: argparse.Namespace) -> ThreatModel:
    """The command's threat model: the server (``--server``), the labels given to it or inferred
    (``--labels``; DLG optimises them), the client's batch size and defense (PRECODE and ``--defense``),
    the seed."""
    defense = parse_defense(args.defense).spec
    if args.precode or args.precode_at:
        at = args.precode_at or "classifier"
        precode = "precode" if at == "classifier" else f"precode@{at}"
        defense = precode if defense == "none" else f"{precode}+{defense}"
    return ThreatModel(server=args.server, labels=str(args.labels).strip().lower(),
                       label_rule=label_rule_of(args.attack), batch_size=args.batch_size, defense=defense,
                       seed=args.seed)


def _check_args(args: argparse.Namespace) -> None:
    if args.attack.lower() not in ATTACK_NAMES:
        raise UserError(f"unknown attack {args.attack!r}; choose one of {', '.join(ATTACK_NAMES)}")
    if args.model.lower() not in MODEL_NAMES:
        raise UserError(f"unknown model {args.model!r}; choose one of {', '.join(MODEL_NAMES)}")
    check_integers(("--images", args.images, 1, None), ("--batch-size", args.batch_size, 1, None),
                   ("--iterations", args.iterations, 1, MAX_ITERATIONS), ("--restarts", args.restarts, 1, MAX_RESTARTS),
                   ("--trained-epochs", args.trained_epochs, 0, MAX_EPOCHS), ("--seed", args.seed, 0, SEED_MAX))
    if args.json not in (None, "-"):
        check_output_path(args.json, "--json")  # before any work, not after it
    if args.figure:
        args.figure = check_figure(args.figure)
    threat_model(args)  # an invalid defense spec or server fails here (ThreatModel), with one line, before any work
    if args.server == "malicious" and not (args.precode or args.precode_at):
        raise UserError("--server malicious switches PRECODE's sampling off through the weights it sends, and the "
                        "model has no PRECODE bottleneck; add --precode")
    if args.images % args.batch_size:
        raise UserError(
            f"--images {args.images} cannot be cut into client batches of --batch-size {args.batch_size}; "
            f"give a multiple of {args.batch_size}"
        )


def _resolved_budget(attack: str, args: argparse.Namespace, profile) -> tuple[int | None, int | None]:
    return resolved_budget(attack, args.iterations or None, args.restarts or None, profile)


def _per_client(values: torch.Tensor | None, clients: int) -> list[float | None]:
    """Per-client floats for the JSON (``None`` where the attack has no such number, or it is not finite)."""
    if values is None:
        return [None] * clients
    return [float(v) if math.isfinite(float(v)) else None for v in values.tolist()]


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known and len(known) == len(values) else None


def _below(ended: list[float | None], truth: list[float | None]) -> float | None:
    """The fraction of clients whose attack ended at or below the true images' distance (with the grid's
    rounding slack: :func:`precode.attacks.matching.at_or_below`)."""
    pairs = [(e, t) for e, t in zip(ended, truth) if e is not None and t is not None]
    if not pairs or len(pairs) != len(truth):
        return None
    return sum(at_or_below(e, t) for e, t in pairs) / len(pairs)


def _save_figure(path: str, originals: torch.Tensor, recon: torch.Tensor, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(originals)
    cols = min(n, 16)
    blocks = math.ceil(n / cols)
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(1.1 * cols, 2.3 * blocks + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        block, col = divmod(i, cols)
        for row, img in ((2 * block, originals[i]), (2 * block + 1, recon[i])):
            pic = img.clamp(0, 1).permute(1, 2, 0).numpy()
            axes[row, col].imshow(pic[..., 0] if pic.shape[2] == 1 else pic, cmap="gray", vmin=0, vmax=1)
    for block in range(blocks):
        axes[2 * block, 0].set_title("original", fontsize=7, loc="left")
        axes[2 * block + 1, 0].set_title("reconstruction", fontsize=7, loc="left")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, dpi=120, format=Path(path).suffix.lstrip(".").lower() or "png")
    except OSError as e:
        raise UserError(f"cannot write the figure to {path}: {e.strerror}") from None
    finally:
        plt.close(fig)


def _table(config: dict[str, Any], results: list[dict], summary: dict[str, Any], threat: ThreatModel) -> str:
    budget = ""
    if config["iterations"] is not None:
        budget = f", {config['iterations']} iterations x {config['restarts']} restart(s)"
    lines = [
        f"{config['attack']} on {config['model']}{' + PRECODE' if config['precode'] else ''}"
        f" ({config['trained_epochs']} training epochs), victims: first {config['images']} of {config['data']}"
        f" in batches of {config['batch_size']}{budget}, seed {config['seed']}, profile {config['profile']}",
        str(threat),
        f"{'index':>6} {'label':>6} {'pred':>6} {'mse':>10} {'psnr':>8} {'ssim':>7} {'evals':>6} {'distance':>9} "
        f"{'at truth':>9}",
    ]
    for r in results:
        if r["status"] == "diverged":
            lines.append(f"{r['index']:>6} {r['label']:>6} {r['label_pred']:>6} {'diverged (no score)':>27}")
            continue
        lines.append(f"{r['index']:>6} {r['label']:>6} {r['label_pred']:>6} {r['mse']:>10.3g} "
                     f"{r['psnr']:>8.2f} {format_or_na(r['ssim'], '7.4f'):>7} {r['evaluations']:>6d} "
                     f"{format_or_na(r['distance'], '9.3g'):>9} {format_or_na(r['truth_distance'], '9.3g'):>9}")
    tail = f"label accuracy {summary['label_accuracy']:.3f}, attack {summary['seconds']:.1f} s"
    if summary["diverged"] == len(results):
        lines.append(f"{'mean':>6} the attack diverged on all {len(results)} victims (its objective overflowed: "
                     f"no reconstruction to score); {tail}")
    else:
        lines.append(f"{'mean':>6} {'':>6} {'':>6} {summary['mse']:>10.3g} {summary['psnr']:>8.2f} "
                     f"{format_or_na(summary['ssim'], '7.4f'):>7}   {tail}"
                     + (f"; diverged on {summary['diverged']} victims (left out of the means)"
                        if summary["diverged"] else ""))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the command for parsed ``args``; returns the exit status (user errors raise ``UserError``).
    The thread count it sets is restored by :func:`precode.cli.main`."""
    _check_args(args)
    attack, model_name = args.attack.lower(), args.model.lower()
    profile = get_profile()
    progress = sys.stderr.isatty()  # bars on an interactive stderr only, not in logs and pipes
    if args.trained_epochs and (args.data.lower() == "photos" or args.data.lower().endswith(".npz")):
        raise UserError(f"--trained-epochs needs a training split, and {args.data!r} has none; "
                        "train on fashion-mnist, mnist, cifar10 or cifar100")
    victims = load_data(args.data, "test").first(args.images)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)  # many small operations: see the module docstring (precode.cli.main restores it)
    model = build_model(model_name, victims.input_shape, victims.num_classes, seed=args.seed)
    if args.precode or args.precode_at:
        # the bottleneck's weights come from the seed too
        add_precode(model, before=args.precode_at or "classifier", seed=args.seed)
    model.to(device)
    if attack == "analytic":
        first_linear_layer(model, victims.input_shape)  # fail before any training
    if args.trained_epochs:
        train_data = load_data(args.data, "train").subset(profile.train_subset)
        train(model, train_data, epochs=args.trained_epochs, seed=args.seed, progress=progress)

    # the experiment (precode.experiment.run_attack): the server sends the model, the clients share their
    # gradients with the client's stream, the attack runs with the attacker's (it must not replay the
    # client's noise), and the reconstructions are matched to the victims for scoring
    threat = threat_model(args)
    rng = threat.streams
    iterations, restarts = _resolved_budget(attack, args, profile)
    run_ = run_attack(attack, model, victims, threat, defense=args.defense, iterations=iterations,
                      restarts=restarts, progress=progress)
    result, recon, predicted = run_.result, run_.images, run_.labels
    mse, psnr = run_.mse, run_.psnr
    ssim = None if run_.ssim is None else run_.ssim.tolist()

    config = {
        "attack": attack, "model": model_name, "precode": bool(args.precode or args.precode_at),
        "precode_at": (args.precode_at or "classifier") if (args.precode or args.precode_at) else None,
        "defense": args.defense, "data": str(args.data),
        "data_source": victims.source, "images": args.images, "batch_size": args.batch_size,
        "iterations": iterations, "restarts": restarts, "evaluations": int(result.evaluations),
        "trained_epochs": args.trained_epochs, "seed": args.seed, "server": args.server,
        "client_seed": rng.client, "attacker_seed": rng.attacker,
        "profile": profile.name, "device": str(device), "threat_model": threat.to_dict(),
    }
    # per client (one shared gradient of B images): the budget it spent, where it ended and where the
    # true images lie under the same objective (an attack that ends above that failed to optimise)
    spent = result.victim_evaluations()
    b = args.batch_size
    ended, truth = (_per_client(v, len(victims) // b) for v in (result.distance, result.truth_distance))
    lost = run_.diverged  # the attack's objective overflowed for these victims: no score (precode.attacks.divergence)
    results = [
        {"index": i, "client": i // b, "label": int(victims.labels[i]), "label_pred": int(predicted[i]),
         "mse": None if lost[i] else float(mse[i]), "psnr": None if lost[i] else float(psnr[i]),
         "ssim": None if ssim is None or lost[i] else float(ssim[i]), "status": "diverged" if lost[i] else "ok",
         "evaluations": int(spent[i // b]), "distance": ended[i // b], "truth_distance": truth[i // b]}
        for i in range(len(victims))
    ]
    kept = [i for i in range(len(victims)) if not lost[i]]
    scored = {k: [r[k] for r in results if r[k] is not None] for k in ("ssim",)}
    summary = {
        "mse": float(mse[kept].mean()) if kept else None, "psnr": float(psnr[kept].mean()) if kept else None,
        "ssim": None if ssim is None or not kept else float(sum(scored["ssim"]) / len(scored["ssim"])),
        "label_accuracy": run_.label_accuracy, "seconds": float(result.seconds), "diverged": len(victims) - len(kept),
        "evaluations": int(spent.max()) if len(spent) else 0,
        "distance": _mean(ended), "truth_distance": _mean(truth),
        "ended_at_or_below_truth": _below(ended, truth),
    }
    table = _table(config, results, summary, threat)
    print(table, file=sys.stderr if args.json == "-" else sys.stdout)
    write_json({"config": config, "results": results, "summary": summary}, args.json)
    if args.figure:
        title = (f"{attack} on {model_name}{' + PRECODE' if args.precode else ''}: "
                 + ("diverged (no score)" if summary["psnr"] is None else f"mean PSNR {summary['psnr']:.1f} dB")
                 + ("" if summary["ssim"] is None else f", SSIM {summary['ssim']:.3f}"))
        _save_figure(args.figure, victims.images, recon, title)
    return 0
