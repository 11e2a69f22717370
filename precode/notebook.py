"""Helpers for the book's chapters: one set-up call, glue that also works outside Jupyter Book.

Used in the setup cell of every chapter.
"""
from __future__ import annotations

import os
import random
import re
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import DataFallbackWarning
from .experiment_store import use_store
from .metrics import mean_ci95
from .plotting import use_book_style
from .profiles import Profile, get_profile

__all__ = ["setup_chapter", "results_folder", "glue", "glue_ci", "glue_key", "say", "PAGE_WIDTH"]

PAGE_WIDTH = 88
"""Columns of a printed line that the rendered page shows without scrolling sideways."""


def results_folder() -> Path:
    """Where the chapters keep their results: ``results/`` at the top of the repository when the
    chapter runs from ``book/`` (ignored by git), else ``results/`` next to the notebook (Colab)."""
    return (Path("..") if Path("../precode").is_dir() else Path(".")) / "results"


def setup_chapter(seed: int = 0, threads: int | None = None, store: bool = True) -> Profile:
    """Seed every random generator, fix the number of CPU threads, turn on the experiment store, print
    and return the profile.

    It also sets the book's figure style (:func:`precode.plotting.use_book_style`) and silences
    :class:`precode.data.DataFallbackWarning` (the chapters print their data's
    ``source``, which says in words when the embedded sample stands in for full Fashion-MNIST, where
    the warning would show machine paths on the page).

    Args:
        seed: seed for Python, NumPy and torch.
        threads: torch CPU threads (default: ``$PRECODE_THREADS``, else torch's default).
        store: keep every attack experiment in ``results/experiments`` (:mod:`precode.experiment_store`),
            so that one that this or another chapter ran before, with the very same configuration and
            package code, is read instead of computed again.
    """
    warnings.filterwarnings("ignore", category=DataFallbackWarning)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads is None and os.environ.get("PRECODE_THREADS"):
        threads = int(os.environ["PRECODE_THREADS"])
    if threads:
        torch.set_num_threads(threads)
    profile = get_profile()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    say(profile)  # wrapped at the page's width, as every line printed here
    say(f"torch {torch.__version__} on {device}, {torch.get_num_threads()} CPU threads, seed {seed}")
    if store:
        say(f"experiment store: {use_store(results_folder() / 'experiments').folder}")
    use_book_style()
    return profile


def say(*parts: Any, width: int = PAGE_WIDTH) -> None:
    """``print(*parts)``, wrapped at ``width`` columns with a hanging indent of two spaces, so that a
    long line reads on the page instead of scrolling sideways."""
    text = " ".join(str(p) for p in parts)
    print(textwrap.fill(text, width=width, subsequent_indent="  ", break_on_hyphens=False))


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` for the prose (myst-nb's ``glue``), so quoted numbers come from the run.

    Returns nothing, so a cell that ends with ``glue(...)`` shows no stray value in the rendered
    page. Outside Jupyter Book (for example in Colab without myst-nb) it does nothing.
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return
    _glue(name, value, display=display)


def glue_key(*parts: Any) -> str:
    """A glue name made of ``parts``: joined by spaces, every run of characters other than letters,
    digits and ``_`` becomes one underscore (``glue_key("rnd MLP", "ig-eot, 4x budget")`` ->
    ``"rnd_MLP_ig_eot_4x_budget"``)."""
    return re.sub(r"\W+", "_", " ".join(str(p) for p in parts))


def glue_ci(name: str, values: Sequence[float] | np.ndarray | torch.Tensor, digits: int = 2) -> tuple[float, float]:
    """Glue ``"mean ± half"`` of ``values`` (the 95% t interval, :func:`precode.metrics.mean_ci95`)
    under ``name``, with ``digits`` decimals, and return ``(mean, half)``."""
    mean, half = mean_ci95(values)
    glue(name, f"{mean:.{digits}f} ± {half:.{digits}f}")
    return mean, half
