"""``python -m precode evaluate``: the paper's experiment grid, resumable, with honest statistics.

::

    python -m precode evaluate --profile {quick,full} --out DIR [--resume | --overwrite]
        [--part {all,paper,adaptive}] [--threshold T] [--seed S]
        [--models M,..] [--defenses D,..] [--attacks A,..] [--victims N] [--iterations K]
        [--epochs E] [--train-images N] [--test-images N] [--pool P]

Runs every cell of the profile's grid (:mod:`precode.evaluation.grid`): models {MLP, CNN} x
defenses {none, Gaussian and Laplacian noise 1e-3, 1e-2, 1e-1, pruning 0.5, 0.9, 0.99, DP-SGD
(clip 1, noise 1), PRECODE (K 256, beta 1e-3)} x attacks {Inverting Gradients, iDLG, analytic
where it applies}, each over the first N test images as victims (one per client), on the
untrained model; and trains each model under each defense for its test accuracy. The MLP without
a defense and with PRECODE is attacked again (Inverting Gradients) at the weights that training
reached: the ``trained`` rows (only where the trained model takes the victims). Beyond the
paper (chapter 8) it adds PRECODE placed early (``precode@block2``, the CNN) and PRECODE with
partial noise (``precode+partial-gaussian:S``), and the attacks that know PRECODE (``ig-omit``,
``ig-joint``, run only where the model has a bottleneck). ``--part paper`` runs only the paper's
rows (chapter 7), ``--part adaptive`` only no defense, PRECODE and its variants against ``ig``,
``analytic``, ``ig-omit`` and ``ig-joint`` (chapter 8). Writes

* ``DIR/results.csv``: a row per victim and cell (``mse, psnr, ssim, identified, success`` ...);
* ``DIR/summary.csv``: a row per cell (``model, data, defense, attack, weights, n,
  attack_success_rate`` with its Wilson 95% interval, ``identification_rate, psnr_mean, psnr_ci95,
  ssim_mean, ssim_ci95, label_accuracy, precode_sigma, test_accuracy, seconds`` and what the
  accuracy was measured on);
* ``DIR/weights/*.pt``: the trained models the ``trained`` rows attack (``torch.load(...,
  weights_only=True)``);
* ``DIR/training.csv``: test accuracy per epoch of every trained model (convergence);
* ``DIR/config.json`` and ``DIR/figures/*.png``.

Attack success: a victim's reconstruction has SSIM >= ``--threshold`` (default 0.5). The
identification rate needs no threshold. A cell is the same computation as
``python -m precode attack`` with the same seed, so its numbers agree.

``--resume`` skips cells (and trained models) already in DIR, so an interrupted run finishes
without recomputing them; without it, a DIR that holds results is refused unless
``--overwrite`` is given. DIR must be new, empty or a folder this command wrote (its
``.precode-evaluation`` file lists the files it wrote: nothing else is ever deleted); one run at a
time (its ``.lock`` names the holder); a damaged row or file is reported and its cell run again
under ``--resume``. Ctrl-C or SIGTERM ends the run with one line (exit status 130 or 143), its
finished cells kept. The restricting options make a smaller grid (tests, quick looks).
On the CPU the run uses one thread unless ``OMP_NUM_THREADS`` is set, as ``precode attack`` does.
The command behind chapter 7 (``book/07_evaluation.ipynb``).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..evaluation import get_grid, read_csv, run_evaluation
from .common import MAX_EPOCHS, MAX_ITERATIONS, SEED_MAX, Interrupted, UserError, integer

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="run the paper's grid of models x defenses x attacks; write CSV files and figures",
        description=(
            "Run the PRECODE paper's experiment grid (models x defenses x attacks, each over N victims) "
            "and write results.csv, summary.csv, training.csv and figures/ into --out."
        ),
    )
    # Values are checked in run(), so that every mistake is reported as one line.
    p.add_argument("--profile", help="quick (a 2-core CPU, minutes) or full (the paper's scale, a GPU); "
                                     "default: $PRECODE_PROFILE, else quick")
    p.add_argument("--out", metavar="DIR", help="output folder (created)")
    p.add_argument("--resume", action="store_true", help="keep the finished cells in DIR and run the rest")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in DIR")
    p.add_argument("--threshold", default="0.5", metavar="T",
                   help="attack success: SSIM of the reconstruction >= T (default 0.5)")
    p.add_argument("--seed", default="0", metavar="S", help="seeds every model, defense, attack and subset (default 0)")
    p.add_argument("--labels", metavar="{given,inferred}",
                   help="the threat model's labels: given to the attacker (the paper's evaluation, the attacker's "
                        "best case; the profile's default) or inferred from the gradient")
    p.add_argument("--part", default="all", metavar="PART",
                   help="all (default), paper (the paper's defenses and attacks, chapter 7) or adaptive "
                        "(PRECODE and its variants against the attacks that know it, chapter 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("restricting the grid (tests and quick looks)")
    g.add_argument("--models", metavar="M,..", help="only these models (mlp, cnn)")
    g.add_argument("--defenses", metavar="D,..",
                   help="only these defenses, e.g. none,precode,prune:0.9,dp:clip=1.0,noise=1.0,"
                        "precode@block2,precode+partial-gaussian:0.01")
    g.add_argument("--attacks", metavar="A,..", help="only these attacks (ig, idlg, analytic, ig-omit, ig-joint)")
    g.add_argument("--victims", metavar="N", help="victims per cell (default: the profile's)")
    g.add_argument("--iterations", metavar="K", help="iterations of Inverting Gradients and of iDLG")
    g.add_argument("--epochs", metavar="E", help="training epochs")
    g.add_argument("--train-images", metavar="N", help="training images per model")
    g.add_argument("--test-images", metavar="N", help="test images for the test accuracy")
    g.add_argument("--pool", metavar="P", help="further real images searched by the identification rate")
    return p


def _list(text: str) -> list[str]:
    """Comma-separated names; ``dp:clip=C,noise=Z`` keeps its comma (or separate with ';')."""
    sep = ";" if ";" in text else ","
    out: list[str] = []
    for part in (p.strip() for p in text.split(sep)):
        if not part:
            continue
        if out and sep == "," and part.split("=")[0].strip().lower() in ("clip", "noise"):
            out[-1] += "," + part
        else:
            out.append(part)
    return out


def _check_writable(out: str) -> None:
    """``--out`` names a folder that can be made or written, checked without making anything (a
    mistake found later, before any work, leaves no folder behind)."""
    if out == "":
        raise UserError("--out is empty, which names the current folder; name a folder for the run's files")
    path = Path(out).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot write to --out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to --out {out}: {existing} is not writable")


def build_grid(args: argparse.Namespace):
    """The grid the options ask for: the profile's, restricted and rescaled."""
    try:
        grid = get_grid(args.profile)
    except ValueError as e:
        raise UserError(str(e).replace("unknown profile", "unknown --profile")) from None
    try:
        grid = grid.part(args.part)
    except ValueError as e:
        raise UserError(str(e).replace("unknown part", "unknown --part")) from None
    try:
        threshold = float(args.threshold)
    except ValueError:
        raise UserError(f"--threshold must be a number, got {args.threshold!r}") from None
    if not -1 <= threshold <= 1:
        raise UserError(f"--threshold must lie in [-1, 1] (an SSIM), got {threshold}")
    changes: dict[str, Any] = {"threshold": threshold, "seed": integer(args.seed, "--seed", 0, SEED_MAX)}
    if args.labels is not None:
        labels = str(args.labels).strip().lower()
        if labels not in ("given", "inferred"):
            raise UserError(f"--labels must be 'given' or 'inferred', got {args.labels!r}")
        changes["labels"] = labels
    if args.victims is not None:  # and at most what the test split holds (checked when it is loaded, before work)
        changes["victims"] = integer(args.victims, "--victims", 1)
    if args.iterations is not None:
        changes["ig_iterations"] = changes["dlg_iterations"] = integer(args.iterations, "--iterations", 1,
                                                                       MAX_ITERATIONS)
    if args.epochs is not None:
        changes["epochs"] = integer(args.epochs, "--epochs", 1, MAX_EPOCHS)
    if args.train_images is not None:
        changes["train_images"] = integer(args.train_images, "--train-images", 1)
    if args.test_images is not None:
        changes["test_images"] = integer(args.test_images, "--test-images", 1)
    if args.pool is not None:
        changes["pool"] = integer(args.pool, "--pool", 0)
    restricted = (any(v is not None for v in (args.models, args.defenses, args.attacks))
                  or len(set(changes) - {"threshold", "seed", "labels"}) > 0)
    try:
        grid = grid.restrict(
            models=None if args.models is None else _list(args.models),
            defenses=None if args.defenses is None else _list(args.defenses),
            attacks=None if args.attacks is None else _list(args.attacks),
        ).replace(**changes)
    except ValueError as e:
        raise UserError(str(e)) from None
    if restricted:
        grid = grid.replace(name=f"{grid.name} (restricted)")
    if not grid.cells():
        raise UserError("the restricted grid has no cells (the analytic attack applies to the MLP only; "
                        "ig-omit and ig-joint need a PRECODE defense; precode@block2 the CNN)")
    return grid


