"""Figures the chapters share: one dot per victim with the mean and its 95% interval.

Used in chapters 2 and 6.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .metrics import mean_ci95

__all__ = ["strip_plot", "SSIM_BOUNDS"]

SSIM_BOUNDS = (-1.0, 1.0)
"""The range SSIM can take; an interval drawn for it is clipped to this range."""


def strip_plot(ax, groups: Mapping[str, Sequence[float]], ylabel: str = "", colours: Mapping[str, str] | None = None,
               *, bounds: tuple[float, float] | None = None, title: str | None = None, seed: int = 0):
    """Draw one dot per value for each group (jittered), and its mean with the 95% t interval in black.

    Args:
        ax: the matplotlib axes to draw on.
        groups: ``{label: values}``, one column per label, in order.
        ylabel: the y axis' label.
        colours: ``{label: colour}``; the others get matplotlib's cycle (``C0``, ``C1``, ...).
        bounds: ``(low, high)`` the metric cannot leave (SSIM: :data:`SSIM_BOUNDS`); the interval
            (:func:`precode.metrics.mean_ci95`, symmetric) is drawn clipped to it. ``None``: unclipped.
        title: the axes' title.
        seed: the jitter's seed (the same figure every run).

    Returns:
        ``ax``.

    Raises:
        ValueError: a group without values, or with NaN values.
    """
    rng = np.random.default_rng(seed)
    for i, (name, values) in enumerate(groups.items()):
        v = np.asarray(values, dtype=float)
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=14, alpha=0.7,
                   color=(colours or {}).get(name, f"C{i % 10}"))
        mean, half = mean_ci95(v)
        low, high = mean - half, mean + half
        if bounds is not None:
            low, high = max(low, bounds[0]), min(high, bounds[1])
        ax.errorbar(i + 0.3, mean, yerr=[[mean - low], [high - mean]], fmt="_", color="k", ms=10, capsize=3)
    ax.set_xticks(range(len(groups)), list(groups), fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    return ax
