import os
import types

import pytest
import torch

# Tests run on the CPU with few threads, whatever the machine.
torch.set_num_threads(min(2, torch.get_num_threads()))
os.environ.setdefault("PRECODE_PROFILE", "quick")


# The chapters are the longest tests by far (minutes each, against seconds). `make test` runs
# pytest-xdist's worksteal on two workers, which hands the first worker the first half of the
# collected tests and the second worker the rest, then lets an idle worker steal from the other's
# tail. So the chapters are split between the two halves, longest first, each to the half with
# less so far, and each half starts with its chapters (a chapter cannot be stolen once started).
# A chapter that repeats experiments of another (FOLLOWS) runs after it in the same half, in one run
# of the chapters of its chain, so that it reads them from the experiment store
# (precode.experiment_store) instead of computing them.
# Scheduling hints only (seconds of a cold `make test` from a fresh clone on this project's 2-core CPU,
# 2026-12-07, a slow hour (benchmarks/probe.py: 21 ms a step): two chapters at a time, each follower after the
# chapter it follows); a wrong hint costs time, never a result.
CHAPTER_SECONDS = {"01": 35, "02": 300, "03": 169, "04": 164, "05": 239, "06": 380, "07": 520, "08": 390, "09": 130,
                   "10": 250}
# Chapters 3 and 6 attack models as chapter 2 does (3: its full-budget runs on the MLP and LeNet; 6: the
# untrained MLP and CNN); chapter 5 reads chapter 4's attacks on the defended gradients; chapter 8's grid
# shares cells with chapter 7's, and chapter 9 attacks chapter 8's models.
FOLLOWS = {"03": "02", "05": "04", "06": "02", "08": "07", "09": "08"}


def _first(chapter: str) -> str:
    """The chapter that starts ``chapter``'s chain of FOLLOWS (9 follows 8, which follows 7: 7)."""
    while chapter in FOLLOWS:
        chapter = FOLLOWS[chapter]
    return chapter


def _chapter(item) -> str:
    return item.callspec.id[:2]


def pytest_collection_modifyitems(session, config, items):
    chapters = [i for i in items if i.path.name == "test_chapters.py"]
    others = [i for i in items if i.path.name != "test_chapters.py"]
    if len(others) < len(chapters):  # the chapters (nearly) alone, as in `make chapters`: keep the order
        return
    units: dict[str, list] = {}  # a chapter and those that follow it, in book order
    for item in sorted(chapters, key=_chapter):  # in book order, so each chain runs in its order
        units.setdefault(_first(_chapter(item)), []).append(item)

    def cost(unit):
        return sum(CHAPTER_SECONDS.get(_chapter(i), 300) for i in unit)

    halves: tuple[list, list] = ([], [])
    for unit in sorted(units.values(), key=cost, reverse=True):
        min(halves, key=cost).extend(unit)
    first = others[: max(0, len(items) // 2 - len(halves[0]))]
    items[:] = halves[0] + first + halves[1] + others[len(first):]


@pytest.fixture
def one_thread():
    """One torch thread for the test (the attacks are many small operations), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cli(capsys, monkeypatch, one_thread):
    """``python -m precode ARGS`` in this process, in the quick profile: ``cli(*args)`` gives its exit
    status, stdout and stderr (``returncode``, ``stdout``, ``stderr``). Starting a Python with torch
    costs about 5 s; tests/test_cli_attack.py runs the entry point itself in subprocesses."""
    from precode.cli import main

    monkeypatch.setenv("PRECODE_PROFILE", "quick")

    def run(*args):
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's own errors
            code = e.code
        captured = capsys.readouterr()
        return types.SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)

    return run


@pytest.fixture
def sample():
    """The embedded Fashion-MNIST sample's test split (needs nothing installed)."""
    from precode.data import load_data

    return load_data("fashion-mnist-sample", "test")
