"""The output folder of an evaluation, treated as a database: written so that no kill, damaged file or
second run loses a finished cell, and never touching a file it did not write.

``DIR/`` holds

* ``config.json``: the cells' threat model (:meth:`~precode.evaluation.Grid.threat_model`, in
  words) and what the results depend on: the grid (:meth:`~precode.evaluation.Grid.to_dict`),
  the package's version and a fingerprint of its code (:func:`precode.package_fingerprint`), and
  where each data split came from (the embedded Fashion-MNIST sample or the full data); ``--resume`` refuses a
  folder whose grid differs, and ``reuse`` (the chapters) reads a folder only when all of it is equal;
* ``training.csv``: one row per trained model and epoch (``model, train_data, defense, epoch,
  train_loss, train_accuracy, test_loss, test_accuracy, seconds, epsilon``), written when a
  model finishes training, and ``weights/MODEL__DATA__DEFENSE.pt``, its weights;
* ``results.csv``: one row per victim and cell (the victim's metrics, and ``status``: ``ok`` or
  ``diverged``, an attack whose objective overflowed for that victim);
* ``summary.csv``: one row per cell (:data:`~precode.evaluation.SUMMARY_FIELDS`), written
  right after the cell's victims;
* ``reconstructions/MODEL__DATA__DEFENSE__ATTACK__WEIGHTS.pt``: the cell's reconstructions, ``(N, C, H, W)``
  in half precision, written before the cell's summary row (:func:`read_reconstructions`);
* ``figures/*.png``: drawn from the CSV files at the end;
* ``.precode-evaluation`` (:data:`MARKER`): the mark of a folder this package made, listing every
  file it wrote there; ``.lock``: held while a run writes (``precode.files.FolderLock``).

How the folder stays whole:

* every file is written under a temporary name and renamed over its final one
  (``precode.files.atomic_write``): a kill leaves the old file or the new one, never half;
* one run at a time: a second run on the folder stops with one line naming the holder (PID, host);
* ``DIR`` must be new, empty or a folder of this package (its :data:`MARKER`; a folder written by a
  version from before the marker is recognised by its ``config.json`` and ``summary.csv``); starting
  over (``--overwrite``, or ``reuse`` on another run) deletes only the files the marker lists;
* ``--resume`` with a missing or unreadable ``config.json`` stops with one line instead of starting over;
* on resuming, every row is checked (``precode.evaluation.rows``) and every reconstruction and
  weights file read: a damaged row or file is reported with its path (and line), and exactly the
  damaged cells run again. A cell counts as finished when its summary row, all its victims' rows
  and its reconstructions are whole.

Used by ``python -m precode evaluate`` and chapter 7.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__, package_fingerprint
from ..errors import InputError
from ..files import LOCK_NAME, PART_SUFFIX, FolderLock, atomic_write, remove_parts
from .grid import Grid
from .rows import Damage, parse_value, read_csv, read_rows
from .schema import CELL_FIELDS, RESULT_FIELDS, SUMMARY_FIELDS, TRAINING_CSV_FIELDS

__all__ = [
    "RunFolder", "GridResults", "read_csv", "read_reconstructions", "RESULT_FIELDS", "TRAINING_CSV_FIELDS",
    "CELL_FIELDS", "MARKER",
]

MARKER = ".precode-evaluation"
"""The file that marks a folder as an evaluation folder of this package and lists the files it wrote there."""

_MARKER_HEADER = ("# precode evaluation folder: made by python -m precode evaluate, which writes only the files "
                  "listed below and deletes nothing else")
_CSV_NAMES = ("summary.csv", "results.csv", "training.csv")
_TRAINING_KEY = ("model", "train_data", "defense")


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else ("inf" if value == math.inf else repr(value))
    return str(value)


def _reconstructions_path(folder: Path, key: Sequence[str]) -> Path:
    if len(key) != len(CELL_FIELDS):
        raise InputError(f"a cell's key is {CELL_FIELDS}, got {tuple(key)!r}")
    return folder / "reconstructions" / _file_name(key)


def _file_name(parts: Sequence[Any]) -> str:
    """A ``.pt`` file name from a key's parts: each part's other characters become ``_``, parts joined by ``__``."""
    return "__".join(re.sub(r"[^A-Za-z0-9.-]+", "_", str(part)) for part in parts) + ".pt"


def _load_tensors(path: Path) -> Any:
    """``torch.load(path, weights_only=True)``; a damaged file raises :class:`InputError` naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: zip, pickle and EOF errors alike
        raise InputError(f"{path} is damaged ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
                         ) from None


