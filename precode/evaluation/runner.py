"""Run a grid cell by cell into an output folder, resumable, with a progress bar over cells.

Used by ``python -m precode evaluate`` and chapters 7 and 8 (through :func:`chapter_results`).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data import load_data
from ..errors import InputError
from .cells import batchable, run_cells, train_model
from .grid import Grid
from .report import draw_figures, summarize_cell
from .schema import CELL_FIELDS
from .store import RunFolder

__all__ = ["run_evaluation", "chapter_results"]


class _DataCache:
    """Each data split is loaded once per run."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], Any] = {}

    def __call__(self, name: str, split: str):
        key = (name, split)
        if key not in self._data:
            self._data[key] = load_data(name, split)
        return self._data[key]


def run_evaluation(grid: Grid, out: str | Path, resume: bool = False, overwrite: bool = False,
                   progress: bool = True, figures: bool = True, threads: int | None = None,
                   reuse: bool = False, on_start: Callable[[], None] | None = None) -> Path:
    """Run every cell of ``grid`` that ``out`` does not hold yet, then draw the figures.

    For each model and defense, the model is first trained under the defense (once; its history
    goes to ``training.csv``), then each attack of the grid runs on the untrained model's
    defended gradients (:func:`~precode.evaluation.run_cells`: the cells of one attack on one
    model without PRECODE in one call); after each call its cells' victim rows and summary rows are
    appended to ``results.csv`` and ``summary.csv``. Everything is seeded from ``grid.seed``, so a
    resumed run gives the same numbers as an uninterrupted one (up to floating-point rounding where
    a resumed call batches fewer cells).

    Args:
        grid: the grid (:func:`~precode.evaluation.get_grid`, possibly restricted).
        out: the output folder.
        resume: keep the finished cells (and trained models) already in ``out``.
        overwrite: replace an earlier run in ``out``.
        reuse: read the cells of ``out`` when it holds this very run (the same grid, package code and
            data; :class:`~precode.evaluation.RunFolder`), recompute nothing that is finished,
            and start over otherwise: what the chapters do, so that running one again is quick.
        progress: a tqdm bar over cells on stderr.
        figures: draw ``out/figures/*.png`` at the end.
        threads: torch CPU threads during the run (restored afterwards); ``None``: one thread on
            the CPU unless ``OMP_NUM_THREADS`` is set, as ``python -m precode attack`` does (the
            attacks are many small operations; a second thread barely helps and, on a busy
            machine, slows them down many times over).
        on_start: called once the grid's data and the output folder are checked, before any work (the
            command prints its header there, so that a mistake is reported in one line).

    Returns:
        The output folder.

    Raises:
        ValueError: ``out`` cannot be written, is in use by another run, holds files of something
            else or another run (see :class:`~precode.evaluation.RunFolder`); more victims
            than a test split holds.

    Used by ``python -m precode evaluate`` and chapter 7.
    """
    load = _DataCache()
    sources = _data_sources(grid, load)
    _check_victims(grid, load)  # before the folder is touched
    with RunFolder(out, grid, resume=resume, overwrite=overwrite, reuse=reuse, data=sources) as folder:
        if on_start is not None:
            on_start()
        previous = torch.get_num_threads()
        if threads is None and not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
            threads = 1
        if threads:
            torch.set_num_threads(int(threads))
        try:
            _run_cells(grid, folder, progress, load)
        finally:
            torch.set_num_threads(previous)
        if figures:
            folder.add_figures(draw_figures(folder.path))
    return folder.path


def chapter_results(grid: Grid, out: str | Path, progress: bool = False) -> Path:
    """The folder of ``grid``'s results that a chapter reads (chapters 7 and 8).

    * The quick profile's grids (minutes on a CPU) are run with ``reuse=True``: the folder is read
      when it holds this very run (the same grid, package code and data), and computed again
      otherwise, so that a chapter never shows a stale cell.
    * The full profile's grids (the paper's scale: hours on a GPU) are only read. They are computed
      beforehand, resumably, with ``python -m precode evaluate --profile full --part PART --out DIR
      --resume``; a finished cell is never recomputed or overwritten, even after the package's code
      changed (``--resume`` keeps it). A missing folder, another grid or unfinished cells are an
      error that gives the command, so that no chapter cell runs for hours.

    Raises:
        ValueError: a full-profile folder that does not hold the whole grid.
    """
    if not grid.name.startswith("full"):
        return run_evaluation(grid, out, reuse=True, progress=progress)
    folder = Path(out)
    part = grid.name.partition("-")[2] or "all"
    command = f"python -m precode evaluate --profile full --part {part} --out {folder} --resume"
    folder_config = RunFolder.stored_config(folder)
    if folder_config is None or folder_config.get("grid") != grid.to_dict():
        raise InputError(f"{folder} does not hold the {grid.name} grid; compute it first (on a GPU, resumable): "
                         f"{command}")
    finished, cells = RunFolder.finished_in(folder), grid.cells()
    missing = [c.key for c in cells if c.key not in finished]
    if missing:
        raise InputError(f"{folder} holds {len(cells) - len(missing)} of the {grid.name} grid's "
                         f"{len(cells)} cells (next missing: {missing[0]}); finish it with: {command}")
    return folder


