"""Defenses against gradient leakage: what a client can do to the gradient it shares.

Each defense is a :class:`Defense` that acts on the shared gradient (call it on a dict
``parameter name -> gradient``, or pass it as ``defense=`` to
:func:`precode.federated.compute_shared_gradients`) and trains a model under the same
mechanism (:meth:`Defense.train`, or :func:`train_with_defense`), so chapters 4 and 5 can measure both
how much an attacker still recovers and what the defense costs in accuracy and convergence.

* ``precode.defenses.noise``: Gaussian and Laplacian noise on every gradient entry;
* ``precode.defenses.pruning``: zeroing the smallest entries of every gradient tensor;
* ``precode.defenses.dp``: DP-SGD (per-sample clipping and noise, Opacus, ``epsilon``);
* ``precode.defenses.partial``: Gaussian noise only before PRECODE's sampling (chapter 8);
* ``precode.defenses.spec``: the spec strings (``gaussian:0.01``, ``dp:clip=1,noise=1``, ...).

PRECODE itself is not here: it changes the model, not the gradient (:mod:`precode.bottleneck`).

Used in chapters 4 and 5 (``book/04_defenses.ipynb``, ``book/05_defense_costs.ipynb``).
"""
from __future__ import annotations

from torch import nn
from torch.utils.data import Dataset

from ..data import ImageData
from .base import Defense, NoDefense, TrainingResult
from .dp import (
    DELTA,
    DPSGD,
    clip_per_sample,
    compute_dp_shared_gradients,
    dp_epsilon,
    per_sample_gradients,
    train_dp,
)
from .noise import GaussianNoise, LaplacianNoise, add_gaussian_noise, add_laplacian_noise
from .partial import PartialGaussianNoise, gradients_before_sampling
from .pruning import GradientPruning, prune_gradients
from .spec import DEFENSE_FORMS, DEFENSE_LEVELS, DEFENSE_NAMES, DP_CLIP, defense_key, defense_spec, parse_defense

__all__ = [
    "Defense", "NoDefense", "GaussianNoise", "LaplacianNoise", "GradientPruning", "DPSGD", "TrainingResult",
    "PartialGaussianNoise", "gradients_before_sampling",
    "parse_defense", "defense_spec", "defense_key", "DEFENSE_LEVELS", "DP_CLIP", "train_with_defense",
    "DEFENSE_FORMS", "DEFENSE_NAMES", "DELTA",
    "add_gaussian_noise", "add_laplacian_noise", "prune_gradients",
    "per_sample_gradients", "clip_per_sample", "compute_dp_shared_gradients", "train_dp", "dp_epsilon",
]


def train_with_defense(
    model: nn.Module,
    train_data: ImageData | Dataset,
    test_data: ImageData | Dataset | None = None,
    defense: str | Defense = "none",
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> TrainingResult:
    """Train ``model`` in place under ``defense`` (a :class:`Defense` or a spec string).

    Noise and pruning transform the batch gradient before every Adam step
    (:func:`precode.training.train` with ``gradient_transform``); DP-SGD trains through Opacus
    (:func:`~precode.defenses.train_dp`, Adam as well). Equal seeds give equal results.

    Returns:
        A :class:`TrainingResult`: the per-epoch ``history`` and, for DP-SGD, ``epsilon`` at
        ``delta = 1e-5``.

    Used in chapter 4.
    """
    return parse_defense(defense, seed=seed).train(
        model, train_data, test_data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=progress
    )