def read_reconstructions(out: str | os.PathLike, key: Sequence[str]) -> torch.Tensor:
    """The reconstructions of one finished cell of a run, ``(N, C, H, W)`` float32 in ``[0, 1]``.

    Args:
        out: the run's folder.
        key: the cell's ``(model, data, defense, attack, weights, labels)``, as in its CSV rows.

    Raises:
        FileNotFoundError: the folder holds no reconstructions for that cell (not run, or run by a
            version of the package that did not store them: run it again with ``--overwrite``).
        InputError: the file is damaged (``--resume`` computes the cell again).

    Used by :meth:`GridResults.cell` (chapter 8 shows the reconstructions of the grid's cells).
    """
    path = _reconstructions_path(Path(out), key)
    if not path.exists():
        raise FileNotFoundError(f"no reconstructions of cell {tuple(key)} in {out} ({path.name} is missing); "
                                "run the evaluation of that cell first, or again with --overwrite")
    return _load_tensors(path).float()


def _is_legacy(path: Path) -> bool:
    """Whether ``path`` holds an evaluation written before :data:`MARKER` existed: a ``config.json`` of
    this package (its ``grid`` and ``code``) or a ``summary.csv`` whose header starts with the cell's key."""
    try:
        config = json.loads((path / "config.json").read_text())
        if isinstance(config, dict) and {"grid", "code"} <= set(config):
            return True
    except (OSError, ValueError):
        pass
    try:
        with open(path / "summary.csv", newline="") as f:
            return tuple(next(csv.reader(f), ())[: len(CELL_FIELDS)]) == CELL_FIELDS
    except OSError:
        return False


def _warn(damage: Sequence[Damage], consequence: str) -> None:
    """One warning per damaged file: its damaged lines (the first one's problem) and what happens to them."""
    by_file: dict[Path, list[Damage]] = {}
    for d in damage:
        by_file.setdefault(d.path, []).append(d)
    for path, found in by_file.items():
        lines = [str(d.line) for d in found if d.line is not None]
        where = "" if not lines else f" line{'s' if len(lines) > 1 else ''} " + ", ".join(lines[:8]) + (
            f" and {len(lines) - 8} more" if len(lines) > 8 else "")
        warnings.warn(f"{path}{where} damaged ({found[0].problem}); {consequence}", stacklevel=3)


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
        matching = [r for r in self.summary
                    if (r["model"], r["data"], r["defense"], r["attack"], r["weights"]) == (model, data, defense,
                                                                                            attack, weights)]
        found: dict[str, dict[str, Any]] = {}
        for r in matching:
            if r["labels"] in found:  # two runs wrote the folder at once (before it had a lock)
                key = (model, data, defense, attack, weights, r["labels"])
                raise InputError(f"{self.folder / 'summary.csv'} holds cell {key} more than once; run the "
                                 "evaluation again with --resume, which computes it once more")
            found[r["labels"]] = r
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
        if [r["victim"] for r in rows] != list(range(row["n"])):
            raise InputError(f"{self.folder / 'results.csv'} holds {len(rows)} victim rows for cell {key} of "
                             f"n = {row['n']}; run the evaluation again with --resume, which computes it once more")
        return {"row": row, "ssim": np.array([r["ssim"] for r in rows], dtype=float),
                "psnr": np.array([r["psnr"] for r in rows], dtype=float),
                "images": read_reconstructions(self.folder, key)}


