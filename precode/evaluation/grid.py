"""The experiment grid of the PRECODE paper: which models, defenses and attacks, at which scale.

A *cell* of the grid is one attack on one model (on one data set) under one defense, run on
the shared gradients of ``N`` victims. A :class:`Grid` lists the cells and their budgets; two
grids come with the package, one per profile (:func:`get_grid`):

* ``quick`` (the default; a 2-core CPU, under 10 minutes): the MLP on Fashion-MNIST and the
  CNN on 32x32 colour photos, 8 victims a cell, short attacks, each model trained for a few
  epochs on a subset to measure the test accuracy.
* ``full`` (a GPU): the paper's scale: MLP and CNN on CIFAR-10, CIFAR-100 and Fashion-MNIST,
  128 victims a cell, 7,000 Inverting Gradients iterations, 280 DLG iterations (at most 7,000
  evaluations), training on the whole training split for the full profile's epochs.

Defenses (the same for every model; see chapter 4 for what each does). Three levels per family,
chosen to span "no visible effect" to "stops Inverting Gradients" on the untrained MLP
(chapter 4's measurements), within the range Zhu et al. (2019) tried:

=============================  ==================================================================
``none``                       the baseline
``gaussian:0.001 .. 0.1``      Gaussian noise, standard deviation 1e-3, 1e-2, 1e-1 (gradient units)
``laplacian:0.001 .. 0.1``     Laplacian noise, scale b = 1e-3, 1e-2, 1e-1 (gradient units)
``prune:0.5 .. 0.99``          zero 50%, 90%, 99% of every gradient tensor (smallest magnitudes)
``dp:clip=1.0,noise=1.0``      DP-SGD: per-sample clipping to norm 1, noise multiplier 1
``precode``                    PRECODE: a variational bottleneck (K = 256, beta = 1e-3) inserted
                               before the classifier (the paper's placement and defaults)
=============================  ==================================================================

Beyond the paper (chapter 8), PRECODE variants that survive attacks which know the bottleneck:

==================================  ==============================================================
``precode@block2``                  PRECODE placed early: before the CNN's second block (after its
                                    first); only where the model has that layer (the CNN)
``precode+partial-gaussian:0.003``  PRECODE before the classifier, plus Gaussian noise with standard
``precode+partial-gaussian:0.01``   deviation 3e-3 or 1e-2 on the gradients before the sampling only
==================================  ==============================================================

A defense name is ``precode``, ``precode@LAYER``, ``precode+SPEC`` or ``precode@LAYER+SPEC``
(PRECODE before ``LAYER``, the classifier by default, with the gradient defense ``SPEC`` on top),
or any spec of :func:`precode.defenses.parse_defense`.

Attacks: ``ig`` (Inverting Gradients, the paper's attack), ``idlg`` (iDLG: the label from the
gradient, then L-BFGS on the image) and ``analytic`` (exact division, only for models whose first
layer is fully connected with a bias: the MLP); beyond the paper, the attacks that know PRECODE
(:mod:`precode.attacks.adaptive`): ``ig-omit`` (Inverting Gradients on the gradients before the
sampling only) and ``ig-joint`` (the bottleneck's noise optimised with the image), run only under
defenses with a bottleneck, with Inverting Gradients' budget; ``ig`` and ``idlg`` are not run
against PRECODE's variants, where the plain ``precode`` rows already show them failing. Every
attack is on the *untrained* model with client batches of one image, as in the paper's evaluation;
the attacker infers the labels from the shared gradient, as ``python -m precode attack`` does.

Two parts of a grid (:meth:`Grid.part`) split it between the chapters: ``paper`` (the paper's
defenses and attacks, chapter 7) and ``adaptive`` (no defense, PRECODE and its variants against
``ig``, ``analytic``, ``ig-omit`` and ``ig-joint``, chapter 8).

Used by ``python -m precode evaluate``, chapter 7 (``book/07_evaluation.ipynb``) and chapter 8
(``book/08_adaptive_attacks.ipynb``).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

from ..attacks import ATTACK_NAMES, IG_ATTACKS, first_linear_layer
from ..defenses import parse_defense
from ..errors import InputError
from ..models import build_model
from ..profiles import Profile, get_profile
from ..threat import ThreatModel, label_rule_of

__all__ = [
    "Setting", "Grid", "Cell", "GRIDS", "DEFENSES", "ATTACKS", "PAPER_DEFENSES", "PAPER_ATTACKS",
    "ADAPTIVE_DEFENSES", "ADAPTIVE_ATTACKS", "PARTS", "PRECODE", "get_grid", "canonical_defense",
    "split_defense", "GridDefense", "defense_applies", "attack_applies", "WEIGHTS",
]

PRECODE = "precode"
"""The grid's name for PRECODE (a bottleneck with the paper's defaults before the classifier)."""

PAPER_DEFENSES = (
    "none",
    "gaussian:0.001", "gaussian:0.01", "gaussian:0.1",
    "laplacian:0.001", "laplacian:0.01", "laplacian:0.1",
    "prune:0.5", "prune:0.9", "prune:0.99",
    "dp:clip=1.0,noise=1.0",
    PRECODE,
)
ADAPTIVE_DEFENSES = ("precode@block2", "precode+partial-gaussian:0.003", "precode+partial-gaussian:0.01")
DEFENSES = PAPER_DEFENSES + ADAPTIVE_DEFENSES
PAPER_ATTACKS = ("ig", "idlg", "analytic")
ADAPTIVE_ATTACKS = ("ig-omit", "ig-joint")
ATTACKS = PAPER_ATTACKS + ADAPTIVE_ATTACKS
PARTS = ("all", "paper", "adaptive")
"""The parts of a grid (:meth:`Grid.part`): everything, the paper's rows (chapter 7), the adaptive rows (chapter 8)."""

