"""The experiment grid of the PRECODE paper: which models, defenses and attacks, at which scale.

A *cell* of the grid is one attack on one model (on one data set) under one defense, run on
the shared gradients of ``N`` victims. A :class:`Grid` lists the cells and their budgets; two
grids come with the package, one per profile (:func:`get_grid`):

* ``quick`` (the default; a 2-core CPU, minutes): the MLP and the CNN on Fashion-MNIST, the data
  they are trained on (the adaptive part's CNN on 32x32 colour photos), 32 victims a cell (the
  adaptive part: 8), two levels a defense family, short attacks, each model trained for two epochs
  on a subset of its defense's releases to measure the test accuracy.
* ``full`` (a GPU): the paper's scale: MLP and CNN on CIFAR-10, CIFAR-100 and Fashion-MNIST,
  128 victims a cell, 7,000 Inverting Gradients iterations, 280 DLG iterations (at most 7,000
  evaluations), training on the whole training split for the full profile's epochs.

Defenses (see chapter 4 for what each does; the full grid runs every level, the quick grid two a
family, on both sides of "stops Inverting Gradients"), within the range Zhu et al. (2019) tried;
every level acts on one client's release, the gradient of its one image:

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
(``precode.attacks.adaptive``): ``ig-omit`` (Inverting Gradients on the gradients before the
sampling only) and ``ig-joint`` (the bottleneck's noise optimised with the image), run only under
defenses with a bottleneck, with Inverting Gradients' budget; ``ig`` and ``idlg`` are not run
against PRECODE's variants, where the plain ``precode`` rows already show them failing. Every
attack is on the *untrained* model with client batches of one image, as in the paper's evaluation,
and the attacker is given the labels (the paper's evaluation, its best case; ``labels``), with
DP-SGD also attacked with the labels inferred (``inferred``). Every model is trained on its
defense's releases (:mod:`precode.release`), so that a row's privacy and its accuracy describe one
system.

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
from ..release import Release
from ..threat import LABELS, ThreatModel, label_rule_of

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
_PART_ROWS = {
    "paper": (PAPER_DEFENSES, PAPER_ATTACKS),
    "adaptive": (("none", PRECODE) + ADAPTIVE_DEFENSES, ("ig", "analytic") + ADAPTIVE_ATTACKS),
}

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
        try:
            return parse_defense(text).spec  # a number may hold a '+' (gaussian:1e+20)
        except ValueError:
            if "+" in text or "@" in text:
                raise InputError(f"invalid defense {text!r}: only PRECODE combines with another defense, as "
                                 "precode+SPEC or precode@LAYER+SPEC (e.g. precode+partial-gaussian:0.01)") from None
            raise
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
        parts: the parts of the grid (:data:`PARTS`, ``paper`` or ``adaptive``) this setting's
            cells belong to (``None``: every part): the quick grid attacks its CNN on Fashion-MNIST,
            the data it is trained on, in the paper's rows and on colour photos in the adaptive rows.
        defenses: the grid's defenses run in this setting (``None``: all of them).
    """

    model: str
    data: str
    train_data: str
    attacks: tuple[str, ...] | None = None
    parts: tuple[str, ...] | None = None
    defenses: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        stray = [p for p in (self.parts or ()) if p not in ("paper", "adaptive")]
        if stray:
            raise InputError(f"a setting belongs to the parts 'paper' and 'adaptive', got {stray}")

    @property
    def label(self) -> str:
        return f"{self.model} on {self.data}"

    def in_part(self, part: str) -> bool:
        """Whether the setting's cells belong to the part ``paper`` or ``adaptive``."""
        return self.parts is None or part in self.parts


WEIGHTS = ("initial", "trained")
"""The weights a cell attacks: the model at initialisation (the paper's evaluation) or after the grid's training."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell: an attack on a model under a defense (``setting`` says which model and data), at
    its initial weights or after the grid's training (``weights``: one of :data:`WEIGHTS`), with the
    victims' labels given to the attacker or inferred by it (``labels``: one of :data:`LABELS`)."""

    setting: Setting
    defense: str
    attack: str
    weights: str = "initial"
    labels: str = "given"

    def __post_init__(self) -> None:
        if self.labels not in LABELS:
            raise InputError(f"a cell's labels are {LABELS}, got {self.labels!r}")
        if self.weights not in WEIGHTS:
            raise InputError(f"a cell attacks the model's weights {WEIGHTS}, got {self.weights!r}")
        if self.weights == "trained" and self.setting.data != self.setting.train_data:
            raise InputError(f"{self.setting.label} is trained on {self.setting.train_data}: its trained model does "
                             f"not take the victims of {self.setting.data}")

    @property
    def key(self) -> tuple[str, str, str, str, str, str]:
        """``(model, data, defense, attack, weights, labels)``: how the CSV files name the cell."""
        return (self.setting.model, self.setting.data, self.defense, self.attack, self.weights, self.labels)


