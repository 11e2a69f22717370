"""Every chapter of the book, executed by nbmake, as one test each.

A chapter passes when every cell runs, its hidden checks included. Passing chapters are stored in
the book's execution cache (``scripts/chapters.py``), so ``make book`` after ``make test`` (or a
second ``make test``) executes nothing that has not changed; a current chapter's test passes from
the cache and says so. ``PRECODE_FORCE_CHAPTERS=1`` executes every chapter regardless.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import chapters as book

CHAPTERS = book.chapters()


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_executes(path, capsys):
    force = os.environ.get("PRECODE_FORCE_CHAPTERS", "") not in ("", "0")
    if not force and book.is_current(path):
        with capsys.disabled():
            print(f"\n{path.name}: current in the cache, not executed again", end="")
        return
    result, seconds = book.execute(path)
    if result.error is not None:
        pytest.fail(f"{path.name} failed in cell {result.error.failing_cell_index}:\n{result.error.trace}",
                    pytrace=False)
    with capsys.disabled():
        print(f"\n{path.name}: executed in {seconds:.0f} s", end="")