_LAYER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


class GridDefense(NamedTuple):
    """A grid defense name as data (what :func:`split_defense` parses it into, once per name).

    ``at`` is the layer the PRECODE bottleneck goes before (``None``: no bottleneck); ``gradient``
    is the spec of the gradient defense applied on top (``"none"``: none). A tuple, so
    ``at, gradient = split_defense(name)`` also works.
    """

    at: str | None
    gradient: str

    @property
    def precode(self) -> bool:
        """Whether the model holds a PRECODE bottleneck."""
        return self.at is not None


def split_defense(defense: str) -> GridDefense:
    """The :class:`GridDefense` of a canonical defense name: ``(precode_at, gradient defense)``.

    ``"precode"`` -> ``("classifier", "none")``, ``"precode@block2+gaussian:0.01"`` ->
    ``("block2", "gaussian:0.01")``, ``"prune:0.9"`` -> ``(None, "prune:0.9")``. Each name is
    parsed once (cached); the cells and the reports read its fields.
    """
    return _split_defense(str(defense).strip())


@functools.cache
def _split_defense(text: str) -> GridDefense:
    head, plus, rest = text.partition("+")
    name, at, layer = head.partition("@")
    if name.strip().lower() != PRECODE:
        return GridDefense(None, text)
    return GridDefense(layer.strip() if at else "classifier", rest.strip() if plus else "none")


def canonical_defense(spec: str) -> str:
    """The defense's canonical name (``"gaussian:1e-3"`` -> ``"gaussian:0.001"``, ``"PRECODE"`` -> ``"precode"``).

    PRECODE names: ``precode``, ``precode@LAYER`` (the bottleneck before ``LAYER``; ``@classifier``
    is dropped, it is the default), ``precode+SPEC`` and ``precode@LAYER+SPEC`` (a gradient defense
    ``SPEC`` on top of PRECODE; DP-SGD excluded).

    Raises:
        ValueError: not a valid name (see :func:`precode.defenses.parse_defense` for ``SPEC``).
    """
    text = str(spec).strip()
    at, transform = split_defense(text)
    if at is None:
        if "+" in text or "@" in text:
            raise InputError(f"invalid defense {text!r}: only PRECODE combines with another defense, as "
                             "precode+SPEC or precode@LAYER+SPEC (e.g. precode+partial-gaussian:0.01)")
        return parse_defense(text).spec
    if not _LAYER.match(at):
        raise InputError(f"invalid defense {text!r}: after 'precode@' comes a layer name, e.g. precode@block2")
    name = PRECODE if at == "classifier" else f"{PRECODE}@{at}"
    if transform == "none" and "+" not in text:
        return name
    if "+" in transform:
        raise InputError(f"invalid defense {text!r}: PRECODE combines with one gradient defense, not several")
    try:
        inner = parse_defense(transform)
    except ValueError as e:
        raise InputError(f"invalid defense {text!r}: {e}") from None
    if inner.spec == "none" or inner.spec.startswith("dp:"):
        raise InputError(f"invalid defense {text!r}: after 'precode+' comes a gradient defense such as "
                         "gaussian:S, prune:P or partial-gaussian:S (not none, not DP-SGD)")
    return f"{name}+{inner.spec}"


