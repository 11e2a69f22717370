"""Run profiles: how much work a chapter, a test or the command line does.

Two profiles share one code path and differ only in scale:

* ``quick`` (the default): runs offline on a 2-core laptop CPU in minutes. CI and the
  rendered book use it.
* ``full``: the paper's scale (Scheliga et al., WACV 2022), meant for a GPU.

The profile is read from the environment variable ``PRECODE_PROFILE``. Every chapter prints
the profile it runs with (chapter 1 onwards).
"""
from __future__ import annotations

import dataclasses
import os

from .errors import InputError

__all__ = ["Profile", "PROFILES", "get_profile"]

ENV_VAR = "PRECODE_PROFILE"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Scale settings of one profile, down to the size of each chapter's single experiments (so
    that no chapter chooses a size by the profile's name).

    Attributes:
        name: ``"quick"`` or ``"full"``.
        victims: number of victim images a chapter or command attacks by default.
        ig_iterations: Inverting Gradients iterations per restart.
        ig_restarts: Inverting Gradients restarts (the best is chosen by gradient loss only).
        dlg_iterations: DLG / iDLG L-BFGS iterations, of up to 25 evaluations of the matching loss
            each: ``25 * dlg_iterations <= ig_iterations``, so that L-BFGS never gets a larger
            budget than Inverting Gradients' signed Adam (one evaluation per step).
        epochs: training epochs for the accuracy and convergence experiments.
        train_subset: number of training images used for training experiments
            (``None``: the whole training split).
        stat_images: victims of chapter 1's leakage statistics (one image each).
        stat_batches: client batches per batch size in chapter 1's "which rows are copies" count.
        label_victims: victims of chapter 2's label-rule accuracy.
        sweep_iterations_mlp, sweep_iterations_lenet: Inverting Gradients' iterations in chapter
            3's batch-size and learning-rate sweeps and its attacks after training.
        short_train_images: training images of the one- and two-epoch trainings of chapters 3 and 6
            (``None``: the whole split).
        short_epochs: epochs of chapter 8's trainings of the CNN variants.
        dp_train_images: training images for DP-SGD in chapter 5 (one gradient per image;
            ``None``: the whole split).
        defense_iterations: Inverting Gradients' iterations in chapter 4's attacks on defended
            gradients (chapter 4 attacks the strongest level of every defense again with
            ``ig_iterations`` and checks that the mean SSIM changes by at most 0.05).
        spread_victims: victims of chapter 6's gradient-agreement spread.
        training_seeds: seeds ``0 .. training_seeds - 1`` of chapter 6's accuracy comparison
            (plain against PRECODE): each seed sets the initialisation, the order of the
            batches and PRECODE's noise; the models of seed 0 are the ones attacked afterwards.
    """

    name: str
    victims: int
    ig_iterations: int
    ig_restarts: int
    dlg_iterations: int
    epochs: int
    train_subset: int | None
    stat_images: int
    stat_batches: int
    label_victims: int
    sweep_iterations_mlp: int
    sweep_iterations_lenet: int
    short_train_images: int | None
    short_epochs: int
    dp_train_images: int | None
    defense_iterations: int
    spread_victims: int
    training_seeds: int

    def __str__(self) -> str:
        shown = ("victims", "ig_iterations", "ig_restarts", "dlg_iterations", "epochs", "train_subset")
        fields = ", ".join(f"{name}={getattr(self, name)}" for name in shown)
        return f"profile {self.name!r}: {fields}"


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        victims=8,
        ig_iterations=1000,
        ig_restarts=1,
        dlg_iterations=40,
        epochs=3,
        train_subset=10_000,
        stat_images=1000,
        stat_batches=40,
        label_victims=1000,
        sweep_iterations_mlp=300,
        sweep_iterations_lenet=500,
        short_train_images=5000,
        short_epochs=2,
        dp_train_images=1000,
        defense_iterations=200,
        spread_victims=50,
        training_seeds=3,
    ),
    "full": Profile(
        name="full",
        victims=128,
        ig_iterations=7000,
        ig_restarts=1,
        dlg_iterations=280,
        epochs=30,
        train_subset=None,
        stat_images=5000,
        stat_batches=200,
        label_victims=10_000,
        sweep_iterations_mlp=2000,
        sweep_iterations_lenet=3000,
        short_train_images=None,
        short_epochs=30,
        dp_train_images=None,
        defense_iterations=7000,
        spread_victims=500,
        training_seeds=3,
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """Return the profile called ``name``, else the one named by ``$PRECODE_PROFILE``, else quick.

    Raises:
        ValueError: the name is not a known profile.
    """
    if name is None:
        name = os.environ.get(ENV_VAR, "quick").strip() or "quick"
    key = name.lower()
    if key not in PROFILES:
        raise InputError(
            f"unknown profile {name!r}; choose one of {sorted(PROFILES)} "
            f"(set {ENV_VAR}=quick or {ENV_VAR}=full)"
        )
    return PROFILES[key]
