"""The output folder of an evaluation: CSV files written cell by cell, so a run can be resumed.

``DIR/`` holds

* ``config.json``: the cells' threat model (:meth:`~precode.evaluation.grid.Grid.threat_model`, in
  words) and what the results depend on: the grid (:meth:`~precode.evaluation.grid.Grid.to_dict`),
  the package's version and a fingerprint of its code (:func:`precode.package_fingerprint`), and
  where each data split came from (the embedded Fashion-MNIST sample or the full data); ``--resume`` refuses a
  folder whose grid differs, and ``reuse`` (the chapters) reads a folder only when all of it is equal;
* ``training.csv``: one row per trained model and epoch (``model, train_data, defense, epoch,
  train_loss, train_accuracy, test_loss, test_accuracy, seconds, epsilon``), written when a
  model finishes training;
* ``results.csv``: one row per victim and cell (the victim's metrics);
* ``summary.csv``: one row per cell (:data:`~precode.evaluation.schema.SUMMARY_FIELDS`), written
  right after the cell's victims;
* ``reconstructions/MODEL__DATA__DEFENSE__ATTACK.pt``: the cell's reconstructions, ``(N, C, H, W)``
  in half precision, written before the cell's summary row (:func:`read_reconstructions`);
* ``figures/*.png``: drawn from the CSV files at the end.

A cell counts as finished when its summary row exists. Each cell's rows are appended and
flushed to disk in one go; on resuming, victim rows of a cell without a summary row (cut off
mid-write) are dropped and that cell runs again.

Used by ``python -m precode evaluate`` and chapter 7.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__, package_fingerprint
from ..errors import InputError
from .grid import Grid
from .schema import CELL_FIELDS, RESULT_FIELDS, SUMMARY_FIELDS, TRAINING_CSV_FIELDS

__all__ = [
    "RunFolder", "GridResults", "read_csv", "read_reconstructions", "RESULT_FIELDS", "TRAINING_CSV_FIELDS",
    "CELL_FIELDS",
]


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else ("inf" if value == math.inf else repr(value))
    return str(value)


def _parse(text: str) -> Any:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of one of the run's CSV files as dicts; numbers parsed, empty cells ``None``.

    Used by :class:`GridResults` (chapters 7 and 8) to read ``summary.csv``, ``results.csv`` and ``training.csv``.
    """
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _reconstructions_path(folder: Path, key: Sequence[str]) -> Path:
    if len(key) != len(CELL_FIELDS):
        raise InputError(f"a cell's key is {CELL_FIELDS}, got {tuple(key)!r}")
    return folder / "reconstructions" / _file_name(key)


def _file_name(parts: Sequence[Any]) -> str:
    """A ``.pt`` file name from a key's parts: each part's other characters become ``_``, parts joined by ``__``."""
    return "__".join(re.sub(r"[^A-Za-z0-9.-]+", "_", str(part)) for part in parts) + ".pt"


def read_reconstructions(out: str | os.PathLike, key: Sequence[str]) -> torch.Tensor:
    """The reconstructions of one finished cell of a run, ``(N, C, H, W)`` float32 in ``[0, 1]``.

    Args:
        out: the run's folder.
        key: the cell's ``(model, data, defense, attack, weights, labels)``, as in its CSV rows.

    Raises:
        FileNotFoundError: the folder holds no reconstructions for that cell (not run, or run by a
            version of the package that did not store them: run it again with ``--overwrite``).

    Used by :meth:`GridResults.cell` (chapter 8 shows the reconstructions of the grid's cells).
    """
    path = _reconstructions_path(Path(out), key)
    if not path.exists():
        raise FileNotFoundError(f"no reconstructions of cell {tuple(key)} in {out} ({path.name} is missing); "
                                "run the evaluation of that cell first, or again with --overwrite")
    return torch.load(path, weights_only=True).float()


