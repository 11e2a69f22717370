"""Benchmark: Inverting Gradients on many victims at once versus one victim at a time.

For the 1024-wide MLP and DLG's LeNet (untrained, Fashion-MNIST test images, batch size 1),
attacks the first ``--alone`` victims one by one and the first ``--victims`` all together in
one batched optimisation, with the same seed and number of iterations, and prints:

* seconds per 1,000 iterations per victim, alone and batched, and the speed-up (victims per
  second batched / victims per second alone);
* mean SSIM of the reconstructions: of the victims attacked alone, of the same victims in the
  batched run (they should agree: batching changes nothing but rounding) and of all batched ones.

Usage::

    .venv/bin/python benchmarks/bench_attacks.py [--iterations 1000] [--victims 32] [--alone 4]
        [--threads 1] [--data fashion-mnist]

It runs with one CPU thread by default (see ``precode/cli/attack.py`` for why); the whole
benchmark takes about two minutes on a 2-core laptop CPU. Used for chapter 2's note on cost.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from precode import attacks, build_model, compute_victim_gradients, load_data, metrics


def bench(model_name: str, data, victims: int, alone: int, iterations: int, seed: int) -> dict:
    images, labels = data.images[:victims], data.labels[:victims]
    model = build_model(model_name, data.input_shape, data.num_classes, seed=seed)
    shared = compute_victim_gradients(model, images, labels)
    options = dict(input_shape=data.input_shape, iterations=iterations, restarts=1, seed=seed, progress=False)

    attacks.reconstruct("ig", model, {k: g[0] for k, g in shared.items()}, **{**options, "iterations": 5})  # warm-up
    start = time.perf_counter()
    single = [attacks.reconstruct("ig", model, {k: g[v] for k, g in shared.items()}, **options) for v in range(alone)]
    seconds_alone = (time.perf_counter() - start) / alone
    start = time.perf_counter()
    together = attacks.reconstruct("ig", model, shared, **options)
    seconds_batched = (time.perf_counter() - start) / victims

    recon_alone = torch.cat([r.reconstructions for r in single])
    ssim_alone = metrics.ssim(recon_alone, images[:alone])
    ssim_batched = metrics.ssim(together.reconstructions, images)
    per_1000 = 1000 / iterations
    return {
        "model": model_name,
        "alone_s": seconds_alone * per_1000,
        "batched_s": seconds_batched * per_1000,
        "speedup": seconds_alone / seconds_batched,
        "ssim_alone": float(ssim_alone.mean()),
        "ssim_batched_same": float(ssim_batched[:alone].mean()),
        "ssim_batched_all": float(ssim_batched.mean()),
        "max_pixel_difference": float((recon_alone - together.reconstructions[:alone]).abs().max()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=1000, help="IG iterations of every run (default 1000)")
    parser.add_argument("--victims", type=int, default=32, help="victims attacked together (default 32)")
    parser.add_argument("--alone", type=int, default=4, help="victims attacked one by one (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--data", default="fashion-mnist", help="victims' data set (default fashion-mnist)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="mlp,lenet", help="comma-separated models (default mlp,lenet)")
    args = parser.parse_args(argv)
    if not 1 <= args.alone <= args.victims:
        parser.error("need 1 <= --alone <= --victims")
    torch.set_num_threads(args.threads)
    data = load_data(args.data, "test").first(args.victims)
    print(f"IG on {args.data}: {args.victims} victims batched vs {args.alone} alone, {args.iterations} iterations, "
          f"batch size 1, {args.threads} thread(s), torch {torch.__version__}", flush=True)
    header = (f"{'model':<6} {'s/1k it/victim alone':>21} {'batched':>8} {'speed-up':>9} "
              f"{'SSIM alone':>11} {'same, batched':>14} {'all batched':>12} {'max |diff|':>11}")
    print(header)
    total = time.perf_counter()
    for name in args.models.split(","):
        r = bench(name.strip(), data, args.victims, args.alone, args.iterations, args.seed)
        print(f"{r['model']:<6} {r['alone_s']:>21.2f} {r['batched_s']:>8.3f} {r['speedup']:>8.1f}x "
              f"{r['ssim_alone']:>11.4f} {r['ssim_batched_same']:>14.4f} {r['ssim_batched_all']:>12.4f} "
              f"{r['max_pixel_difference']:>11.2g}", flush=True)
    print(f"total {time.perf_counter() - total:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
