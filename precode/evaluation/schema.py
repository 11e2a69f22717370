"""The columns of an evaluation's CSV files, in one place (``precode.evaluation.store`` writes
them, ``precode.evaluation.report`` and the chapters read them).

* ``results.csv``: :data:`RESULT_FIELDS`, one row per victim and cell;
* ``summary.csv``: :data:`SUMMARY_FIELDS`, one row per cell (the columns are described in
  ``precode.evaluation.report``);
* ``training.csv``: :data:`TRAINING_CSV_FIELDS`, one row per trained model and epoch: the model,
  its training data and defense, the epoch's :data:`TRAINING_FIELDS` and the subset sizes.

Used by ``python -m precode evaluate`` and chapter 7.
"""
from __future__ import annotations

__all__ = ["CELL_FIELDS", "RESULT_FIELDS", "SUMMARY_FIELDS", "TRAINING_FIELDS", "TRAINING_CSV_FIELDS"]

CELL_FIELDS = ("model", "data", "defense", "attack", "weights", "labels")
"""How the CSV files name a cell: :attr:`precode.evaluation.Cell.key` (``weights``: ``initial``,
the untrained model as in the paper's evaluation, or ``trained``, the model after the grid's training;
``labels``: ``given`` to the attacker or ``inferred`` by it)."""

RESULT_FIELDS = CELL_FIELDS + ("victim", "label", "label_pred", "label_inferred", "mse", "psnr", "ssim", "identified",
                               "success", "evaluations", "distance", "truth_distance", "status")
"""``status``: ``ok``, or ``diverged`` when the attack's objective overflowed for the victim (its MSE, PSNR
and SSIM are empty: no score; ``precode.attacks.divergence``)."""

SUMMARY_FIELDS = (
    "model", "data", "defense", "attack", "weights", "labels", "n", "threshold", "attack_success_rate",
    "success_ci95_low", "success_ci95_high", "identification_rate", "pool", "psnr_mean", "psnr_ci95", "ssim_mean",
    "ssim_ci95", "ssim_median", "label_accuracy", "labels_inferable", "evaluations", "budget", "distance_mean",
    "truth_distance_mean", "below_truth", "precode_sigma", "test_accuracy", "test_accuracy_ci95",
    "training", "release_images", "clients", "train_data", "train_images", "epochs", "test_images", "epsilon",
    "iterations", "restarts", "seed", "seconds", "diverged",
)
"""``diverged``: how many of the cell's ``n`` victims the attack diverged on (counted as failures of the
attack; the means and medians of PSNR and SSIM are over the others, empty when there are none)."""

TRAINING_FIELDS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds", "epsilon")
"""One epoch of a training history (:func:`precode.evaluation.train_model`)."""

TRAINING_CSV_FIELDS = ("model", "train_data", "defense") + TRAINING_FIELDS + ("train_images", "test_images",
                                                                             "training")
