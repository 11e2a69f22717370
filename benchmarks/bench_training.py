"""Benchmark: what one training step of a client costs, part by part.

For the 1024-wide MLP and the CNN (Fashion-MNIST-sized random images, batches of 64), prints the
milliseconds of one step:

* the forward and backward pass alone;
* the whole step with torch's default Adam and with its fused Adam (:func:`precode.training.adam`,
  what the package trains with where torch has it);
* each gradient defense of chapters 4 and 5 applied to the batch's gradient (what a defended step adds).

Usage::

    .venv/bin/python benchmarks/bench_training.py [--steps 30] [--threads 1]

About a minute on a 2-core laptop CPU. The chapters' training cells (chapters 4, 6 and 8) are
made of such steps; the README quotes the numbers.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from precode import build_model
from precode.defenses import parse_defense

DEFENSES = ("gaussian:0.01", "laplacian:0.01", "prune:0.9")


def _ms(fn, steps: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return 1000 * (time.perf_counter() - start) / steps


def bench(name: str, steps: int) -> dict[str, float]:
    model = build_model(name, (1, 28, 28), 10, seed=0)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))

    def backward():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    row = {"forward + backward": _ms(backward, steps)}
    for label, fused in (("step, default Adam", False), ("step, fused Adam", True)):
        try:
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
        except RuntimeError:  # no fused Adam in this torch
            continue

        def step(optimizer=optimizer):
            backward()
            optimizer.step()

        row[label] = _ms(step, steps)
    backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for spec in DEFENSES:
        transform = parse_defense(spec, seed=0)
        row[f"+ {spec}"] = _ms(lambda transform=transform: transform(grads), steps)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {name: bench(name, args.steps) for name in ("mlp", "cnn")}
    parts = list(dict.fromkeys(k for r in rows.values() for k in r))
    print(f"ms per training step, batches of 64, torch {torch.__version__}, {args.threads} thread(s)")
    print(f"{'':24s}" + "".join(f"{name:>10s}" for name in rows))
    for part in parts:
        print(f"{part:24s}" + "".join(f"{r.get(part, float('nan')):10.1f}" for r in rows.values()))


if __name__ == "__main__":
    main()
