"""Seconds per chapter, cold and warm: the reader's wait and the rebuild's.

Each chapter is executed alone, one torch thread, by the same code path as ``make test``
(``scripts/chapters.py``: nbmake into the book's execution cache). *Cold*: the chapter is executed
with its cache entry, the experiment store (``results/experiments``) and the quick grids' folders
(``results/evaluation-quick-*``) removed first, so it computes everything itself; ``--keep-results``
keeps the last two (a chapter executed again after its code changed, or after the chapter it shares
experiments with). *Warm*: asked again with nothing changed, it is found in the cache and not
executed. Prints a table (Markdown) and, with ``--json PATH``, writes the numbers.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_book.py [--chapters 1 03] [--json out.json]

A cold run of every chapter takes as long as the book's chapters together (about 20 minutes
on a 2-core laptop CPU in the quick profile).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import chapters as book


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapters", nargs="*", help="chapter number prefixes (default: all)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--keep-results", action="store_true",
                        help="keep the experiment store and the quick grids' folders (default: remove them first)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    chosen = [p for p in book.chapters() if not args.chapters or any(p.name.startswith(c) for c in args.chapters)]
    rows = []
    results = Path(__file__).resolve().parents[1] / "results"
    for path in chosen:
        book.forget(path)
        if not args.keep_results:
            for folder in [results / "experiments", *results.glob("evaluation-quick-*")]:
                shutil.rmtree(folder, ignore_errors=True)
        result, cold = book.execute(path)
        if result.error is not None:
            print(f"{path.name} failed in cell {result.error.failing_cell_index}", file=sys.stderr)
            return 1
        start = time.perf_counter()
        assert book.is_current(path), f"{path.name} is not in the cache after executing it"
        warm = time.perf_counter() - start
        rows.append({"chapter": path.stem, "cold_seconds": round(cold, 1), "warm_seconds": round(warm, 2)})
        print(f"{path.stem}: cold {cold:.0f} s, warm {warm:.2f} s", file=sys.stderr)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    print("| chapter | cold (s) | warm (s) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['chapter']} | {r['cold_seconds']:.0f} | {r['warm_seconds']:.2f} |")
    print(f"| total | {sum(r['cold_seconds'] for r in rows):.0f} | {sum(r['warm_seconds'] for r in rows):.2f} |")
    print(f"\n{time.strftime('%Y-%m-%d')}, {machine}, profile {book.dependency_stamp()['profile']}, "
          f"Fashion-MNIST: {book.dependency_stamp()['fashion-mnist']}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "chapters": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
