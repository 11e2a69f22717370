"""What every command of the command line shares: :class:`UserError`, :class:`Interrupted`,
:func:`write_json`, and the checks of numbers and output paths that run before any work.

The command modules (``precode/cli/<command>.py``) import these from here, and
:mod:`precode.cli`, which dispatches to them, re-exports them, so imports flow one way:
``precode.cli`` -> ``precode.cli.<command>`` -> ``precode.cli.common``.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ..files import atomic_write

__all__ = ["UserError", "Interrupted", "format_or_na", "write_json", "integer", "check_output_path", "check_figure",
           "SEED_MAX", "MAX_ITERATIONS", "MAX_RESTARTS", "MAX_EPOCHS"]

SEED_MAX = 2**63 - 1
"""Seeds lie in ``0 .. 2**63 - 1`` (what ``torch.manual_seed`` and the seed streams take)."""
MAX_ITERATIONS = 100_000
"""The most attack iterations a command runs (the longest published runs: 24,000)."""
MAX_RESTARTS = 64
"""The most random restarts of an attack (each one holds every victim's images and their history)."""
MAX_EPOCHS = 10_000
"""The most training epochs a command runs."""


class UserError(Exception):
    """An error in what the user asked for; printed as one line, exit status 2."""


class Interrupted(BaseException):
    """A signal that ends a command (SIGTERM; Ctrl-C raises ``KeyboardInterrupt``): one line, exit status
    ``128 + signal``. Like ``KeyboardInterrupt`` it is not an ``Exception``, so no ``except Exception``
    on the way catches it, and the ``finally`` blocks on the way (locks, temporary files) run."""

    def __init__(self, signum: int, hint: str = ""):
        super().__init__(signum, hint)
        self.signum, self.hint = int(signum), hint

    @property
    def status(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        name = "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name
        return f"interrupted by {name}" + (f"; {self.hint}" if self.hint else "")


def integer(text: Any, option: str, low: int, high: int | None = None) -> int:
    """``text`` as an integer in ``low .. high`` (``None``: unbounded), else a :class:`UserError` naming ``option``."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise UserError(f"{option} must be an integer, got {text!r}") from None
    if value < low:
        raise UserError(f"{option} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise UserError(f"{option} must be at most {high:,}, got {value}")
    return value


def check_integers(*bounds: tuple[str, Any, int, int | None]) -> None:
    """Every ``(option, value, low, high)`` whose value is given is an integer in ``low .. high`` (:func:`integer`)."""
    for option, value, low, high in bounds:
        if value is not None:
            integer(value, option, low, high)


def check_output_path(target: str, option: str) -> None:
    """That ``target`` can be written as a file (its folder exists and is writable), before any work."""
    path = Path(target)
    if path.is_dir():
        raise UserError(f"{option} {target} is a folder; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {option} {target}: there is no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"cannot write {option} {target}: permission denied")


def check_figure(target: str, option: str = "--figure") -> str:
    """:func:`check_output_path` and a format matplotlib writes (from the suffix; none: PNG, with the
    suffix added as matplotlib does); returns the path the figure will have."""
    from matplotlib.backend_bases import FigureCanvasBase

    check_output_path(target, option)
    suffix = Path(target).suffix.lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if not suffix:
        return f"{target}.png"
    if suffix not in formats:
        raise UserError(f"{option} {target}: matplotlib cannot write .{suffix} files; use one of "
                        f"{', '.join(sorted(formats))}")
    return target


def format_or_na(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec`` for a table, or ``n/a`` when it is ``None``."""
    return "n/a" if value is None else format(value, spec)


def write_json(payload: dict[str, Any], target: str | None) -> None:
    """Write ``payload`` as JSON to the path ``target``, or to stdout when ``target`` is ``-``."""
    if target is None:
        return
    text = json.dumps(payload, indent=2, allow_nan=False)
    if target == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    try:
        with atomic_write(target) as f:  # a kill leaves the old file or the whole new one
            f.write(text + "\n")
    except OSError as e:
        raise UserError(f"cannot write JSON to {target}: {e.strerror}") from None
