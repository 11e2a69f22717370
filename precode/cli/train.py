"""``python -m precode train``: train a model under a defense and report accuracy per epoch.

::

    python -m precode train --model {mlp,cnn,lenet} [--precode] --data D [--epochs E]
        [--defense SPEC] [--seed S] [--lr LR] [--batch-size B] [--json PATH|-]

Trains on the train split of ``D`` (its first ``train_subset`` images in the quick profile, all of
them in the full one) with Adam, evaluates on the whole test split after every epoch, and prints a
table, or with ``--json -`` only a JSON document on stdout::

    {"config": {...}, "history": [{"epoch", "train_loss", "train_accuracy", "test_loss",
     "test_accuracy", "seconds"}, ...], "summary": {"test_accuracy", "seconds"[, "epsilon", "delta"]}}

``seconds`` is the wall-clock time of training including the per-epoch test evaluation.
DP-SGD adds ``epsilon`` at ``delta = 1e-5`` (``null`` when it has no noise, i.e. no guarantee).
Progress bars go to stderr. The command behind chapter 5's accuracy and convergence results.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import torch

from ..bottleneck import add_precode
from ..data import load_data
from ..defenses import DPSGD, parse_defense
from ..defenses.spec import DEFENSE_FORMS
from ..models import MODEL_NAMES, build_model
from ..profiles import get_profile
from .common import MAX_EPOCHS, SEED_MAX, UserError, check_output_path, integer, write_json

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a model under a defense; report accuracy per epoch",
        description=(
            "Train a model (optionally with a PRECODE bottleneck) under a defense on the train split, "
            "evaluate on the test split after every epoch, and report the history. The profile "
            "($PRECODE_PROFILE, quick by default) limits the number of training images."
        ),
    )
    # Values are checked in run(), so that every mistake is reported as one line.
    p.add_argument("--model", help="mlp, cnn or lenet")
    p.add_argument("--precode", action="store_true", help="insert a PRECODE bottleneck before the classifier")
    p.add_argument("--data", help="fashion-mnist, fashion-mnist-sample, mnist, cifar10 or cifar100 (a data set with "
                                  "a test split)")
    p.add_argument("--epochs", help="passes over the training images (default: the profile's epochs)")
    p.add_argument("--defense", default="none", metavar="SPEC", help=f"the defense: {DEFENSE_FORMS} (default: none)")
    p.add_argument("--seed", default="0",
                   help="seeds the model, the training subset, the shuffling and the noise (default 0)")
    p.add_argument("--lr", default="1e-3", help="Adam's learning rate (default 1e-3, as in the paper)")
    p.add_argument("--batch-size", default="64", help="images per step; DP-SGD's expected batch size (default 64)")
    p.add_argument("--json", metavar="PATH|-", help="write the results as JSON to PATH, or to stdout with -")
    return p


def _positive_float(text: str, option: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise UserError(f"{option} must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{option} must be a finite number > 0, got {text!r}")
    return value


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _table(config: dict[str, Any], history: list[dict], summary: dict[str, Any]) -> str:
    def pct(v: float | None) -> str:
        return "   -  " if v is None else f"{100 * v:6.2f}"

    def num(v: float | None) -> str:
        return "     -" if v is None else f"{v:6.4f}"

    lines = [
        f"{config['model']}{' + PRECODE' if config['precode'] else ''} on {config['data']} "
        f"({config['train_images']} training images, {config['test_images']} test images), "
        f"defense {config['defense']}, seed {config['seed']}, profile {config['profile']}",
        "",
        "epoch  train loss  train acc %  test loss  test acc %  seconds"
        + ("  epsilon" if "epsilon" in summary else ""),
    ]
    for h in history:
        row = (f"{h['epoch']:5d}  {num(h['train_loss']):>10}  {pct(h['train_accuracy']):>11}  "
               f"{num(h['test_loss']):>9}  {pct(h['test_accuracy']):>10}  {h['seconds']:7.1f}")
        if "epsilon" in h:
            row += f"  {h['epsilon']:7.3f}" if math.isfinite(h["epsilon"]) else "      inf"
        lines.append(row)
    lines.append("")
    final = f"final test accuracy {pct(summary['test_accuracy']).strip()}% after {summary['seconds']:.1f} s"
    if "epsilon" in summary:
        eps = summary["epsilon"]
        final += (f", epsilon {eps:.3f} at delta {summary['delta']:g}" if eps is not None
                  else ", no privacy guarantee (DP-SGD without noise)")
    lines.append(final)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    profile = get_profile()
    if args.model is None:
        raise UserError(f"--model is required; choose one of {', '.join(MODEL_NAMES)}")
    if args.data is None:
        raise UserError("--data is required, for example --data fashion-mnist")
    model_name = args.model.strip().lower()
    if model_name not in MODEL_NAMES:
        raise UserError(f"unknown model {args.model!r}; choose one of {', '.join(MODEL_NAMES)}")
    epochs = profile.epochs if args.epochs is None else integer(args.epochs, "--epochs", 1, MAX_EPOCHS)
    seed = integer(args.seed, "--seed", 0, SEED_MAX)
    batch_size = integer(args.batch_size, "--batch-size", 1)
    lr = _positive_float(args.lr, "--lr")
    defense = parse_defense(args.defense, seed=seed)
    if args.json not in (None, "-"):
        check_output_path(args.json, "--json")  # before the training, not after it
    if str(args.data).lower().endswith(".npz"):
        raise UserError(f"--data {args.data}: an .npz holds one set of images, so the model would be tested on the "
                        "images it trained on (a test accuracy of 100% that says nothing); train on fashion-mnist, "
                        "mnist, cifar10 or cifar100, which have a held-out test split")

    train_full = load_data(args.data, "train")
    test_data = load_data(args.data, "test")
    train_data = train_full.subset(profile.train_subset)
    model = build_model(model_name, train_data.input_shape, train_data.num_classes, seed=seed)
    if args.precode:
        model = add_precode(model, seed=seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # as the attack and evaluate commands
    model.to(device)

    try:
        result = defense.train(model, train_data, test_data, epochs=epochs, lr=lr, batch_size=batch_size,
                               seed=seed, progress=True)
    except FloatingPointError as e:
        raise UserError(str(e)) from None

    is_dp = isinstance(defense, DPSGD)
    config: dict[str, Any] = {
        "command": "train",
        "model": model_name,
        "precode": bool(args.precode),
        "data": train_data.name,
        "data_source": train_data.source,
        "profile": profile.name,
        "train_subset": profile.train_subset,
        "train_images": len(train_data),
        "train_images_available": len(train_full),
        "train_images_note": (
            f"the {profile.name} profile's train_subset limits training to {len(train_data)} of the "
            f"{len(train_full)} training images (a random subset drawn with the seed)"
            if len(train_data) < len(train_full) else "all training images are used"
        ),
        "test_images": len(test_data),
        "epochs": epochs,
        "defense": defense.spec,
        "defense_name": defense.name,
        "defense_params": defense.params,
        "optimizer": "Adam" + (" (DP-SGD through Opacus: per-sample clipping, Gaussian noise, Poisson sampling)"
                               if is_dp else ""),
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "device": str(device),
    }
    history = []
    for h in result.history:
        entry = {k: h[k] for k in ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds")}
        if is_dp:
            entry["epsilon"] = _finite_or_none(h["epsilon"])
        history.append(entry)
    summary: dict[str, Any] = {"test_accuracy": result.test_accuracy, "seconds": result.seconds}
    if is_dp:
        config["delta"] = result.delta
        config["accountant"] = "Opacus RDP"
        summary["epsilon"] = _finite_or_none(result.epsilon)
        summary["delta"] = result.delta

    payload = {"config": config, "history": history, "summary": summary}
    if args.json != "-":
        table_history = [dict(h, epsilon=r.get("epsilon")) if is_dp else h for h, r in zip(history, result.history)]
        print(_table(config, table_history, summary))
        sys.stdout.flush()
    write_json(payload, args.json)
    return 0
