"""What a valid row of an evaluation's CSV files is, and reading them line by line.

A CSV file of a run (``summary.csv``, ``results.csv``, ``training.csv``) holds hours of results,
and a row that a kill cut short, a line of garbage or a number outside its range must never be
read back as a result. :func:`check_row` knows, per column, its type and range (:data:`COLUMNS`:
an SSIM lies in ``[-1, 1]``, a rate in ``[0, 1]``, a count is a non-negative integer ...);
:func:`read_rows` reads a file and reports every damaged line with its number instead of
guessing, and :func:`read_csv` is the strict reading that the chapters, the figures and the
command's table use: one damaged line is an error that names the file, the line and the fix.

How the run's folder repairs what is damaged (the damaged cells run again under ``--resume``):
:class:`~precode.evaluation.RunFolder`. Used by ``python -m precode evaluate`` and
chapters 7 and 8.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import InputError

__all__ = ["COLUMNS", "Damage", "check_row", "parse_value", "read_rows", "read_csv"]

_UNIT, _SSIM = (0.0, 1.0), (-1.0, 1.0)
_MEASURED_SSIM = (-1.0 - 1e-5, 1.0 + 1e-5)  # float32 rounding: an exact reconstruction's SSIM can read 1.0000001
_COUNT, _POSITIVE = (0, None), (1, None)
_NON_NEGATIVE = (0.0, None)

COLUMNS: dict[str, tuple[type, tuple[float | None, float | None] | tuple[str, ...], bool]] = {
    # the cell's key, in every file (training.csv: model, train_data, defense)
    "model": (str, (), True), "data": (str, (), True), "defense": (str, (), True), "attack": (str, (), True),
    "weights": (str, ("initial", "trained"), False), "train_data": (str, (), False),
    "labels": (str, ("given", "inferred"), True),
    # results.csv: one victim
    "victim": (int, _COUNT, True), "label": (int, _COUNT, False), "label_pred": (int, (None, None), False),
    "mse": (float, _NON_NEGATIVE, False), "psnr": (float, (None, None), False), "ssim": (float, _MEASURED_SSIM, False),
    "identified": (int, (0, 1), False), "success": (int, (0, 1), False), "status": (str, ("ok", "diverged"), False),
    "label_inferred": (int, (None, None), False), "evaluations": (int, _COUNT, False),
    "distance": (float, (None, None), False), "truth_distance": (float, (None, None), False),
    # summary.csv: one cell
    "n": (int, _POSITIVE, True), "threshold": (float, _SSIM, False), "attack_success_rate": (float, _UNIT, False),
    "success_ci95_low": (float, _UNIT, False), "success_ci95_high": (float, _UNIT, False),
    "identification_rate": (float, _UNIT, False), "pool": (int, _COUNT, False),
    "psnr_mean": (float, (None, None), False),
    "psnr_ci95": (float, _NON_NEGATIVE, False), "ssim_mean": (float, _MEASURED_SSIM, False),
    "ssim_ci95": (float, _NON_NEGATIVE, False), "ssim_median": (float, _MEASURED_SSIM, False),
    "label_accuracy": (float, _UNIT, False), "precode_sigma": (float, _NON_NEGATIVE, False),
    "test_accuracy": (float, _UNIT, False), "test_accuracy_ci95": (float, _NON_NEGATIVE, False),
    "train_images": (int, _POSITIVE, False), "epochs": (int, _COUNT, False), "test_images": (int, _POSITIVE, False),
    "epsilon": (float, _NON_NEGATIVE, False), "iterations": (int, _POSITIVE, False),
    "restarts": (int, _POSITIVE, False), "seed": (int, (0, 2**63 - 1), False), "seconds": (float, _NON_NEGATIVE, False),
    "diverged": (int, _COUNT, False),
    "labels_inferable": (float, _UNIT, False), "budget": (int, _COUNT, False),
    "distance_mean": (float, (None, None), False), "truth_distance_mean": (float, (None, None), False),
    "below_truth": (float, _UNIT, False), "training": (str, (), False), "release_images": (int, _POSITIVE, False),
    "clients": (int, _POSITIVE, False),
    # training.csv: one epoch
    "epoch": (int, _POSITIVE, True), "train_loss": (float, _NON_NEGATIVE, False),
    "train_accuracy": (float, _UNIT, False), "test_loss": (float, _NON_NEGATIVE, False),
}
"""Per column: its type, its range (``(low, high)``, ``None`` unbounded; for text the allowed
words, empty: any) and whether it must be filled. A column not listed here (a new one) is read as
text or a number without a check."""


class Damage(NamedTuple):
    """A damaged line of a CSV file (the file, its line number, 1-based, the header is line 1, and why),
    or a damaged file (``line`` is ``None``)."""

    path: Path
    line: int | None
    problem: str

    def __str__(self) -> str:
        return f"{self.path}{'' if self.line is None else f' line {self.line}'}: {self.problem}"


def parse_value(text: str) -> Any:
    """A cell's text as ``None`` (empty), ``int``, ``float`` or the text itself."""
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def check_row(row: dict[str, Any]) -> str | None:
    """What is wrong with a parsed row (``None``: nothing), by :data:`COLUMNS`."""
    for name, value in row.items():
        spec = COLUMNS.get(name)
        if spec is None:
            continue
        kind, allowed, required = spec
        if value is None:
            if required:
                return f"{name} is empty"
            continue
        if kind is str:
            if allowed and value not in allowed:
                return f"{name} is {value!r}, not one of {list(allowed)}"
            continue
        if isinstance(value, str) or (kind is int and not isinstance(value, int)):
            return f"{name} is {value!r}, not {'an integer' if kind is int else 'a number'}"
        if math.isnan(value):
            return f"{name} is not a number"
        low, high = allowed
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
            return f"{name} {value!r} lies outside {span}"
    return None