class GridResults:
    """A finished run read once: its summary, its victims' rows and its reconstructions, by cell.

    What chapters 7 and 8 read (after :func:`precode.evaluation.chapter_results`).

    Args:
        out: the run's folder.
        data: ``{model: data set}``, the data set each model's cells are read from (chapter 8: the MLP
            on Fashion-MNIST, the CNN on colour images); a model not in it: its first data set in the
            summary (the full grid has several per model).

    Attributes:
        summary, results, training: the rows of ``summary.csv``, ``results.csv`` and ``training.csv``.
    """

    def __init__(self, out: str | os.PathLike, data: dict[str, str] | None = None) -> None:
        self.folder = Path(out)
        self.summary, self.results, self.training = (read_csv(self.folder / f"{name}.csv")
                                                     for name in ("summary", "results", "training"))
        if not self.summary:
            raise InputError(f"{self.folder} holds no summary.csv with cells; run the evaluation first "
                             "(python -m precode evaluate --out DIR)")
        self.data = dict(data or {})

    def _data(self, model: str) -> str:
        if model in self.data:
            return self.data[model]
        found = [r["data"] for r in self.summary if r["model"] == model]
        if not found:
            raise InputError(f"no cell of model {model!r} in {self.folder}; its models: "
                             f"{sorted({r['model'] for r in self.summary})}")
        return found[0]

    def row(self, model: str, defense: str, attack: str, weights: str = "initial",
            labels: str | None = None) -> dict[str, Any]:
        """The summary row of the cell ``(model, the model's data set, defense, attack, weights, labels)``
        (``weights``: ``initial``, the untrained model, or ``trained``; ``labels``: ``given`` or
        ``inferred``, default: ``given`` where the run has it, else the only one it has).

        Raises:
            ValueError: no such cell in the run (the message names the cells it has for that model).
        """
        data = self._data(model)
        found = {r["labels"]: r for r in self.summary
                 if (r["model"], r["data"], r["defense"], r["attack"], r["weights"]) == (model, data, defense, attack,
                                                                                         weights)}
        if labels is None and found:
            labels = "given" if "given" in found else next(iter(found))
        if labels in found:
            return found[labels]
        have = sorted({(r["defense"], r["attack"], r["weights"], r["labels"]) for r in self.summary
                       if r["model"] == model})
        raise InputError(f"no cell {(model, data, defense, attack, weights, labels)} in {self.folder}; for {model!r} "
                         f"it has (defense, attack, weights, labels) {have}")

    def history(self, model: str, defense: str) -> list[dict[str, Any]]:
        """The training of ``model`` under ``defense`` (on the setting's training data), one row of
        ``training.csv`` per epoch in order: what :func:`precode.plotting.training_curves` draws.

        Raises:
            ValueError: the run trained no such model (the message names those it trained).
        """
        data = self._data(model)
        train_data = next((r["train_data"] for r in self.summary if r["model"] == model and r["data"] == data), None)
        rows = sorted((r for r in self.training if r["model"] == model and r["defense"] == defense
                       and r["train_data"] == train_data), key=lambda r: r["epoch"])
        if not rows:
            have = sorted({r["defense"] for r in self.training if r["model"] == model})
            raise InputError(f"{self.folder} holds no training of {model!r} under {defense!r}; it trained it under "
                             f"{have}")
        return rows

    def cell(self, model: str, defense: str, attack: str, weights: str = "initial",
             labels: str | None = None) -> dict[str, Any]:
        """One cell: ``row`` (its summary row), ``ssim`` and ``psnr`` per victim (arrays, in victim order)
        and ``images`` (its reconstructions, :func:`read_reconstructions`)."""
        row = self.row(model, defense, attack, weights, labels)
        key = (model, row["data"], defense, attack, weights, row["labels"])
        rows = sorted((r for r in self.results if tuple(r[k] for k in CELL_FIELDS) == key),
                      key=lambda r: r["victim"])
        return {"row": row, "ssim": np.array([r["ssim"] for r in rows], dtype=float),
                "psnr": np.array([r["psnr"] for r in rows], dtype=float),
                "images": read_reconstructions(self.folder, key)}


