"""The machine's speed this hour: a fixed probe to print beside every timing.

The project's 2-core CPU varies by up to a factor of two from hour to hour, so a chapter's or
``make test``'s seconds mean little without the speed they were taken at. The probe is always the
same work: 100 Inverting Gradients steps on 8 victims of the untrained 1024-wide MLP (the embedded
Fashion-MNIST sample, one torch thread, after 10 warm-up steps); it prints milliseconds per step,
the median of ``--repeats`` runs. On this project's machine it has measured from 10.5 ms (a fast
hour) to 23 ms (a slow one).

Usage::

    .venv/bin/python benchmarks/probe.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from precode import attacks, build_model, compute_victim_gradients, load_data


def probe(repeats: int = 3) -> float:
    """Milliseconds per Inverting Gradients step (8 MLP victims, one thread), median of ``repeats`` runs."""
    torch.set_num_threads(1)
    data = load_data("fashion-mnist-sample", "test").first(8)
    model = build_model("mlp", data.input_shape, data.num_classes, seed=0)
    shared = compute_victim_gradients(model, data.images, data.labels)
    options = dict(input_shape=data.input_shape, labels=data.labels, restarts=1, seed=0, progress=False)
    attacks.reconstruct("ig", model, shared, iterations=10, **options)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        attacks.reconstruct("ig", model, shared, iterations=100, **options)
        times.append((time.perf_counter() - start) * 1000 / 100)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of 100 steps; the median is printed (default 3)")
    args = parser.parse_args(argv)
    print(f"probe: {probe(max(1, args.repeats)):.1f} ms per Inverting Gradients step (8 MLP victims, 1 thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