def read_rows(path: str | os.PathLike) -> tuple[list[str], list[tuple[int, list[str], dict[str, Any]]], list[Damage]]:
    """A CSV file of a run read line by line, the damaged lines set apart.

    Returns:
        ``(header, rows, damage)``: the header's column names (empty for a missing or empty file);
        per valid row its line number, its cells as text (kept verbatim for rewriting) and parsed;
        the damaged lines (:class:`Damage`: wrong number of cells, a value of the wrong type or out
        of its range, a line cut short, which a file that does not end with a newline may hold).
    """
    path = Path(path)
    if not path.exists():
        return [], [], []
    with open(path, newline="") as f:
        text = f.read().replace("\x00", "\ufffd")  # garbage: csv refuses NUL bytes
    # line by line (the package never writes a cell with a newline), so that a stray quote in a line
    # of garbage cannot swallow the lines after it
    lines = text.splitlines(True)
    if not lines:
        return [], [], []
    header, rows, damage = next(csv.reader([lines[0]])), [], []
    for number, line in enumerate(lines[1:], start=2):
        cells = next(csv.reader([line]), [])
        if not cells:
            continue  # a blank line
        if len(cells) != len(header):
            damage.append(Damage(path, number, f"{len(cells)} cells where the header has {len(header)}"))
            continue
        parsed = {k: parse_value(v) for k, v in zip(header, cells)}
        problem = check_row(parsed)
        if problem is not None:
            damage.append(Damage(path, number, problem))
        elif number == len(lines) and not line.endswith(("\n", "\r")):  # a longer row a kill may have cut short
            damage.append(Damage(path, number, "the file ends in this line without a newline: it may be cut off"))
        else:
            rows.append((number, cells, parsed))
    return header, rows, damage


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of one of the run's CSV files as dicts; numbers parsed, empty cells ``None``.

    Raises:
        InputError: a damaged line (:func:`read_rows`), named with its file and number; resuming
            the run (``--resume``) recomputes its cell.

    Used by :class:`~precode.evaluation.GridResults` (chapters 7 and 8) to read ``summary.csv``,
    ``results.csv`` and ``training.csv``, and by the figures.
    """
    _header, rows, damage = read_rows(path)
    if damage:
        more = f" (and {len(damage) - 1} more damaged lines)" if len(damage) > 1 else ""
        raise InputError(f"{damage[0]}{more}; run the evaluation again with --resume to recompute the damaged cells")
    return [parsed for _line, _cells, parsed in rows]