@dataclasses.dataclass(frozen=True)
class Grid:
    """The cells of an evaluation and their budgets.

    Attributes:
        name: ``quick`` or ``full`` (or a restricted variant of one).
        settings: the (model, data) pairs.
        defenses: defense specs (:data:`DEFENSES`).
        attacks: attack names (:data:`ATTACKS`); ``analytic`` runs only where it applies.
        victims: ``N``, victims per cell: the first ``N`` test images, one per client, each
            client's release the gradient of its one image.
        pool: number of further test images (after the victims) searched by the identification
            rate, as far as the data set has them.
        ig_iterations, ig_restarts: Inverting Gradients' budget.
        dlg_iterations: iDLG's L-BFGS iterations (one restart; a victim whose search stalls
            starts again from a fresh point, so every victim spends the whole budget).
        train_images: training images per model (the split's first ones; ``None``: all).
        test_images: test images for ``test_accuracy`` (the split's first ones; ``None``: all).
        epochs: training epochs. Every model is trained on the defense's *releases*
            (:func:`precode.release.train_on_releases`): at every step ``batch_size`` clients each
            share the defended gradient of one image, the release the attacks read, and the server
            applies Adam (``lr``, the paper's optimiser) to their mean; so a row's privacy and its
            accuracy are those of one system.
        threshold: an attack succeeds on a victim when the reconstruction's SSIM with the
            victim is at least this (dimensionless, in ``[-1, 1]``; default 0.5).
        seed: seeds every model, defense, attack and training subset.
        trained: defenses whose models are attacked again with Inverting Gradients after the grid's
            training (cells of ``weights="trained"``), in the settings whose victims come from the
            training data's test split (the model takes them); ``()``: none.
        trained_models: the models whose trained cells run (``None``: every model's).
        labels: the threat model's labels in every cell: ``given`` (the server knows them: the
            paper's evaluation and the attacker's best case, on which every verdict rests) or
            ``inferred`` (read off the gradient, DLG: optimised).
        inferred: defenses also attacked by Inverting Gradients with the labels inferred (cells of
            ``labels="inferred"``, when :attr:`labels` is ``given``): where a defense could win
            by costing the attacker its labels (DP-SGD), the table shows both.
        inferred_models: the models whose :attr:`inferred` cells run (``None``: every model's).
        untrained: defenses whose models this grid does not train (their rows carry no accuracy),
            because training on their releases is too slow at this scale (pruning each release of
            a batch on its own: about 1 s a step of the MLP on a CPU).
        adaptive_training: ``(train_images, epochs, test_images)`` of the adaptive part's trainings
            (:meth:`part`) when they differ from the grid's (``None``: the grid's).
        adaptive_victims: the adaptive part's victims per cell when they differ from the grid's
            (``None``: the grid's).
        attack_defenses: ``((attack, defenses), ...)``: attacks run only under the given defenses (the
            quick grid: iDLG without a defense and with PRECODE; Inverting Gradients covers the rest).
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
    trained_models: tuple[str, ...] | None = None
    labels: str = "given"
    inferred: tuple[str, ...] = ()
    inferred_models: tuple[str, ...] | None = None
    untrained: tuple[str, ...] = ()
    adaptive_training: tuple[int | None, int, int | None] | None = None
    adaptive_victims: int | None = None
    attack_defenses: tuple[tuple[str, tuple[str, ...]], ...] = ()
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
        if self.labels not in LABELS:
            raise InputError(f"a grid's labels are {LABELS}, got {self.labels!r}")
        if self.adaptive_victims is not None and int(self.adaptive_victims) < 1:
            raise InputError(f"adaptive_victims must be at least 1 (or None), got {self.adaptive_victims}")
        for name in ("trained", "inferred", "untrained"):
            stray = [d for d in getattr(self, name) if d not in self.defenses]
            if stray:
                raise InputError(f"{name} defense(s) {stray} are not among the grid's defenses {list(self.defenses)}")
        both = sorted(set(self.trained) & set(self.untrained))
        if both:
            raise InputError(f"defense(s) {both} cannot be both untrained and attacked after training")
        if not (self.settings and self.defenses and self.attacks):
            raise InputError("the grid is empty: it needs at least one model, one defense and one attack")

    # -- the cells ----------------------------------------------------------------------------
    def attacks_for(self, setting: Setting, defense: str = "none") -> tuple[str, ...]:
        """The attacks run in ``setting`` under ``defense``: the grid's, restricted by the setting
        (its attacks, and the rows of its parts), where they apply (:func:`attack_applies`); none
        where the defense does not apply."""
        if not defense_applies(setting.model, defense):
            return ()
        if setting.defenses is not None and defense not in setting.defenses:
            return ()
        if setting.parts is not None:
            rows = [_PART_ROWS[p] for p in setting.parts]
            if not any(defense in defenses for defenses, _ in rows):
                return ()
            allowed = {a for defenses, attacks in rows if defense in defenses for a in attacks}
        else:
            allowed = set(ATTACKS)
        only = dict(self.attack_defenses)
        return tuple(a for a in self.attacks if (setting.attacks is None or a in setting.attacks)
                     and a in allowed and (a not in only or defense in only[a])
                     and attack_applies(setting.model, defense, a))

    def cells(self) -> list[Cell]:
        """Every cell, in the order they are run: setting, then defense, then attack (with the grid's
        :attr:`labels`); then Inverting Gradients with the labels inferred (:attr:`inferred`); then the
        trained models' cells (:attr:`trained`: Inverting Gradients after training, where it applies)."""
        initial = [Cell(s, d, a, labels=self.labels) for s in self.settings for d in self.defenses
                   for a in self.attacks_for(s, d)]
        inferred = [Cell(s, d, "ig", labels="inferred") for s in self.settings for d in self.inferred
                    if self.labels == "given" and "ig" in self.attacks_for(s, d)
                    and (self.inferred_models is None or s.model in self.inferred_models)]
        trained = [Cell(s, d, "ig", "trained", labels=self.labels) for s in self.settings
                   if s.data == s.train_data and (self.trained_models is None or s.model in self.trained_models)
                   for d in self.trained if "ig" in self.attacks_for(s, d)]
        return initial + inferred + trained

    def threat_model(self, defense: str = "none", attack: str = "ig", labels: str | None = None) -> ThreatModel:
        """The threat model of a cell: an honest-but-curious server, the labels given or inferred
        (``labels``, default the grid's; inferred by DLG: optimised), client releases of one image,
        the cell's defense, the grid's seed (whose client and attacker streams the cell uses)."""
        return ThreatModel(server="honest", labels=self.labels if labels is None else labels,
                           label_rule=label_rule_of(attack), batch_size=1, defense=defense, seed=self.seed)

    def training(self) -> str:
        """How every model of the grid is trained, in words: the system whose releases the cells attack
        and whose accuracy the rows report (stored in ``config.json``, printed by the command)."""
        images = "all" if self.train_images is None else f"{self.train_images:,d}"
        tests = "all" if self.test_images is None else f"the first {self.test_images:,d}"
        return (f"training: on each defense's releases (every step {self.batch_size} clients each share the defended "
                f"gradient of 1 image, the server applies Adam at lr {self.lr:g} to their mean), {self.epochs} epochs "
                f"on {images} training images, tested on {tests} test images"
                + (f"; not trained: {', '.join(self.untrained)}" if self.untrained else ""))

    def release(self, defense: str) -> Release:
        """The release a client shares under the grid defense ``defense`` and that its training is
        made of (:class:`precode.release.Release`): the gradient of one image under the name's
        gradient mechanism (PRECODE lives in the model), ``batch_size`` releases a step."""
        return Release(split_defense(defense).gradient, images=1, clients=self.batch_size)

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
        defenses, attacks = _PART_ROWS[key]
        changes: dict[str, Any] = {}
        if key == "adaptive" and self.adaptive_training is not None:
            changes.update(zip(("train_images", "epochs", "test_images"), self.adaptive_training))
        if key == "adaptive" and self.adaptive_victims is not None:
            changes["victims"] = self.adaptive_victims
        chosen = tuple(d for d in self.defenses if d in defenses)
        grid = dataclasses.replace(self, name=f"{self.name}-{key}",
                                   settings=tuple(s for s in self.settings if s.in_part(key)),
                                   defenses=chosen, attacks=tuple(a for a in self.attacks if a in attacks),
                                   trained=self.trained if key == "paper" else (),
                                   inferred=tuple(d for d in self.inferred if d in chosen) if key == "paper" else (),
                                   untrained=tuple(d for d in self.untrained if d in chosen),
                                   adaptive_training=None, adaptive_victims=None, **changes)
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
                                   **{name: tuple(d for d in getattr(self, name) if d in chosen_defenses)
                                      for name in ("trained", "inferred", "untrained")})

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
            for key in ("attacks", "parts", "defenses"):
                s[key] = None if s[key] is None else list(s[key])
        for key in ("defenses", "attacks", "trained", "inferred", "untrained", "notes"):
            out[key] = list(out[key])
        out["attack_defenses"] = [[a, list(d)] for a, d in self.attack_defenses]
        for key in ("trained_models", "inferred_models"):
            out[key] = None if getattr(self, key) is None else list(getattr(self, key))
        if out["adaptive_training"] is None:
            del out["adaptive_training"]  # as grids stored before the field was there
        else:
            out["adaptive_training"] = list(out["adaptive_training"])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        data = dict(data)
        data["settings"] = tuple(
            Setting(**{**s, **{k: None if s.get(k) is None else tuple(s[k]) for k in ("attacks", "parts", "defenses")}})
            for s in data["settings"]
        )
        for key in ("defenses", "attacks", "trained", "inferred", "untrained", "notes"):
            data[key] = tuple(data.get(key, ()))
        data["attack_defenses"] = tuple((a, tuple(d)) for a, d in data.get("attack_defenses", ()))
        for key in ("trained_models", "inferred_models"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
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


DP = "dp:clip=1.0,noise=1.0"

_QUICK = Grid(
    name="quick",
    settings=(
        Setting("mlp", "fashion-mnist", "fashion-mnist"),
        # The paper's rows attack the CNN on the data it is trained on. Pruning and DP-SGD are not run on the CNN
        # here: a cell costs about 25 s at 32 victims, per-release pruning is too slow to train on (see untrained)
        # and DP-SGD's releases cost the MLP most of its accuracy already; the full profile runs both.
        Setting("cnn", "fashion-mnist", "fashion-mnist", attacks=("ig",), parts=("paper",),
                defenses=("none", "gaussian:0.01", "gaussian:0.1", PRECODE)),
        # Beyond the paper (chapter 8): the CNN on 32x32 colour photos (no training split: its test
        # accuracy is that of the same architecture and defense trained on Fashion-MNIST).
        Setting("cnn", "photos", "fashion-mnist", attacks=("ig",) + ADAPTIVE_ATTACKS, parts=("adaptive",)),
    ),
    # Two levels per family, on both sides of "stops Inverting Gradients" where the family has them (a pilot at
    # 32 victims: Gaussian noise 0.01 leaves the MLP's victims reconstructed and half the CNN's, 0.1 stops both;
    # pruning never stops it on the MLP). Dropped: Laplacian noise (the Gaussian's twin at a sqrt(2) larger standard
    # deviation; chapter 4 compares them), the levels that change nothing (noise 0.001, pruning 0.5).
    defenses=("none", "gaussian:0.01", "gaussian:0.1", "prune:0.9", "prune:0.99", DP, PRECODE) + ADAPTIVE_DEFENSES,
    victims=32,
    pool=512,
    ig_iterations=200,
    ig_restarts=1,
    dlg_iterations=8,
    train_images=5000,
    test_images=None,
    epochs=2,
    trained=("none", PRECODE),
    trained_models=("mlp",),
    labels="given",
    inferred=(DP,),
    inferred_models=("mlp",),
    untrained=("prune:0.9", "prune:0.99"),
    adaptive_victims=8,
    attack_defenses=(("idlg", ("none", PRECODE)),),
    notes=(
        "32 victims a cell (the adaptive part: 8, its cells carry no verdict). Inverting Gradients runs 200 "
        "iterations, 1 restart (the paper: 7,000; chapter 2's quick profile: 1,000).",
        "The attacker is given the labels (the paper's evaluation, the attacker's best case); DP-SGD is also "
        "attacked with the labels inferred from its gradient on the MLP, and every cell records how many labels "
        "the gradient would have given away.",
        "iDLG runs 8 L-BFGS iterations of up to 20 inner steps and 25 gradient evaluations each: at most 200 "
        "evaluations, as many as Inverting Gradients' 200 steps (the paper's DLG: 300 iterations); a victim whose "
        "search stalls starts again from a fresh point. It runs on the MLP only, without a defense and with PRECODE.",
        "Every model is trained on its defense's releases (Grid.training says how: 2 epochs on 5,000 Fashion-MNIST "
        "training images, tested on all 10,000 test images). The paper trains for hundreds of epochs.",
        "Pruning is not trained in this profile: pruning each release on its own costs about 1 s a step on this "
        "CPU (its rows carry no accuracy). Pruning and DP-SGD are run on the MLP only.",
        "The adaptive part (chapter 8) attacks the CNN on 32x32 colour photos (no training split); its test "
        "accuracy is that of the same architecture and defense trained on Fashion-MNIST.",
        "The MLP without a defense and with PRECODE is attacked again after that training (the 'trained' rows).",
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
    inferred=(DP,),
    notes=(
        "Models are trained for 30 epochs on the whole training split (the paper: 300 epochs on CIFAR-10), on "
        "their defense's releases (64 clients a step, one image each).",
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
