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

__all__ = ["Profile", "PROFILES", "get_profile"]

ENV_VAR = "PRECODE_PROFILE"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Scale settings of one profile.

    Attributes:
        name: ``"quick"`` or ``"full"``.
        victims: number of victim images a chapter or command attacks by default.
        ig_iterations: Inverting Gradients iterations per restart.
        ig_restarts: Inverting Gradients restarts (the best is chosen by gradient loss only).
        dlg_iterations: DLG / iDLG L-BFGS iterations.
        epochs: training epochs for the accuracy and convergence experiments.
        train_subset: number of training images used for training experiments
            (``None``: the whole training split).
    """

    name: str
    victims: int
    ig_iterations: int
    ig_restarts: int
    dlg_iterations: int
    epochs: int
    train_subset: int | None

    def __str__(self) -> str:
        fields = ", ".join(
            f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self) if f.name != "name"
        )
        return f"profile {self.name!r}: {fields}"


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        victims=8,
        ig_iterations=1000,
        ig_restarts=1,
        dlg_iterations=100,
        epochs=3,
        train_subset=10_000,
    ),
    "full": Profile(
        name="full",
        victims=128,
        ig_iterations=7000,
        ig_restarts=1,
        dlg_iterations=300,
        epochs=30,
        train_subset=None,
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
        raise ValueError(
            f"unknown profile {name!r}; choose one of {sorted(PROFILES)} "
            f"(set {ENV_VAR}=quick or {ENV_VAR}=full)"
        )
    return PROFILES[key]