class RunFolder:
    """The output folder ``DIR`` of one evaluation.

    Args:
        out: the folder (created with its parents).
        grid: the grid being run.
        resume: keep the finished cells of an earlier run of the same grid.
        overwrite: delete the CSV files and figures of an earlier run first.
        reuse: keep the finished cells when the folder holds this very run (the same grid, package
            code and data: ``config.json`` equal), else start over; excludes ``resume`` and
            ``overwrite``. :attr:`reused` says which happened.
        data: where each data split came from (``{"NAME SPLIT": source}``), stored in ``config.json``.

    Raises:
        PermissionError / OSError: the folder cannot be created or written (the command turns this
            into one line).
        ValueError: the folder holds another run and neither ``resume`` nor ``overwrite`` is set,
            or ``resume`` is set and the stored grid differs.
    """

    def __init__(self, out: str | os.PathLike, grid: Grid, resume: bool = False, overwrite: bool = False,
                 reuse: bool = False, data: dict[str, str] | None = None):
        if reuse and (resume or overwrite):
            raise InputError("reuse decides by itself whether to resume or start over; pass it alone")
        self.path = Path(out)
        self.grid = grid
        self.summary_fields = SUMMARY_FIELDS
        self.path.mkdir(parents=True, exist_ok=True)
        probe = self.path / ".write-test"
        with open(probe, "w") as f:  # fails now, not after the first cell, when DIR is read-only
            f.write("ok\n")
        probe.unlink()
        (self.path / "figures").mkdir(exist_ok=True)

        config = {"grid": grid.to_dict(), "version": __version__, "code": package_fingerprint(),
                  "data": dict(sorted((data or {}).items())),
                  "threat_model": str(grid.threat_model(defense="the cell's"))}
        stored = self._read_config()
        self.reused = bool(reuse and stored == config)
        if reuse:
            resume, overwrite = self.reused, not self.reused
        has_results = any((self.path / n).exists() for n in ("summary.csv", "results.csv", "training.csv"))
        if resume and stored is not None:
            if stored.get("grid") != config["grid"]:
                changed = sorted(k for k in config["grid"] if stored.get("grid", {}).get(k) != config["grid"][k])
                raise InputError(
                    f"{self.path} holds an evaluation of a different grid (differs in {', '.join(changed)}); "
                    "resume it with the same options, or choose another --out"
                )
        elif has_results and not overwrite and not resume:
            raise InputError(
                f"{self.path} already holds evaluation results; pass --resume to finish that run, "
                "--overwrite to replace it, or choose another --out"
            )
        elif not resume or stored is None:
            for name in ("summary.csv", "results.csv", "training.csv"):
                (self.path / name).unlink(missing_ok=True)
            for png in (self.path / "figures").glob("*.png"):
                png.unlink()
            for old in [*(self.path / "reconstructions").glob("*.pt"), *(self.path / "weights").glob("*.pt")]:
                old.unlink()
        with open(self.path / "config.json", "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        self._drop_unfinished()

    # -- reading ------------------------------------------------------------------------------
    @staticmethod
    def stored_config(path: str | os.PathLike) -> dict[str, Any] | None:
        """The ``config.json`` of the run in ``path`` (``None``: no readable one)."""
        try:
            with open(Path(path) / "config.json") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _read_config(self) -> dict[str, Any] | None:
        return self.stored_config(self.path)

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.csv"

    @property
    def results_path(self) -> Path:
        return self.path / "results.csv"

    @property
    def training_path(self) -> Path:
        return self.path / "training.csv"

    @staticmethod
    def finished_in(path: str | os.PathLike) -> set[tuple]:
        """Keys ``(model, data, defense, attack, weights, labels)`` of the cells with a summary row in ``path``."""
        return {tuple(str(r[k]) for k in CELL_FIELDS) for r in read_csv(Path(path) / "summary.csv")}

    def finished_cells(self) -> set[tuple]:
        """Keys ``(model, data, defense, attack, weights, labels)`` of the cells with a summary row."""
        return self.finished_in(self.path)

    def _weights_path(self, model: str, train_data: str, defense: str) -> Path:
        return self.path / "weights" / _file_name((model, train_data, defense))

    def weights(self, model: str, train_data: str, defense: str) -> dict[str, torch.Tensor] | None:
        """The stored weights of a trained model (``None``: not stored), loaded with ``weights_only=True``."""
        path = self._weights_path(model, train_data, defense)
        return torch.load(path, weights_only=True) if path.exists() else None

    def add_weights(self, model: str, train_data: str, defense: str, state: dict[str, torch.Tensor]) -> None:
        """Store a trained model's weights (its ``state_dict``), for the cells that attack it."""
        path = self._weights_path(model, train_data, defense)
        path.parent.mkdir(exist_ok=True)
        torch.save(state, path)

    def training(self, model: str, train_data: str, defense: str) -> list[dict[str, Any]]:
        """The stored training history of a model under a defense (empty when not trained yet)."""
        return [r for r in read_csv(self.training_path)
                if (str(r["model"]), str(r["train_data"]), str(r["defense"])) == (model, train_data, defense)]

    def _drop_unfinished(self) -> None:
        """Remove victim rows of cells that have no summary row (a run cut off mid-cell)."""
        rows = read_csv(self.results_path)
        if not rows:
            return
        done = self.finished_cells()
        keep = [r for r in rows if tuple(str(r[k]) for k in CELL_FIELDS) in done]
        if len(keep) != len(rows):
            self._write(self.results_path, RESULT_FIELDS, keep, mode="w")

    # -- writing ------------------------------------------------------------------------------
    def _write(self, path: Path, fields: Sequence[str], rows: Iterable[dict[str, Any]], mode: str = "a") -> None:
        new = mode == "w" or not path.exists() or path.stat().st_size == 0
        with open(path, mode, newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(fields)
            writer.writerows([[_cell_text(row.get(k)) for k in fields] for row in rows])
            f.flush()
            os.fsync(f.fileno())

    def add_training(self, rows: list[dict[str, Any]]) -> None:
        """Append a trained model's history (one row per epoch)."""
        self._write(self.training_path, TRAINING_CSV_FIELDS, rows)

    def add_cell(self, results: list[dict[str, Any]], summary: dict[str, Any],
                 reconstructions: torch.Tensor | None = None) -> None:
        """Append a finished cell: its reconstructions and victims' rows, then its summary row (the
        'finished' mark)."""
        if reconstructions is not None:
            path = _reconstructions_path(self.path, [summary[k] for k in CELL_FIELDS])
            path.parent.mkdir(exist_ok=True)
            torch.save(reconstructions.detach().to("cpu", torch.float16).contiguous(), path)
        self._write(self.results_path, RESULT_FIELDS, results)
        self._write(self.summary_path, self.summary_fields, [summary])
