"""Benchmark: DLG and iDLG's batched L-BFGS, calls of the matching loss against the budget.

Every victim of a batched DLG/iDLG run spends the same evaluation budget (``dlg_budget``); the
run's time is the number of batched *calls* of the matching loss (each serves all victims). This
prints, for iDLG (labels given) on 32 untrained victims of the MLP, the PRECODE MLP and LeNet at
the quick grid's 8 iterations (a budget of 200 evaluations), and DLG (labels optimised) on LeNet:

* the batched calls, the most evaluations any victim spent (the budget), seconds, and the mean
  SSIM of the reconstructions.

Usage::

    .venv/bin/python benchmarks/bench_lbfgs.py [--victims 32] [--iterations 8] [--threads 1]

Run it against two checkouts (``PYTHONPATH=...``) to compare implementations of
``precode.attacks.lbfgs``. About a minute on a 2-core laptop CPU.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from precode import add_precode, attacks, build_model, compute_victim_gradients, load_data, metrics


def counted_calls():
    """Wrap the L-BFGS that DLG uses so that it counts the calls of its loss; returns the counter."""
    dlg_module = sys.modules["precode.attacks.dlg"]
    original = dlg_module.batched_lbfgs
    calls = [0]

    def wrapped(evaluate, x0, *args, **kwargs):
        def counting(x):
            calls[0] += 1
            return evaluate(x)
        return original(counting, x0, *args, **kwargs)

    dlg_module.batched_lbfgs = wrapped
    return calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--victims", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=8, help="L-BFGS iterations (25 evaluations each)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_data("fashion-mnist", "test").first(args.victims)
    calls = counted_calls()
    cases = [("idlg", "mlp", False), ("idlg", "mlp", True), ("idlg", "lenet", False), ("dlg", "lenet", False)]
    print(f"{'attack':6} {'model':12} {'calls':>6} {'budget':>6} {'seconds':>8} {'SSIM':>6}")
    for attack, name, precode in cases:
        model = build_model(name, data.input_shape, data.num_classes, seed=0)
        if precode:
            model = add_precode(model, input_shape=data.input_shape, seed=0)
        shared = compute_victim_gradients(model, data.images, data.labels)
        labels = data.labels if attack == "idlg" else None
        calls[0] = 0
        start = time.perf_counter()
        result = attacks.reconstruct(attack, model, shared, input_shape=data.input_shape, labels=labels,
                                     iterations=args.iterations, seed=0, progress=False)
        seconds = time.perf_counter() - start
        ssim = float(metrics.ssim(result.reconstructions.clamp(0, 1), data.images).mean())
        title = name + (" +PRECODE" if precode else "")
        print(f"{attack:6} {title:12} {calls[0]:6d} {result.evaluations:6d} {seconds:8.1f} {ssim:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
