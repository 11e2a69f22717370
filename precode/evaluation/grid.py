"""The experiment grid of the PRECODE paper: which models, defenses and attacks, at which scale.

A *cell* of the grid is one attack on one model (on one data set) under one defense, run on
the shared gradients of ``N`` victims. A :class:`Grid` lists the cells and their budgets; two
grids come with the package, one per profile (:func:`get_grid`):

* ``quick`` (the default; a 2-core CPU, under 10 minutes): the MLP on Fashion-MNIST and the
  CNN on 32x32 colour photos, 8 victims a cell, short attacks, each model trained for a few
  epochs on a subset to measure the test accuracy.
* ``full`` (a GPU): the paper's scale: MLP and CNN on CIFAR-10, CIFAR-100 and Fashion-MNIST,
  128 victims a cell, 7,000 Inverting Gradients iterations, 300 DLG iterations, training on the
  whole training split for the full profile's epochs.

Defenses (the same for every model; see chapter 3 for what each does). Three levels per family,
chosen to span "no visible effect" to "stops Inverting Gradients" on the untrained MLP
(chapter 3's measurements), within the range Zhu et al. (2019) tried:

=============================  ==================================================================
``none``                       the baseline
``gaussian:0.001 .. 0.1``      Gaussian noise, standard deviation 1e-3, 1e-2, 1e-1 (gradient units)
``laplacian:0.001 .. 0.1``     Laplacian noise, scale b = 1e-3, 1e-2, 1e-1 (gradient units)
``prune:0.5 .. 0.99``          zero 50%, 90%, 99% of every gradient tensor (smallest magnitudes)
``dp:clip=1.0,noise=1.0``      DP-SGD: per-sample clipping to norm 1, noise multiplier 1
``precode``                    PRECODE: a variational bottleneck (K = 256, beta = 1e-3) inserted
                               before the classifier (the paper's placement and defaults)
=============================  ==================================================================

Attacks: ``ig`` (Inverting Gradients, the paper's attack), ``idlg`` (iDLG: the label from the
gradient, then L-BFGS on the image) and ``analytic`` (exact division, only for models whose first
layer is fully connected with a bias: the MLP). Every attack is on the *untrained* model with
client batches of one image, as in the paper's evaluation; the attacker infers the labels from
the shared gradient, as ``python -m precode attack`` does.

Used by ``python -m precode evaluate`` and chapter 5 (``book/05_evaluation.ipynb``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

__all__ = ["Setting", "Grid", "Cell", "GRIDS", "DEFENSES", "ATTACKS", "PRECODE", "get_grid", "canonical_defense"]

PRECODE = "precode"
"""The grid's name for PRECODE (a bottleneck with the paper's defaults before the classifier)."""

DEFENSES = (
    "none",
    "gaussian:0.001", "gaussian:0.01", "gaussian:0.1",
    "laplacian:0.001", "laplacian:0.01", "laplacian:0.1",
    "prune:0.5", "prune:0.9", "prune:0.99",
    "dp:clip=1.0,noise=1.0",
    PRECODE,
)
ATTACKS = ("ig", "idlg", "analytic")


def canonical_defense(spec: str) -> str:
    """The defense's canonical spec (``"gaussian:1e-3"`` -> ``"gaussian:0.001"``), ``precode`` as is.

    Raises:
        ValueError: not a valid spec (see :func:`precode.defenses.parse_defense`).
    """
    text = str(spec).strip()
    if text.lower() == PRECODE:
        return PRECODE
    from ..defenses import parse_defense

    return parse_defense(text).spec


@dataclasses.dataclass(frozen=True)
class Setting:
    """One model on one data set: a row group of the paper's table.

    Attributes:
        model: ``mlp`` or ``cnn`` (any name of :func:`precode.models.build_model`).
        data: where the victims come from: the first ``N`` images of its test split.
        train_data: the data set the model is trained on to measure ``test_accuracy`` (its
            train split; accuracy on its test split). Equal to ``data`` unless ``data`` has no
            training split (``photos``).
        attacks: the attacks run in this setting (``None``: all of the grid's that apply).
    """

    model: str
    data: str
    train_data: str
    attacks: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        return f"{self.model} on {self.data}"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell: an attack on a model under a defense (``setting`` says which model and data)."""

    setting: Setting
    defense: str
    attack: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        """``(model, data, defense, attack)``: how the CSV files name the cell."""
        return (self.setting.model, self.setting.data, self.defense, self.attack)


@dataclasses.dataclass(frozen=True)
class Grid:
    """The cells of an evaluation and their budgets.

    Attributes:
        name: ``quick`` or ``full`` (or a restricted variant of one).
        settings: the (model, data) pairs.
        defenses: defense specs (:data:`DEFENSES`).
        attacks: attack names (:data:`ATTACKS`); ``analytic`` runs only where it applies.
        victims: ``N``, victims per cell: the first ``N`` test images, one per client batch.
        pool: number of further test images (after the victims) searched by the identification
            rate, as far as the data set has them.
        ig_iterations, ig_restarts: Inverting Gradients' budget.
        dlg_iterations: iDLG's L-BFGS iterations (one restart).
        train_images: training images per model (a seeded random subset; ``None``: all).
        test_images: test images for ``test_accuracy`` (a seeded random subset; ``None``: all).
        epochs: training epochs (Adam, ``lr``, batches of ``batch_size``; the paper's optimiser).
        threshold: an attack succeeds on a victim when the reconstruction's SSIM with the
            victim is at least this (dimensionless, in ``[-1, 1]``; default 0.5).
        seed: seeds every model, defense, attack and training subset.
        notes: sentences that say where this grid departs from the paper, printed and stored.
    """

    name: str
    settings: tuple[Setting, ...]
    defenses: tuple[str, ...] = DEFENSES
    attacks: tuple[str, ...] = ATTACKS
    victims: int = 8
    pool: int = 512
    ig_iterations: int = 200
    ig_restarts: int = 1
    dlg_iterations: int = 1
    train_images: int | None = 768
    test_images: int | None = 1000
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 64
    threshold: float = 0.5
    seed: int = 0
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from ..attacks import ATTACK_NAMES

        for name, value, least in (("victims", self.victims, 1), ("pool", self.pool, 0),
                                   ("ig_iterations", self.ig_iterations, 1), ("ig_restarts", self.ig_restarts, 1),
                                   ("dlg_iterations", self.dlg_iterations, 1), ("epochs", self.epochs, 1),
                                   ("batch_size", self.batch_size, 1), ("seed", self.seed, 0)):
            if int(value) < least:
                raise ValueError(f"{name} must be at least {least}, got {value}")
        for name in ("train_images", "test_images"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be at least 1 (or None for all), got {value}")
        if not -1 <= float(self.threshold) <= 1:
            raise ValueError(f"the SSIM threshold must lie in [-1, 1], got {self.threshold}")
        unknown = [a for a in self.attacks if a not in ATTACK_NAMES]
        if unknown:
            raise ValueError(f"unknown attack(s) {unknown}; choose from {list(ATTACK_NAMES)}")
        if not (self.settings and self.defenses and self.attacks):
            raise ValueError("the grid is empty: it needs at least one model, one defense and one attack")

    # -- the cells ----------------------------------------------------------------------------
    def attacks_for(self, setting: Setting) -> tuple[str, ...]:
        """The attacks run in ``setting``: the grid's, restricted by the setting, analytic where it applies."""
        chosen = [a for a in self.attacks if setting.attacks is None or a in setting.attacks]
        if "analytic" in chosen and not analytic_applies(setting.model):
            chosen.remove("analytic")
        return tuple(chosen)

    def cells(self) -> list[Cell]:
        """Every cell, in the order they are run: setting, then defense, then attack."""
        return [Cell(s, d, a) for s in self.settings for d in self.defenses for a in self.attacks_for(s)]

    def budget(self, attack: str) -> tuple[int | None, int | None]:
        """``(iterations, restarts)`` of an attack (``(None, None)`` for the analytic attack)."""
        if attack == "analytic":
            return None, None
        if attack == "ig":
            return self.ig_iterations, self.ig_restarts
        return self.dlg_iterations, 1

    # -- variants -----------------------------------------------------------------------------
    def restrict(self, models: Iterable[str] | None = None, defenses: Iterable[str] | None = None,
                 attacks: Iterable[str] | None = None) -> "Grid":
        """A smaller grid: only the given models, defenses (specs) and attacks (for tests and quick looks).

        Raises:
            ValueError: a name that the grid does not contain.
        """
        settings, chosen_defenses, chosen_attacks = self.settings, self.defenses, self.attacks
        if models is not None:
            wanted = [m.strip().lower() for m in models]
            missing = [m for m in wanted if m not in {s.model for s in self.settings}]
            if missing:
                raise ValueError(f"model(s) {missing} are not in the {self.name} grid; it has "
                                 f"{sorted({s.model for s in self.settings})}")
            settings = tuple(s for s in self.settings if s.model in wanted)
        if defenses is not None:
            wanted = [canonical_defense(d) for d in defenses]
            missing = [d for d in wanted if d not in self.defenses]
            if missing:
                raise ValueError(f"defense(s) {missing} are not in the {self.name} grid; it has {list(self.defenses)}")
            chosen_defenses = tuple(d for d in self.defenses if d in wanted)
        if attacks is not None:
            wanted = [a.strip().lower() for a in attacks]
            missing = [a for a in wanted if a not in self.attacks]
            if missing:
                raise ValueError(f"attack(s) {missing} are not in the {self.name} grid; it has {list(self.attacks)}")
            chosen_attacks = tuple(a for a in self.attacks if a in wanted)
        return dataclasses.replace(self, settings=settings, defenses=chosen_defenses, attacks=chosen_attacks)

    def replace(self, **changes: Any) -> "Grid":
        """A copy with some fields changed (``victims=2``, ``ig_iterations=10``, ...)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The grid as JSON-ready data (stored as ``config.json``; ``--resume`` compares it)."""
        out = dataclasses.asdict(self)
        out["settings"] = [dataclasses.asdict(s) for s in self.settings]
        for s in out["settings"]:
            s["attacks"] = None if s["attacks"] is None else list(s["attacks"])
        for key in ("defenses", "attacks", "notes"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Grid":
        data = dict(data)
        data["settings"] = tuple(
            Setting(**{**s, "attacks": None if s.get("attacks") is None else tuple(s["attacks"])})
            for s in data["settings"]
        )
        for key in ("defenses", "attacks", "notes"):
            data[key] = tuple(data[key])
        return cls(**data)


def analytic_applies(model: str) -> bool:
    """Whether the analytic attack applies to the model: a first fully connected layer with a bias."""
    from ..attacks import first_linear_layer
    from ..models import build_model

    try:
        first_linear_layer(build_model(model, (1, 8, 8), 2, seed=0), (1, 8, 8))
    except ValueError:
        return False
    return True


_QUICK = Grid(
    name="quick",
    settings=(
        Setting("mlp", "fashion-mnist", "fashion-mnist"),
        # The photos have no training split: the CNN's test accuracy comes from the same
        # architecture and defense trained on Fashion-MNIST. iDLG is left out on the CNN: within
        # this profile's budget it does not reconstruct the CNN's victims even without a defense.
        Setting("cnn", "photos", "fashion-mnist", attacks=("ig",)),
    ),
    victims=8,
    pool=512,
    ig_iterations=200,
    ig_restarts=1,
    dlg_iterations=1,
    train_images=768,
    test_images=1000,
    epochs=3,
    notes=(
        "Inverting Gradients runs 200 iterations, 1 restart (the paper: 7,000; chapter 2's quick profile: 1,000).",
        "iDLG runs 1 L-BFGS iteration of up to 20 steps (DLG: 300), on the MLP only: on the CNN this budget "
        "does not reconstruct even undefended victims, and more costs minutes per cell on a CPU.",
        "Models are trained for 3 epochs on 768 Fashion-MNIST training images (36 Adam steps of 64) and "
        "tested on 1,000 test images; the paper trains for hundreds of epochs on the whole split.",
        "The CNN is attacked on 32x32 colour photos (no training split); its test accuracy is that of "
        "the same architecture and defense trained on Fashion-MNIST.",
    ),
)

_FULL = Grid(
    name="full",
    settings=tuple(Setting(m, d, d) for d in ("cifar10", "cifar100", "fashion-mnist") for m in ("mlp", "cnn")),
    victims=128,
    pool=1000,
    ig_iterations=7000,
    ig_restarts=1,
    dlg_iterations=300,
    train_images=None,
    test_images=None,
    epochs=30,
    notes=(
        "Models are trained for 30 epochs on the whole training split (the paper: 300 epochs on CIFAR-10).",
    ),
)

GRIDS: dict[str, Grid] = {"quick": _QUICK, "full": _FULL}


def get_grid(profile: str | None = None) -> Grid:
    """The grid of a profile: ``quick`` or ``full``; ``None`` reads ``$PRECODE_PROFILE`` (default quick).

    Raises:
        ValueError: an unknown profile.
    """
    from ..profiles import get_profile

    return GRIDS[get_profile(profile).name]
