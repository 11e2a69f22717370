"""Defense specs: one short string names a defense and its parameters.

The command line (``python -m precode train --defense SPEC``) and chapters 4 and 5 name defenses as:

=========================  ==================================================================
``none``                   no defense
``gaussian:S``             Gaussian noise of standard deviation ``S >= 0`` on every entry
``laplacian:S``            Laplacian noise of scale ``b = S >= 0`` on every entry
``prune:P``                zero the fraction ``0 <= P < 1`` of smallest entries of each tensor
``dp:clip=C,noise=Z``      DP-SGD: per-sample clipping to norm ``C > 0``, noise std ``Z * C``
``partial-gaussian:S``     Gaussian noise ``S >= 0`` only before PRECODE's sampling (chapter 8)
=========================  ==================================================================

Used in chapters 4 and 5 (``book/04_defenses.ipynb``, ``book/05_defense_costs.ipynb``) and by
``python -m precode train``.
"""
from __future__ import annotations

import math

from ..errors import InputError
from .base import Defense, NoDefense
from .dp import DPSGD
from .noise import GaussianNoise, LaplacianNoise
from .partial import PartialGaussianNoise
from .pruning import GradientPruning

__all__ = ["parse_defense", "defense_spec", "defense_key", "DEFENSE_FORMS", "DEFENSE_NAMES", "DEFENSE_LEVELS",
           "DP_CLIP"]

DEFENSE_NAMES = ("none", "gaussian", "laplacian", "prune", "dp", "partial-gaussian")
DEFENSE_FORMS = (
    "none, gaussian:S or laplacian:S (noise scale S >= 0), prune:P (fraction 0 <= P < 1), "
    "dp:clip=C,noise=Z (C > 0, Z >= 0) or partial-gaussian:S (S >= 0, PRECODE models only)"
)


def _fail(spec: str, problem: str) -> InputError:
    return InputError(f"invalid defense {spec!r}: {problem}; valid forms are {DEFENSE_FORMS}")


def _number(spec: str, text: str, what: str) -> float:
    text = text.strip()
    if not text:
        raise _fail(spec, f"{what} is missing")
    try:
        value = float(text)
    except ValueError:
        raise _fail(spec, f"{what} {text!r} is not a number") from None
    if math.isnan(value):
        raise _fail(spec, f"{what} is NaN")
    if math.isinf(value):
        raise _fail(spec, f"{what} is infinite")
    return value


DEFENSE_LEVELS: dict[str, tuple[float, ...]] = {
    "gaussian": (1e-4, 1e-3, 1e-2, 1e-1),   # standard deviation sigma, gradient units
    "laplacian": (1e-4, 1e-3, 1e-2, 1e-1),  # Laplace scale b, gradient units
    "prune": (0.5, 0.9, 0.99),              # fraction p of every tensor set to zero
    "dp": (0.01, 0.1, 1.0),                 # noise multiplier z, with the clipping norm DP_CLIP
}
"""The strengths of each gradient-defense family that chapter 4 attacks and chapter 5 trains with:
one definition, so that chapter 5 asks the experiment store for exactly chapter 4's attacks."""

DP_CLIP = 1.0
"""DP-SGD's clipping norm ``C`` in chapters 4 and 5 (``defense_spec("dp", z, clip=DP_CLIP)``)."""


def defense_key(family: str, level: float | None) -> str:
    """The short name of a family's level in chapters 4 and 5's glued values: ``("gaussian", 0.01)``
    -> ``"g1e-2"``, ``("laplacian", 0.1)`` -> ``"l1e-1"``, ``("prune", 0.99)`` -> ``"p0.99"``,
    ``("dp", 0.1)`` -> ``"dp0.1"``, ``("none", None)`` -> ``"none"`` and ``("none, DP budget", None)``
    (chapter 5's undefended training on DP-SGD's images) -> ``"none_dp"``.

    Raises:
        ValueError: an unknown family, or a noise scale that is not a power of ten.
    """
    short = {"none": "none", "none, DP budget": "none_dp", "gaussian": "g", "laplacian": "l", "prune": "p",
             "dp": "dp"}
    if family not in short:
        raise InputError(f"unknown defense family {family!r}; choose one of {sorted(short)}")
    if level is None:
        return short[family]
    if family in ("gaussian", "laplacian"):
        exponent = math.log10(level) if level > 0 else math.nan
        if not math.isfinite(exponent) or abs(exponent - round(exponent)) > 1e-9:
            raise InputError(f"{family} level {level!r} has no short name: it is not a power of ten")
        return f"{short[family]}1e{round(exponent)}"
    return f"{short[family]}{level:g}"


