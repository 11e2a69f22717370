"""The paper's evaluation: every model, defense and attack, over many victims, with honest statistics.

The PRECODE paper's claim is a table: attack success 0% with PRECODE and almost no cost in
accuracy, against gradient noise and pruning that cost accuracy. This package reruns that table.

* ``precode.evaluation.grid``: what is run: the models and data (:class:`Setting`), the
  defenses and their levels, the attacks, the budgets of the ``quick`` and ``full`` profiles
  (:func:`get_grid`), and its parts (:meth:`Grid.part`): the paper's rows (chapter 7) and the
  rows beyond the paper, PRECODE's variants against the attacks that know it (chapter 8);
* ``precode.evaluation.cells``: one cell (an attack on a model under a defense), step by step
  as ``python -m precode attack`` does it, and training a model under a defense;
* ``precode.evaluation.report``: per-cell statistics (success rate at an SSIM threshold with
  its Wilson interval, identification rate, means with 95% CIs), the comparison table, the figures;
* ``precode.evaluation.schema``: the columns of the CSV files;
* ``precode.evaluation.store``: the output folder, written cell by cell so a run resumes;
* ``precode.evaluation.runner``: :func:`run_evaluation`, the loop with a progress bar.

Example (chapter 7)::

    from precode.evaluation import get_grid, run_evaluation, read_csv, comparison_table
    out = run_evaluation(get_grid("quick"), "results/evaluation-quick", overwrite=True)
    print(comparison_table(read_csv(out / "summary.csv")))

The command line: ``python -m precode evaluate --profile quick --out DIR [--part PART] [--resume]``.
Used in chapter 7 (``book/07_evaluation.ipynb``) and chapter 8 (``book/08_adaptive_attacks.ipynb``).
"""
from __future__ import annotations

from .cells import (
    attack_cell,
    attack_cells,
    batchable,
    defended_gradients,
    run_cells,
    score_cell,
    train_defended,
    train_model,
    victim_model,
)
from .grid import (
    ADAPTIVE_ATTACKS,
    ADAPTIVE_DEFENSES,
    ATTACKS,
    DEFENSES,
    GRIDS,
    PAPER_ATTACKS,
    PAPER_DEFENSES,
    PARTS,
    PRECODE,
    Cell,
    Grid,
    GridDefense,
    Setting,
    canonical_defense,
    get_grid,
    split_defense,
)
from .report import (
    SUMMARY_FIELDS,
    comparison_table,
    draw_figures,
    family,
    plot_convergence,
    plot_privacy_utility,
    plot_ssim_distributions,
    plot_success_vs_threshold,
    row_texts,
    summarize_cell,
    wilson_interval,
)
from .runner import chapter_results, run_evaluation
from .schema import CELL_FIELDS
from .store import RESULT_FIELDS, TRAINING_CSV_FIELDS, GridResults, RunFolder, read_csv, read_reconstructions

__all__ = [
    "ATTACKS", "DEFENSES", "GRIDS", "PRECODE", "Cell", "Grid", "Setting", "canonical_defense", "get_grid",
    "ADAPTIVE_ATTACKS", "ADAPTIVE_DEFENSES", "PAPER_ATTACKS", "PAPER_DEFENSES", "PARTS", "split_defense", "GridDefense",
    "attack_cell", "attack_cells", "batchable", "score_cell", "defended_gradients", "run_cells", "train_model",
    "train_defended", "victim_model",
    "SUMMARY_FIELDS", "comparison_table", "draw_figures", "family", "plot_convergence", "plot_privacy_utility",
    "plot_ssim_distributions", "plot_success_vs_threshold", "row_texts", "summarize_cell", "wilson_interval",
    "run_evaluation", "chapter_results", "CELL_FIELDS", "RESULT_FIELDS", "TRAINING_CSV_FIELDS", "RunFolder",
    "GridResults",
    "read_csv", "read_reconstructions",
]