@functools.cache
def _layer_names(model: str) -> frozenset[str]:
    return frozenset(n for n, _ in build_model(model, (3, 32, 32), 10, seed=0).named_modules() if n)


def defense_applies(model: str, defense: str) -> bool:
    """Whether the defense can be applied to the model: its PRECODE layer (if any) exists in the model."""
    at = split_defense(defense).at
    return at is None or at in _layer_names(model)


def attack_applies(model: str, defense: str, attack: str) -> bool:
    """Whether the attack runs on the model under the defense.

    ``analytic`` needs a first fully connected layer with a bias (the MLP); ``ig-omit`` and
    ``ig-joint`` attack a PRECODE bottleneck and need one. The paper's optimisation attacks
    (``ig``, ``idlg``) are not run against PRECODE's variants (a bottleneck elsewhere, or another
    defense on top: :data:`ADAPTIVE_DEFENSES`): each keeps PRECODE's bottleneck, against which they
    already fail (the ``precode`` rows), and the variants are built against the attacks that know it.
    """
    if attack == "analytic":
        return analytic_applies(model)
    if attack in ADAPTIVE_ATTACKS:
        return split_defense(defense).precode
    return not split_defense(defense).precode or defense == PRECODE  # not against a variant of PRECODE


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


WEIGHTS = ("initial", "trained")
"""The weights a cell attacks: the model at initialisation (the paper's evaluation) or after the grid's training."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell: an attack on a model under a defense (``setting`` says which model and data), at
    its initial weights or after the grid's training (``weights``: one of :data:`WEIGHTS`)."""

    setting: Setting
    defense: str
    attack: str
    weights: str = "initial"

    def __post_init__(self) -> None:
        if self.weights not in WEIGHTS:
            raise InputError(f"a cell attacks the model's weights {WEIGHTS}, got {self.weights!r}")
        if self.weights == "trained" and self.setting.data != self.setting.train_data:
            raise InputError(f"{self.setting.label} is trained on {self.setting.train_data}: its trained model does "
                             f"not take the victims of {self.setting.data}")

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """``(model, data, defense, attack, weights)``: how the CSV files name the cell."""
        return (self.setting.model, self.setting.data, self.defense, self.attack, self.weights)


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
        train_images: training images per model (the split's first ones; ``None``: all).
        test_images: test images for ``test_accuracy`` (the split's first ones; ``None``: all).
        epochs: training epochs (Adam, ``lr``, batches of ``batch_size``; the paper's optimiser).
        threshold: an attack succeeds on a victim when the reconstruction's SSIM with the
            victim is at least this (dimensionless, in ``[-1, 1]``; default 0.5).
        seed: seeds every model, defense, attack and training subset.
        trained: defenses whose models are attacked again with Inverting Gradients after the grid's
            training (cells of ``weights="trained"``), in the settings whose victims come from the
            training data's test split (the model takes them); ``()``: none.
        adaptive_training: ``(train_images, epochs, test_images)`` of the adaptive part's trainings
            (:meth:`part`) when they differ from the grid's (``None``: the grid's): chapter 8 compares
            the accuracy of PRECODE's variants, a few points apart, on these trainings; the quick
            grid's train longer than its paper part's and test on the whole test split.
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
    trained: tuple[str, ...] = ()
    adaptive_training: tuple[int | None, int, int | None] | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, value, least in (("victims", self.victims, 1), ("pool", self.pool, 0),
                                   ("ig_iterations", self.ig_iterations, 1), ("ig_restarts", self.ig_restarts, 1),
                                   ("dlg_iterations", self.dlg_iterations, 1), ("epochs", self.epochs, 1),
                                   ("batch_size", self.batch_size, 1), ("seed", self.seed, 0)):
            if int(value) < least:
                raise InputError(f"{name} must be at least {least}, got {value}")
        for name in ("train_images", "test_images"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise InputError(f"{name} must be at least 1 (or None for all), got {value}")
        if not -1 <= float(self.threshold) <= 1:
            raise InputError(f"the SSIM threshold must lie in [-1, 1], got {self.threshold}")
        unknown = [a for a in self.attacks if a not in ATTACK_NAMES]
        if unknown:
            raise InputError(f"unknown attack(s) {unknown}; choose from {list(ATTACK_NAMES)}")
        odd = [d for d in self.defenses if canonical_defense(d) != d]
        if odd:
            raise InputError(f"defense(s) {odd} are not canonical names; write "
                             f"{[canonical_defense(d) for d in odd]}")
        if self.adaptive_training is not None:
            images, epochs, tests = self.adaptive_training
            if any(v is not None and int(v) < 1 for v in (images, tests)) or int(epochs) < 1:
                raise InputError(f"adaptive_training is (train_images >= 1 or None, epochs >= 1, test_images >= 1 "
                                 f"or None), got {self.adaptive_training}")
        stray = [d for d in self.trained if d not in self.defenses]
        if stray:
            raise InputError(f"trained defense(s) {stray} are not among the grid's defenses {list(self.defenses)}")
        if not (self.settings and self.defenses and self.attacks):
            raise InputError("the grid is empty: it needs at least one model, one defense and one attack")

    # -- the cells ----------------------------------------------------------------------------
    def attacks_for(self, setting: Setting, defense: str = "none") -> tuple[str, ...]:
        """The attacks run in ``setting`` under ``defense``: the grid's, restricted by the setting,
        where they apply (:func:`attack_applies`); none where the defense does not apply."""
        if not defense_applies(setting.model, defense):
            return ()
        return tuple(a for a in self.attacks if (setting.attacks is None or a in setting.attacks)
                     and attack_applies(setting.model, defense, a))

    def cells(self) -> list[Cell]:
        """Every cell, in the order they are run: setting, then defense, then attack; then the trained
        models' cells (:attr:`trained`: Inverting Gradients after training, where it applies)."""
        initial = [Cell(s, d, a) for s in self.settings for d in self.defenses for a in self.attacks_for(s, d)]
        trained = [Cell(s, d, "ig", "trained") for s in self.settings if s.data == s.train_data
                   for d in self.trained if "ig" in self.attacks_for(s, d)]
        return initial + trained

    def threat_model(self, defense: str = "none", attack: str = "ig") -> ThreatModel:
        """The threat model of a cell: an honest-but-curious server, labels inferred from the gradient
        (DLG: optimised), client batches of one image, the cell's defense, the grid's seed (whose
        client and attacker streams the cell uses)."""
        return ThreatModel(server="honest", labels="inferred", label_rule=label_rule_of(attack), batch_size=1,
                           defense=defense, seed=self.seed)

    def budget(self, attack: str) -> tuple[int | None, int | None]:
        """``(iterations, restarts)`` of an attack (``(None, None)`` for the analytic attack).

        Inverting Gradients and the attacks built on it (:data:`precode.attacks.IG_ATTACKS`) get
        ``ig_iterations`` and ``ig_restarts``; iDLG and DLG ``dlg_iterations`` and one restart.
        """
        if attack == "analytic":
            return None, None
        if attack in IG_ATTACKS:
            return self.ig_iterations, self.ig_restarts
        return self.dlg_iterations, 1

    def part(self, name: str) -> Grid:
        """A part of the grid (:data:`PARTS`), named ``"<grid>-<part>"``.

        * ``all``: the grid itself;
        * ``paper``: the paper's defenses and attacks (:data:`PAPER_DEFENSES`, :data:`PAPER_ATTACKS`),
          chapter 7;
        * ``adaptive``: no defense, PRECODE and its variants (:data:`ADAPTIVE_DEFENSES`) against
          ``analytic`` and the adaptive attacks (:data:`ADAPTIVE_ATTACKS`), and the first two
          against ``ig`` as well (:func:`attack_applies`), chapter 8.

        Raises:
            ValueError: an unknown part, or a part with no cells in this grid.
        """
        key = str(name).strip().lower()
        if key not in PARTS:
            raise InputError(f"unknown part {name!r}; choose from {list(PARTS)}")
        if key == "all":
            return self
        if key == "paper":
            defenses, attacks = PAPER_DEFENSES, PAPER_ATTACKS
        else:
            defenses, attacks = ("none", PRECODE) + ADAPTIVE_DEFENSES, ("ig", "analytic") + ADAPTIVE_ATTACKS
        training = {}
        if key == "adaptive" and self.adaptive_training is not None:
            training = dict(zip(("train_images", "epochs", "test_images"), self.adaptive_training))
        grid = dataclasses.replace(self, name=f"{self.name}-{key}",
                                   defenses=tuple(d for d in self.defenses if d in defenses),
                                   attacks=tuple(a for a in self.attacks if a in attacks),
                                   trained=self.trained if key == "paper" else (), adaptive_training=None,
                                   **training)
        if not grid.cells():
            raise InputError(f"the {key} part of the {self.name} grid has no cells")
        return grid

    # -- variants -----------------------------------------------------------------------------
    def restrict(self, models: Iterable[str] | None = None, defenses: Iterable[str] | None = None,
                 attacks: Iterable[str] | None = None) -> Grid:
        """A smaller grid: only the given models, defenses (specs) and attacks (for tests and quick looks).

        Raises:
            ValueError: a name that the grid does not contain.
        """
        settings, chosen_defenses, chosen_attacks = self.settings, self.defenses, self.attacks
        if models is not None:
            wanted = [m.strip().lower() for m in models]
            missing = [m for m in wanted if m not in {s.model for s in self.settings}]
            if missing:
                raise InputError(f"model(s) {missing} are not in the {self.name} grid; it has "
                                 f"{sorted({s.model for s in self.settings})}")
            settings = tuple(s for s in self.settings if s.model in wanted)
        if defenses is not None:
            wanted = [canonical_defense(d) for d in defenses]
            missing = [d for d in wanted if d not in self.defenses]
            if missing:
                raise InputError(f"defense(s) {missing} are not in the {self.name} grid; it has {list(self.defenses)}")
            chosen_defenses = tuple(d for d in self.defenses if d in wanted)
        if attacks is not None:
            wanted = [a.strip().lower() for a in attacks]
            missing = [a for a in wanted if a not in self.attacks]
            if missing:
                raise InputError(f"attack(s) {missing} are not in the {self.name} grid; it has {list(self.attacks)}")
            chosen_attacks = tuple(a for a in self.attacks if a in wanted)
        return dataclasses.replace(self, settings=settings, defenses=chosen_defenses, attacks=chosen_attacks,
                                   trained=tuple(d for d in self.trained if d in chosen_defenses))

    def setting(self, model: str, data: str | None = None) -> Setting:
        """The setting of ``model`` (on ``data`` when given, else the grid's first for that model:
        the quick grid's only one; the full grid's CIFAR-10).

        Raises:
            ValueError: the grid has no such setting.
        """
        for s in self.settings:
            if s.model == model and (data is None or s.data == data):
                return s
        raise InputError(f"the {self.name} grid has no setting of model {model!r}" + (f" on {data!r}" if data else "")
                         + f"; it has {[(s.model, s.data) for s in self.settings]}")

    def replace(self, **changes: Any) -> Grid:
        """A copy with some fields changed (``victims=2``, ``ig_iterations=10``, ...)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The grid as JSON-ready data (stored as ``config.json``; ``--resume`` compares it)."""
        out = dataclasses.asdict(self)
        out["settings"] = [dataclasses.asdict(s) for s in self.settings]
        for s in out["settings"]:
            s["attacks"] = None if s["attacks"] is None else list(s["attacks"])
        for key in ("defenses", "attacks", "trained", "notes"):
            out[key] = list(out[key])
        if out["adaptive_training"] is None:
            del out["adaptive_training"]  # as grids stored before the field was there
        else:
            out["adaptive_training"] = list(out["adaptive_training"])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        data = dict(data)
        data["settings"] = tuple(
            Setting(**{**s, "attacks": None if s.get("attacks") is None else tuple(s["attacks"])})
            for s in data["settings"]
        )
        for key in ("defenses", "attacks", "trained", "notes"):
            data[key] = tuple(data.get(key, ()))
        if data.get("adaptive_training") is not None:
            data["adaptive_training"] = tuple(data["adaptive_training"])
        return cls(**data)


@functools.cache
def analytic_applies(model: str) -> bool:
    """Whether the analytic attack applies to the model: a first fully connected layer with a bias."""
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
        # architecture and defense trained on Fashion-MNIST. iDLG is left out on the CNN (not
        # measured in this profile; chapter 7, exercise 3, adds it).
        Setting("cnn", "photos", "fashion-mnist", attacks=("ig",) + ADAPTIVE_ATTACKS),
    ),
    victims=8,
    pool=512,
    ig_iterations=200,
    ig_restarts=1,
    dlg_iterations=8,
    train_images=768,
    test_images=1000,
    epochs=3,
    trained=("none", PRECODE),
    adaptive_training=(5000, 2, None),
    notes=(
        "Inverting Gradients runs 200 iterations, 1 restart (the paper: 7,000; chapter 2's quick profile: 1,000).",
        "iDLG runs 8 L-BFGS iterations of up to 20 inner steps and 25 gradient evaluations each: at most 200 "
        "evaluations, as many as Inverting Gradients' 200 steps (the paper's DLG: 300 iterations). It runs on "
        "the MLP only; the CNN's iDLG row is not measured in this profile (chapter 7, exercise 3).",
        "Models are trained for 3 epochs on 768 Fashion-MNIST training images (36 Adam steps of 64) and "
        "tested on 1,000 test images; the paper trains for hundreds of epochs on the whole split. The adaptive "
        "part (chapter 8) trains for 2 epochs on 5,000 images (157 steps) and tests on the whole test split: "
        "chapter 8 compares its variants' accuracy on these trainings.",
        "The CNN is attacked on 32x32 colour photos (no training split); its test accuracy is that of "
        "the same architecture and defense trained on Fashion-MNIST.",
        "ig-omit and ig-joint run with Inverting Gradients' 200 iterations; chapter 8 reads its attacks from "
        "these cells.",
        "The MLP without a defense and with PRECODE is attacked again after that training (the 'trained' rows); "
        "the CNN's trained model takes Fashion-MNIST, not the photos, so it has no trained rows here.",
    ),
)

_FULL = Grid(
    name="full",
    settings=tuple(Setting(m, d, d) for d in ("cifar10", "cifar100", "fashion-mnist") for m in ("mlp", "cnn")),
    victims=128,
    pool=1000,
    ig_iterations=7000,
    ig_restarts=1,
    dlg_iterations=280,
    train_images=None,
    test_images=None,
    epochs=30,
    trained=("none", PRECODE),
    notes=(
        "Models are trained for 30 epochs on the whole training split (the paper: 300 epochs on CIFAR-10).",
        "iDLG runs 280 L-BFGS iterations of up to 25 gradient evaluations each: at most 7,000, as many as "
        "Inverting Gradients' 7,000 steps (the paper's DLG: 300 iterations).",
    ),
)

GRIDS: dict[str, Grid] = {"quick": _QUICK, "full": _FULL}


def get_grid(profile: str | Profile | None = None) -> Grid:
    """The grid of a profile: ``quick`` or ``full`` (a name or a :class:`~precode.profiles.Profile`);
    ``None`` reads ``$PRECODE_PROFILE`` (default quick).

    Raises:
        ValueError: an unknown profile.
    """
    if isinstance(profile, Profile):
        profile = profile.name
    return GRIDS[get_profile(profile).name]