def defense_spec(family: str, level: float | None = None, *, clip: float = 1.0) -> str:
    """The spec of a defense family at one level: ``("gaussian", 0.01)`` -> ``"gaussian:0.01"``,
    ``("dp", 0.1)`` -> ``"dp:clip=1.0,noise=0.1"`` (``level`` is the noise multiplier, ``clip`` the
    clipping norm), ``("none", None)`` -> ``"none"``. The spec is checked (:func:`parse_defense`).

    Used in chapters 4 and 5, which sweep each family's levels.
    """
    name = str(family).strip().lower()
    if name == "none":
        return "none"
    if level is None:
        raise InputError(f"defense family {family!r} needs a level; valid forms are {DEFENSE_FORMS}")
    spec = f"dp:clip={clip},noise={level}" if name == "dp" else f"{name}:{level}"
    parse_defense(spec)
    return spec


def parse_defense(spec: str | Defense, seed: int = 0) -> Defense:
    """Turn a spec such as ``"gaussian:0.01"`` or ``"dp:clip=1.0,noise=1.0"`` into a :class:`Defense`.

    Names are case-insensitive and spaces around the parts are ignored; ``dp``'s two keys may come
    in either order. A :class:`Defense` passed in is returned as it is.

    Args:
        spec: the spec (forms in the module docstring).
        seed: seeds the defense's random generator (its noise).

    Raises:
        ValueError: one sentence naming the problem (unknown name, a missing, malformed,
            NaN or infinite number, a negative scale, a fraction outside ``[0, 1)``, a
            non-positive clipping norm, unknown or repeated ``dp`` keys) and the valid forms.

    Used in chapters 4 and 5 and by ``python -m precode train``.
    """
    if isinstance(spec, Defense):
        return spec
    if not isinstance(spec, str):
        raise InputError(f"a defense spec must be a string, got {type(spec).__name__}; valid forms are {DEFENSE_FORMS}")
    name, colon, arg = spec.strip().partition(":")
    name = name.strip().lower()
    if not name:
        raise _fail(spec, "the defense name is missing")
    if name not in DEFENSE_NAMES:
        raise _fail(spec, f"unknown defense {name!r}")
    if name == "none":
        if colon:
            raise _fail(spec, "'none' takes no parameter")
        return NoDefense(seed=seed)
    if not colon:
        raise _fail(spec, f"{name!r} needs its parameter after a colon")
    if name in ("gaussian", "laplacian", "partial-gaussian"):
        scale = _number(spec, arg, "the noise scale S")
        if scale < 0:
            raise _fail(spec, f"the noise scale S must be >= 0, got {scale}")
        if name == "partial-gaussian":
            return PartialGaussianNoise(scale, seed=seed)
        return GaussianNoise(scale, seed=seed) if name == "gaussian" else LaplacianNoise(scale, seed=seed)
    if name == "prune":
        fraction = _number(spec, arg, "the pruning fraction P")
        if not 0 <= fraction < 1:
            raise _fail(spec, f"the pruning fraction P must be in [0, 1), got {fraction}")
        return GradientPruning(fraction, seed=seed)
    # dp:clip=C,noise=Z
    values: dict[str, float] = {}
    for part in arg.split(","):
        key, eq, text = part.partition("=")
        key = key.strip().lower()
        if not eq or not key:
            raise _fail(spec, f"{part.strip()!r} is not of the form key=value")
        if key not in ("clip", "noise"):
            raise _fail(spec, f"unknown DP-SGD key {key!r} (use clip and noise)")
        if key in values:
            raise _fail(spec, f"the DP-SGD key {key!r} is given twice")
        what = "the clipping norm C" if key == "clip" else "the noise multiplier Z"
        values[key] = _number(spec, text, what)
    missing = [k for k in ("clip", "noise") if k not in values]
    if missing:
        raise _fail(spec, f"DP-SGD needs {' and '.join(missing)}")
    if values["clip"] <= 0:
        raise _fail(spec, f"the clipping norm C must be > 0, got {values['clip']}")
    if values["noise"] < 0:
        raise _fail(spec, f"the noise multiplier Z must be >= 0, got {values['noise']}")
    return DPSGD(values["clip"], values["noise"], seed=seed)