class RunFolder:
    """The output folder ``DIR`` of one evaluation, locked while it is open (see the module docstring).

    Use it in a ``with`` block, or call :meth:`close`: the lock is released at the end (and when the
    process ends, however it ends).

    Args:
        out: the folder (created with its parents): new, empty, or one of this package's.
        grid: the grid being run.
        resume: keep the finished cells of an earlier run of the same grid.
        overwrite: delete the files of an earlier run first (only those the run wrote).
        reuse: keep the finished cells when the folder holds this very run (the same grid, package
            code and data: ``config.json`` equal), else start over; excludes ``resume`` and
            ``overwrite``. :attr:`reused` says which happened.
        data: where each data split came from (``{"NAME SPLIT": source}``), stored in ``config.json``.

    Raises:
        InputError: the folder cannot be written; holds other files than a run of this package's; is
            in use by another run; holds another run and neither ``resume`` nor ``overwrite`` is set;
            ``resume`` is set and the stored grid differs, or ``config.json`` is missing or unreadable.
    """

    def __init__(self, out: str | os.PathLike, grid: Grid, resume: bool = False, overwrite: bool = False,
                 reuse: bool = False, data: dict[str, str] | None = None):
        if reuse and (resume or overwrite):
            raise InputError("reuse decides by itself whether to resume or start over; pass it alone")
        if os.fspath(out) == "":
            raise InputError("the output folder is an empty path, which names the current folder; name a folder "
                             "for the run's files")
        self.path = Path(out)
        self.grid = grid
        self.summary_fields = SUMMARY_FIELDS
        self._lock: FolderLock | None = None
        self._claim()
        try:
            self._open(resume, overwrite, reuse, data)
        except BaseException:
            self.close()
            raise

    # -- the folder: whose it is, its lock, its marker ---------------------------------------------
    def _claim(self) -> None:
        """Refuse a folder this package did not make (unless new or empty), create it and lock it."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise InputError(f"{path} is a file, not a folder; give a folder for the run")
        self._legacy = False
        if path.is_dir() and not (path / MARKER).is_file():
            self._legacy = _is_legacy(path)
            # a kill before the marker was written may have left the lock and a part of the marker
            others = sorted(p.name for p in path.iterdir() if p.name != LOCK_NAME and not p.name.endswith(PART_SUFFIX))
            if others and not self._legacy:
                raise InputError(
                    f"{path} is not empty ({', '.join(others[:3])}{' ...' if len(others) > 3 else ''}) and holds no "
                    f"evaluation of this package (no {MARKER} file); give a new or empty folder as --out: a run "
                    "writes, and on starting over deletes, its own files there"
                )
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._lock = FolderLock(path, "evaluation")
        except OSError as e:
            raise InputError(f"cannot write to {path}: {e.strerror or e}") from None

    def close(self) -> None:
        """Release the folder's lock (the files stay)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_marker(self) -> set[str]:
        """The files the marker lists (relative paths inside the folder; anything else in it is ignored)."""
        try:
            lines = (self.path / MARKER).read_text().splitlines()
        except OSError:
            return set()
        return {line.strip() for line in lines if line.strip() and not line.startswith("#")
                and not Path(line.strip()).is_absolute() and ".." not in Path(line.strip()).parts}

    def _legacy_files(self) -> set[str]:
        """The files a run from before the marker wrote: its CSV files and ``config.json``, the
        reconstructions and weights its rows name, and the figures' names."""
        files = {n for n in ("config.json", *_CSV_NAMES) if (self.path / n).is_file()}
        _h, summary, _d = read_rows(self.path / "summary.csv")
        _h, results, _d = read_rows(self.path / "results.csv")
        _h, training, _d = read_rows(self.path / "training.csv")
        keys = {tuple(str(r[k]) for k in CELL_FIELDS) for _line, _cells, r in summary + results
                if all(k in r for k in CELL_FIELDS)}
        files |= {f"reconstructions/{_file_name(key)}" for key in keys}
        files |= {f"weights/{_file_name(tuple(str(r[k]) for k in _TRAINING_KEY))}" for _line, _cells, r in training
                  if all(k in r for k in _TRAINING_KEY)}
        figures = self.path / "figures"
        if figures.is_dir():
            files |= {f"figures/{p.name}" for p in figures.glob("*.png")
                      if p.stem in ("ssim_distributions", "convergence")
                      or p.stem.startswith(("privacy_utility_", "success_vs_threshold_"))}
        return {f for f in files if (self.path / f).is_file()}

    def _write_marker(self) -> None:
        with atomic_write(self.path / MARKER) as f:
            f.write("\n".join([_MARKER_HEADER, *sorted(self._files)]) + "\n")

    def _own(self, name: str) -> Path:
        """Record ``name`` (relative to the folder) as the run's own before it is written; returns its path."""
        if name not in self._files:
            self._files.add(name)
            self._write_marker()
        path = self.path / name
        path.parent.mkdir(exist_ok=True)
        return path

    def add_figures(self, paths: Iterable[str | os.PathLike]) -> None:
        """Record figures drawn into the folder (:func:`~precode.evaluation.draw_figures`) as the run's own."""
        names = {Path(p).resolve().relative_to(self.path.resolve()).as_posix() for p in paths}
        if not names <= self._files:
            self._files |= names
            self._write_marker()

    def _clear(self) -> None:
        """Delete the earlier run: exactly the files the marker lists (the folder's lock and marker stay)."""
        for name in sorted(self._files):
            (self.path / name).unlink(missing_ok=True)
        self._files = set()
        self._write_marker()

    # -- opening: start over, or resume and check what is there ------------------------------------
    def _open(self, resume: bool, overwrite: bool, reuse: bool, data: dict[str, str] | None) -> None:
        for folder in (self.path, *(self.path / d for d in ("figures", "weights", "reconstructions"))):
            remove_parts(folder)  # what kills cut off while it was being written
        self._files = self._legacy_files() if self._legacy else self._read_marker()
        if self._legacy or not (self.path / MARKER).is_file():
            self._write_marker()  # marks a new folder, adopts one from before the marker
        config = {"grid": self.grid.to_dict(), "version": __version__, "code": package_fingerprint(),
                  "data": dict(sorted((data or {}).items())),
                  "threat_model": str(self.grid.threat_model(defense="the cell's")), "training": self.grid.training()}
        stored, problem = self._config_or_problem()
        self.reused = bool(reuse and stored == config)
        if reuse:
            resume, overwrite = self.reused, not self.reused
        earlier = [n for n in sorted(self._files) if n != "config.json" and (self.path / n).is_file()]
        if resume and stored is None and earlier:
            raise InputError(
                f"cannot resume the run in {self.path}: its config.json {problem}, and without it the finished "
                "cells cannot be checked against the grid; restore config.json, or pass --overwrite instead of "
                "--resume to start over (deleting the run's files)"
            )
        if resume and stored is not None and stored.get("grid") != config["grid"]:
            changed = sorted(k for k in config["grid"] if stored.get("grid", {}).get(k) != config["grid"][k])
            raise InputError(
                f"{self.path} holds an evaluation of a different grid (differs in {', '.join(changed)}); "
                "resume it with the same options, or choose another --out"
            )
        if not resume and any(n in earlier for n in _CSV_NAMES) and not overwrite:
            raise InputError(
                f"{self.path} already holds evaluation results; pass --resume to finish that run, "
                "--overwrite to replace it, or choose another --out"
            )
        if not resume:
            self._clear()
        if stored != config:
            with atomic_write(self._own("config.json")) as f:
                json.dump(config, f, indent=2)
                f.write("\n")
        self._load_tables()

    def _config_or_problem(self) -> tuple[dict[str, Any] | None, str]:
        """The stored ``config.json``, or ``None`` and what is wrong with it."""
        path = self.path / "config.json"
        if not path.exists():
            return None, "is missing"
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            return None, f"cannot be read ({e})"
        if not isinstance(config, dict) or "grid" not in config:
            return None, "holds no grid"
        return config, ""

    @staticmethod
    def stored_config(path: str | os.PathLike) -> dict[str, Any] | None:
        """The ``config.json`` of the run in ``path`` (``None``: no readable one)."""
        try:
            with open(Path(path) / "config.json") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _load_tables(self) -> None:
        """Read the CSV files, keep the rows of whole cells and trainings, report and drop the rest."""
        damage: list[Damage] = []
        self._tables: dict[str, tuple[list[str], list[dict[str, str]]]] = {}
        parsed: dict[str, list[tuple[int, dict[str, Any], dict[str, str]]]] = {}
        rewrite = set()
        for name, fields in zip(_CSV_NAMES, (self.summary_fields, RESULT_FIELDS, TRAINING_CSV_FIELDS)):
            header, rows, found = read_rows(self.path / name)
            columns = list(fields) + [c for c in header if c not in fields]
            if header and header != columns:
                rewrite.add(name)  # written by another version: the current columns, the old ones kept after them
            self._tables[name] = (columns, [])
            parsed[name] = [(line, row, dict(zip(header, cells))) for line, cells, row in rows]
            damage += found
        summary_path, results_path = self.path / "summary.csv", self.path / "results.csv"

        victims: dict[tuple, list[int]] = {}
        for _line, row, _text in parsed["results.csv"]:
            victims.setdefault(tuple(str(row[k]) for k in CELL_FIELDS), []).append(row["victim"])
        seen: dict[tuple, list[int]] = {}
        for line, row, _text in parsed["summary.csv"]:
            seen.setdefault(tuple(str(row[k]) for k in CELL_FIELDS), []).append(line)
        self._finished: set[tuple] = set()
        for line, row, _text in parsed["summary.csv"]:
            key = tuple(str(row[k]) for k in CELL_FIELDS)
            if len(seen[key]) > 1:
                damage.append(Damage(summary_path, line, f"cell {key} has {len(seen[key])} summary rows (two runs "
                                                         "wrote it at once?)"))
                continue
            got = sorted(victims.get(key, []))
            if got != list(range(int(row["n"]))):
                damage.append(Damage(summary_path, line, f"the cell's victim rows in {results_path.name} are "
                                                         f"{len(got)} of its {row['n']}"))
                continue
            recon = _reconstructions_path(self.path, key)
            if recon.exists():
                try:
                    images = _load_tensors(recon)
                    if not isinstance(images, torch.Tensor) or images.shape[0] != int(row["n"]):
                        raise InputError(f"{recon} holds no {row['n']} reconstructions")
                except InputError as e:
                    damage.append(Damage(recon, None, str(e).removeprefix(f"{recon} ")))
                    continue
            self._finished.add(key)

        trainings: dict[tuple, list[tuple[int, int]]] = {}
        for line, row, _text in parsed["training.csv"]:
            trainings.setdefault(tuple(str(row[k]) for k in _TRAINING_KEY), []).append((line, row["epoch"]))
        whole = set()
        for key, epochs in trainings.items():
            got = sorted(epoch for _line, epoch in epochs)
            if got == list(range(1, len(got) + 1)):
                whole.add(key)
            else:  # a history is written in one go: a gap or a repeat is damage (its model is trained again)
                damage.append(Damage(self.path / "training.csv", epochs[0][0], f"the training of {key} has epochs "
                                                                                f"{got}"))

        keep = {
            "summary.csv": [t for _l, r, t in parsed["summary.csv"] if tuple(str(r[k]) for k in CELL_FIELDS)
                            in self._finished],
            "results.csv": [t for _l, r, t in parsed["results.csv"] if tuple(str(r[k]) for k in CELL_FIELDS)
                            in self._finished],
            "training.csv": [t for _l, r, t in parsed["training.csv"] if tuple(str(r[k]) for k in _TRAINING_KEY)
                             in whole],
        }
        if damage:
            _warn(damage, "dropped; the cells (and trained models) they belong to are computed again")
        for name, rows in keep.items():
            self._tables[name][1].extend(rows)
            if len(rows) != len(parsed[name]) or name in rewrite or any(d.path.name == name for d in damage):
                self._write_table(name)

    def _write_table(self, name: str) -> None:
        columns, rows = self._tables[name]
        if name != "training.csv":  # in the grid's order of cells (a cell computed again goes back to its place)
            order = {cell.key: i for i, cell in enumerate(self.grid.cells())}
            rows.sort(key=lambda r: (order.get(tuple(r.get(k, "") for k in CELL_FIELDS), len(order)),
                                     int(r.get("victim") or 0)))
        with atomic_write(self._own(name), newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows([[row.get(c, "") for c in columns] for row in rows])

    def _add_rows(self, name: str, rows: Iterable[dict[str, Any]]) -> None:
        columns, table = self._tables[name]
        table.extend({c: _cell_text(row.get(c)) for c in columns} for row in rows)
        self._write_table(name)

    # -- reading ------------------------------------------------------------------------------
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
        """Keys ``(model, data, defense, attack, weights, labels)`` of the cells with a summary row in ``path``.

        Raises:
            InputError: a damaged row (:func:`~precode.evaluation.read_csv`).
        """
        return {tuple(str(r[k]) for k in CELL_FIELDS) for r in read_csv(Path(path) / "summary.csv")}

    def finished_cells(self) -> set[tuple]:
        """Keys ``(model, data, defense, attack, weights, labels)`` of the finished cells: a summary row,
        every victim's row and whole reconstructions."""
        return set(self._finished)

    def _weights_path(self, model: str, train_data: str, defense: str) -> Path:
        return self.path / "weights" / _file_name((model, train_data, defense))

    def weights(self, model: str, train_data: str, defense: str) -> dict[str, torch.Tensor] | None:
        """The stored weights of a trained model, loaded with ``weights_only=True`` (``None``: not stored,
        or damaged, which a warning names: the model is then trained again, seeded, to the same weights)."""
        path = self._weights_path(model, train_data, defense)
        if not path.exists():
            return None
        try:
            return _load_tensors(path)
        except InputError as e:
            warnings.warn(f"{e}; training the model again", stacklevel=2)
            return None

    def add_weights(self, model: str, train_data: str, defense: str, state: dict[str, torch.Tensor]) -> None:
        """Store a trained model's weights (its ``state_dict``), for the cells that attack it."""
        name = self._weights_path(model, train_data, defense).relative_to(self.path).as_posix()
        with atomic_write(self._own(name), "wb") as f:
            torch.save(state, f)

    def training(self, model: str, train_data: str, defense: str) -> list[dict[str, Any]]:
        """The stored training history of a model under a defense (empty when not trained yet)."""
        rows = [{k: parse_value(v) for k, v in r.items()} for r in self._tables["training.csv"][1]]
        return [r for r in rows if (str(r["model"]), str(r["train_data"]), str(r["defense"]))
                == (model, train_data, defense)]

    # -- writing ------------------------------------------------------------------------------
    def add_training(self, rows: list[dict[str, Any]]) -> None:
        """Add a trained model's history (one row per epoch)."""
        self._add_rows("training.csv", rows)

    def add_cell(self, results: list[dict[str, Any]], summary: dict[str, Any],
                 reconstructions: torch.Tensor | None = None) -> None:
        """Add a finished cell: its reconstructions and victims' rows, then its summary row (the
        'finished' mark), each file replaced in one step."""
        key = tuple(str(summary[k]) for k in CELL_FIELDS)
        if reconstructions is not None:
            name = _reconstructions_path(self.path, key).relative_to(self.path).as_posix()
            with atomic_write(self._own(name), "wb") as f:
                torch.save(reconstructions.detach().to("cpu", torch.float16).contiguous(), f)
        self._add_rows("results.csv", results)
        self._add_rows("summary.csv", [summary])
        self._finished.add(key)
