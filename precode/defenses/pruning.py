"""Gradient pruning: the client zeroes the smallest entries of the gradient it shares.

Zhu et al. (NeurIPS 2019, "Deep Leakage from Gradients", section 6) prune gradients with small
magnitudes to zero and report that DLG fails beyond a pruning ratio of about 20% on their
LeNet; later attacks still succeed at much higher ratios, which chapter 4 tests.

Per layer, not global: every gradient tensor (one per parameter: a weight or a bias) loses the
``round(p * n)`` of its ``n`` entries with the smallest magnitude and keeps its largest ones.
A global threshold would instead wipe out whole tensors whose gradients happen to be small
(biases, the first layer of a deep network), which both hurts training and changes which
layers an attacker can use; per-tensor pruning keeps every layer informative and the fraction
exact in each of them.

``p`` is a fraction in ``[0, 1)``: ``0`` shares everything, ``0.9`` zeroes 90% of every
tensor, ``0.99`` keeps one entry in a hundred.

Used in chapters 4 and 5 (``book/04_defenses.ipynb``, ``book/05_defense_costs.ipynb``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .base import Defense, SharedGradients, _check_finite

__all__ = ["GradientPruning", "prune_gradients"]


def _check_fraction(fraction: float) -> float:
    fraction = _check_finite(fraction, "the pruning fraction p")
    if not 0 <= fraction < 1:
        raise InputError(f"the pruning fraction p must be in [0, 1), got {fraction}")
    return fraction


def _prune_tensor(g: torch.Tensor, fraction: float) -> torch.Tensor:
    n = g.numel()
    k = min(round(fraction * n), n)
    if k == 0:
        return g.clone()
    flat = g.detach().reshape(-1)
    magnitude = flat.abs()
    if flat.device.type == "cpu":
        # The k-th smallest magnitude by introselect (numpy's partition, linear time): on a 1024 x 1024
        # gradient about 8 ms against 10 to 24 ms for torch.topk, a cost paid at every training step.
        threshold = float(np.partition(magnitude.numpy(), k - 1)[k - 1])
        keep = magnitude > threshold
        if int(keep.sum()) == n - k:  # no ties at the threshold: exactly k entries are zeroed
            return (flat * keep).reshape(g.shape)
    flat = flat.clone()
    smallest = torch.topk(magnitude, k, largest=False, sorted=False).indices
    flat[smallest] = 0
    return flat.reshape(g.shape)


def prune_gradients(grads: SharedGradients, fraction: float) -> SharedGradients:
    """Zero, in every gradient tensor, the ``round(fraction * n)`` entries of smallest magnitude.

    Args:
        grads: ``{parameter name: gradient}`` (left unchanged; ``None`` values pass through).
        fraction: the fraction ``p`` of entries to zero in each tensor, in ``[0, 1)``
            (per tensor, see the module docstring). Ties are broken arbitrarily, so exactly
            ``round(p * n)`` entries are set to zero.

    Returns:
        The pruned gradients; the kept entries are unchanged.

    Used in chapter 4.
    """
    fraction = _check_fraction(fraction)
    return {k: g if g is None else _prune_tensor(g, fraction) for k, g in grads.items()}


class GradientPruning(Defense):
    """Gradient pruning: the shared gradient keeps only the largest ``1 - p`` of each tensor.

    Args:
        fraction: ``p``, the fraction of entries zeroed in every gradient tensor, in ``[0, 1)``
            (``0.9``: 90% zeroed). Spec: ``prune:P``.
        seed: unused (pruning is deterministic); accepted like every defense's.

    Used in chapter 4.
    """

    name = "prune"

    def __init__(self, fraction: float, seed: int = 0):
        self.fraction = _check_fraction(fraction)
        super().__init__(seed)

    @property
    def params(self) -> dict[str, Any]:
        return {"fraction": self.fraction}

    def __call__(self, grads: SharedGradients) -> SharedGradients:
        return prune_gradients(grads, self.fraction)