def _table(summary: list[dict[str, Any]]) -> str:
    def pct(v):
        return "     -" if v is None else f"{100 * v:5.1f}%"

    def below(v):
        return "     -" if v is None else f"{100 * v:5.0f}%"

    lines = [f"{'model':5s} {'data':14s} {'defense':30s} {'attack':8s} {'weights':8s} {'labels':8s} {'n':>4s} "
             f"{'success':>8s} {'ident.':>7s} {'SSIM mean ± CI':>15s} {'PSNR':>6s} {'evals':>6s} {'<=truth':>7s} "
             f"{'test acc':>8s} {'seconds':>7s}"]
    for r in summary:
        if r["ssim_mean"] is None:  # every victim diverged: no score
            scores = f"{'diverged':>15s} {'-':>6s}"
        else:
            scores = f"{r['ssim_mean']:7.3f} ± {r['ssim_ci95']:5.3f} {r['psnr_mean']:6.1f}"
        lines.append(
            f"{r['model']:5s} {r['data']:14s} {r['defense']:30s} {r['attack']:8s} {r['weights']:8s} {r['labels']:8s} "
            f"{r['n']:4d} {pct(r['attack_success_rate']):>8s} {pct(r['identification_rate']):>7s} "
            f"{scores} {r['evaluations']:6d} {below(r['below_truth']):>7s} {pct(r['test_accuracy']):>8s} "
            f"{r['seconds']:7.1f}"
            + (f"  ({r['diverged']} diverged)" if r.get("diverged") else "")
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.out is None:
        raise UserError("--out DIR is required: the folder for results.csv, summary.csv and figures/")
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    grid = build_grid(args)
    _check_writable(args.out)

    import matplotlib

    matplotlib.use("Agg")

    start = time.perf_counter()
    progress = not args.no_progress

    def header() -> None:  # once the input is checked
        if progress:
            print(f"grid {grid.name!r}: {len(grid.cells())} cells, {grid.victims} victims each; "
                  f"success: SSIM >= {grid.threshold:g}", file=sys.stderr)
            for note in grid.notes:
                print(f"note: {note}", file=sys.stderr)
            print(grid.threat_model(defense="each cell's"), file=sys.stderr)
            print(grid.training(), file=sys.stderr)

    try:
        out = run_evaluation(grid, args.out, resume=args.resume, overwrite=args.overwrite, progress=progress,
                             on_start=header)
    except (KeyboardInterrupt, Interrupted) as e:  # the finished cells are on disk, whole (precode.evaluation.store)
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        raise Interrupted(signum, f"the finished cells stay in {args.out}; finish the run with --resume") from None
    summary = read_csv(out / "summary.csv")
    print(_table(summary))
    print(f"\n{len(summary)} cells in {out} (results.csv, summary.csv, training.csv, figures/); "
          f"{time.perf_counter() - start:.0f} s")
    return 0