def _data_sources(grid: Grid, load: _DataCache) -> dict[str, str]:
    """Where each split the grid reads comes from (the victims' test splits, the training data's splits)."""
    splits = {(s.data, "test") for s in grid.settings} | {(s.train_data, split) for s in grid.settings
                                                          for split in ("train", "test")}
    return {f"{name} {split}": load(name, split).source for name, split in sorted(splits)}


def _check_victims(grid: Grid, load: _DataCache) -> None:
    """Every setting's test split holds the grid's victims (checked before any training)."""
    for setting in grid.settings:
        available = len(load(setting.data, "test"))
        if grid.victims > available:
            raise InputError(f"the grid asks for {grid.victims} victims a cell, and {setting.data}'s test split "
                             f"holds {available} images; choose --victims 1 to {available}")


def _batches(cells: list) -> list[list]:
    """The cells in grid order, those that :func:`~precode.evaluation.batchable` puts together in
    one list (at the place of the first), every other cell alone."""
    batches, where = [], {}
    for cell in cells:
        key = batchable(cell)
        if key is not None and key in where:
            where[key].append(cell)
            continue
        batches.append([cell])
        if key is not None:
            where[key] = batches[-1]
    return batches


def _trained(cell, grid: Grid, folder: RunFolder, load: _DataCache,
             bar) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor] | None]:
    """The training history of the cell's model under its defense, stored or trained now and stored,
    and for a trained cell the trained weights (stored with the history; a history stored without
    them is trained again, seeded, to the same weights)."""
    setting, defense = cell.setting, cell.defense
    if defense in grid.untrained:  # not trained at this scale: the row carries no accuracy
        return [], None
    history = folder.training(setting.model, setting.train_data, defense)
    state = folder.weights(setting.model, setting.train_data, defense) if cell.weights == "trained" else None
    if not history or (cell.weights == "trained" and state is None):
        bar.set_description(f"train {setting.model} on {setting.train_data} under {defense}")
        epochs, info, weights = train_model(setting, defense, grid, load(setting.train_data, "train"),
                                            load(setting.train_data, "test"))
        folder.add_weights(setting.model, setting.train_data, defense, weights)
        if not history:
            history = [{"model": setting.model, "train_data": setting.train_data, "defense": defense, **h,
                        "train_images": info["train_images"], "test_images": info["test_images"],
                        "training": info["training"]} for h in epochs]
            folder.add_training(history)
        state = weights if cell.weights == "trained" else None
    return history, state


def _run_cells(grid: Grid, folder: RunFolder, progress: bool, load: _DataCache) -> None:
    done = folder.finished_cells()
    cells = grid.cells()
    todo = [c for c in cells if c.key not in done]
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), unit="cell", desc="evaluate", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    try:
        for batch in _batches(todo):
            trained = {cell.key: _trained(cell, grid, folder, load, bar) for cell in batch}
            state = trained[batch[0].key][1]  # a trained cell's weights (attacked alone)
            setting = batch[0].setting
            test = load(setting.data, "test")
            victims = test.first(grid.victims)
            pool = test.images[grid.victims : grid.victims + grid.pool]
            defenses = ", ".join(c.defense for c in batch)
            weights = " (trained)" if state is not None else ""
            bar.set_description(f"{batch[0].attack} on {setting.model}{weights} ({setting.data}) under {defenses}")
            for cell, (rows, seconds, reconstructions, sigma) in zip(batch, run_cells(batch, grid, victims, pool,
                                                                                       state=state)):
                history = trained[cell.key][0]
                last = history[-1] if history else {}
                training = {"test_accuracy": last.get("test_accuracy"), "train_data": setting.train_data,
                            "train_images": last.get("train_images"), "test_images": last.get("test_images"),
                            "epsilon": last.get("epsilon"), "training": last.get("training"),
                            "precode_sigma": sigma}
                summary = summarize_cell(cell.key, rows, grid, seconds, training, len(pool))
                folder.add_cell([dict(zip(CELL_FIELDS, cell.key), **r) for r in rows], summary, reconstructions)
                bar.update(1)
    finally:
        bar.close()
