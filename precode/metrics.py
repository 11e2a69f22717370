"""Metrics that say how much of a victim's image an attack recovered.

All image metrics take two batches of images shaped ``(N, C, H, W)`` with pixels in ``[0, 1]``
(reconstructions are clipped to that range first) and return one value per image, so that
chapters can report distributions and not only means:

* :func:`mse`: mean squared error per image (0 is perfect).
* :func:`psnr`: peak signal-to-noise ratio ``10 log10(1 / MSE)`` in dB for a data range of 1;
  exact recoveries (MSE below ``1e-20``) are capped at 200 dB so that means stay finite.
* :func:`ssim`: structural similarity from scikit-image (``data_range=1``, Gaussian-free 7x7
  window, colour images averaged over channels); 1 is perfect, about 0 is unrelated.
* :func:`identification_rate`: threshold-free: the fraction of reconstructions whose nearest
  neighbour (by MSE) in a pool of real images is the victim itself.

Intervals: :func:`mean_ci95` (Student's t), :func:`mean_bootstrap_ci`, and :func:`wilson_interval`
for a success rate (sound at 0 or ``n`` successes).

Scoring batches (evaluation only: these read the victims, which the server does not have):

* :func:`match_to_victims`: which reconstruction of a client batch belongs to which image.
* :func:`match_labels`, :func:`batch_label_recovery`, :func:`distinct_label_fraction`: labels
  recovered from a batch, as a multiset, and the most a rule returning distinct classes can get.

Gradient agreement (how alike two shared gradients are, for example two noise draws):

* :func:`gradient_cosine`: per victim, all layers as one vector; :func:`layer_cosines`: per layer.
* :func:`norm_share`: per victim, the share of the squared norm held by some parameters.

Used in chapters 1 to 9.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats

from .errors import InputError

__all__ = [
    "mse", "psnr", "ssim", "label_accuracy", "nearest_neighbours", "identification_rate", "mean_ci95",
    "wilson_interval", "mean_bootstrap_ci", "PSNR_CAP_DB", "match_to_victims", "match_labels", "batch_label_recovery",
    "distinct_label_fraction", "gradient_cosine", "layer_cosines", "norm_share",
]

PSNR_CAP_DB = 200.0


def _pair(reconstructions: torch.Tensor, originals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.as_tensor(reconstructions).detach().float().cpu()
    o = torch.as_tensor(originals).detach().float().cpu()
    if r.ndim == 3 and o.ndim == 3:
        r, o = r[None], o[None]
    if r.ndim != 4 or r.shape != o.shape:
        raise InputError(
            f"reconstructions and originals must both be (N, C, H, W) of the same shape, got "
            f"{tuple(r.shape)} and {tuple(o.shape)}"
        )
    if r.shape[0] == 0:
        raise InputError("no images to compare (N = 0)")
    if not torch.isfinite(r).all():
        raise InputError("reconstructions contain NaN or infinite pixels; the attack diverged")
    return r.clamp(0, 1), o


def mse(reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, shape ``(N,)``."""
    r, o = _pair(reconstructions, originals)
    return (r - o).pow(2).flatten(1).mean(1)


def psnr(reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image for pixels in ``[0, 1]``, capped at :data:`PSNR_CAP_DB`; shape ``(N,)``."""
    err = mse(reconstructions, originals).double()
    return (10 * torch.log10(1.0 / err.clamp_min(1e-20))).clamp_max(PSNR_CAP_DB).float()


def ssim(reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image (scikit-image), shape ``(N,)``.

    Grey images are compared as 2-D arrays, colour images with ``channel_axis``; the window is
    7x7, so images need at least 7 pixels a side.
    """
    from skimage.metrics import structural_similarity

    r, o = _pair(reconstructions, originals)
    if min(r.shape[2:]) < 7:
        raise InputError(f"SSIM needs images of at least 7x7 pixels, got {tuple(r.shape[2:])}")
    values = []
    for a, b in zip(r.numpy(), o.numpy()):
        if a.shape[0] == 1:
            values.append(structural_similarity(a[0], b[0], data_range=1.0))
        else:
            values.append(structural_similarity(a, b, data_range=1.0, channel_axis=0))
    return torch.tensor(values, dtype=torch.float32)


def label_accuracy(predicted: Sequence[int] | torch.Tensor, true: Sequence[int] | torch.Tensor) -> float:
    """Fraction of predicted labels equal to the true ones."""
    p, t = torch.as_tensor(predicted).flatten(), torch.as_tensor(true).flatten()
    if p.shape != t.shape:
        raise InputError(f"{p.numel()} predicted labels for {t.numel()} true labels")
    if p.numel() == 0:
        raise InputError("no labels to compare")
    return float((p == t).float().mean())


def nearest_neighbours(reconstructions: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Index in ``pool`` of each reconstruction's nearest neighbour by MSE, shape ``(N,)``."""
    r = torch.as_tensor(reconstructions).detach().float().cpu().clamp(0, 1).flatten(1)
    p = torch.as_tensor(pool).detach().float().cpu().flatten(1)
    if r.shape[1] != p.shape[1]:
        raise InputError(f"reconstructions have {r.shape[1]} values each but pool images have {p.shape[1]}")
    if p.shape[0] == 0:
        raise InputError("the pool of real images is empty")
    return torch.cdist(r.double(), p.double()).argmin(dim=1)


def identification_rate(
    reconstructions: torch.Tensor, victims: torch.Tensor, pool: torch.Tensor | None = None
) -> float:
    """Fraction of reconstructions whose nearest real image is their own victim.

    The pool searched is the victims followed by ``pool`` (other real images, for example the
    rest of the test split); reconstruction ``i`` counts as identified when its nearest
    neighbour by MSE is victim ``i``. Needs no threshold; chance level is about
    ``1 / (len(victims) + len(pool))``.
    """
    r, v = _pair(reconstructions, victims)
    candidates = v if pool is None else torch.cat([v, torch.as_tensor(pool).float().cpu()])
    nn_index = nearest_neighbours(r, candidates)
    return float((nn_index == torch.arange(len(r))).float().mean())


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% for ``z = 1.96``); sound for 0 or n successes."""
    if n <= 0:
        raise InputError("a proportion needs at least one trial")
    if not 0 <= successes <= n:
        raise InputError(f"a proportion needs 0 to n successes: got {successes} of {n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_ci95(values: Sequence[float] | torch.Tensor | np.ndarray) -> tuple[float, float]:
    """Mean and half-width of its 95% confidence interval, Student's t: ``t(0.975, n - 1) * SE``.

    ``SE`` is the sample standard deviation over ``sqrt(n)``. With the few victims of the quick
    profile the t quantile matters: 2.36 for 8 values, 2.04 for 32, against the normal 1.96. The
    interval is symmetric and can cross a metric's bound (SSIM's 1) for values piled up near it.
    One value gives a half-width of 0; NaN values are an error.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise InputError("no values to summarise")
    if np.isnan(x).any():
        raise InputError("values contain NaN")
    half = float(stats.t.ppf(0.975, x.size - 1)) * x.std(ddof=1) / math.sqrt(x.size) if x.size > 1 else 0.0
    return float(x.mean()), float(half)


def mean_bootstrap_ci(values, *, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and its 95% percentile-bootstrap interval ``(mean, low, high)``.

    The bootstrap means are means of the data, so the interval never leaves the metric's range
    (SSIM's ``[-1, 1]``, a rate's ``[0, 1]``), unlike :func:`mean_ci95`'s symmetric t interval on a
    few values near a bound. Seeded: the same values give the same interval.

    Raises:
        InputError: no values, or values that are not finite.

    Used in chapter 10 (through ``precode.fl.experiment.mean_ci``).
    """
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    if x.numel() == 0 or not torch.isfinite(x).all():
        raise InputError("need at least one finite value")
    g = torch.Generator().manual_seed(seed)
    means = x[torch.randint(len(x), (resamples, len(x)), generator=g)].mean(1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return float(x.mean()), float(low), float(high)


# -- scoring batches ---------------------------------------------------------------------------

def _batches(n: int, batch_size: int | None) -> range:
    size = n if batch_size is None else int(batch_size)
    if size < 1 or n % size:
        raise InputError(f"{n} images cannot be cut into batches of {batch_size}; give a divisor of {n}")
    return range(0, n, size)


def match_to_victims(reconstructions: torch.Tensor, victims: torch.Tensor,
                     batch_size: int | None = None) -> torch.Tensor:
    """For each victim, the index of its reconstruction: within each client batch of ``batch_size``
    images (``None``: all of them are one batch), the one-to-one assignment of least total squared
    error (the Hungarian method, :func:`scipy.optimize.linear_sum_assignment`).

    The server cannot tell which reconstruction of a batch belongs to which client image; scoring
    pairs them as favourably for the attacker as possible. ``reconstructions[order]`` lines up with
    ``victims``.

    Raises:
        InputError: different shapes, or a batch size that does not divide the number of images.
    """
    from scipy.optimize import linear_sum_assignment

    r, v = _pair(reconstructions, victims)
    order = torch.arange(len(r))
    starts = _batches(len(r), batch_size)
    size = starts.step
    if size == 1:
        return order
    r, v = r.flatten(1).double(), v.flatten(1).double()
    for s in starts:
        cost = torch.cdist(v[s : s + size], r[s : s + size]).square()
        rows, cols = linear_sum_assignment(cost.numpy())
        order[s + torch.as_tensor(rows)] = s + torch.as_tensor(cols)
    return order


def match_labels(predicted: torch.Tensor, true: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Per image: its true label when its batch's predicted labels contain it (counted as a multiset),
    else one of the batch's leftover predictions.

    Raises:
        InputError: different lengths, or a batch size that does not divide them.
    """
    p, t = torch.as_tensor(predicted).flatten(), torch.as_tensor(true).flatten()
    if p.shape != t.shape:
        raise InputError(f"{p.numel()} predicted labels for {t.numel()} true labels")
    out = p.clone()
    for s in _batches(len(t), batch_size):
        pool = p[s : s + batch_size].tolist()
        missing = []
        for i in range(s, s + len(pool)):
            if int(t[i]) in pool:
                pool.remove(int(t[i]))
                out[i] = t[i]
            else:
                missing.append(i)
        for i, label in zip(missing, pool):
            out[i] = label
    return out


def batch_label_recovery(predicted: torch.Tensor, true: torch.Tensor, batch_size: int) -> float:
    """Fraction of images whose label is among the labels predicted for their batch (as a multiset)."""
    return label_accuracy(match_labels(predicted, true, batch_size), true)


def distinct_label_fraction(labels: torch.Tensor, batch_size: int) -> float:
    """The most a label rule that returns distinct classes can recover: the fraction of images whose
    label is not a repeat within its batch."""
    t = torch.as_tensor(labels).flatten()
    return sum(len(set(t[s : s + batch_size].tolist())) for s in _batches(len(t), batch_size)) / len(t)


# -- gradient agreement ------------------------------------------------------------------------

def _stacked(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    if set(a) != set(b):
        raise InputError(f"the two gradients have different parameters: {sorted(set(a) ^ set(b))[:5]}")
    for name in a:
        if a[name].shape != b[name].shape or a[name].ndim < 2:
            raise InputError(f"{name}: need stacked gradients (N, ...) of one shape, got "
                             f"{tuple(a[name].shape)} and {tuple(b[name].shape)}")
    return list(a)


def _cosine(pairs) -> torch.Tensor:
    """Per row, the cosine of two stacked vectors given as pieces ``[(a (N, ...), b (N, ...)), ...]``:
    the inner products and squared norms of the pieces (torch's summation, relative error about
    1e-7 on a million entries) added in float64, divided as
    :func:`torch.nn.functional.cosine_similarity` does (each norm at least 1e-8: 0 for a zero
    vector), which itself took about 7 s for the concatenated gradients of 50 victims of the
    PRECODE MLP, this about 1 s."""
    dot = sq_a = sq_b = 0
    for a, b in pairs:
        a, b = a.flatten(1), b.flatten(1)
        dot = dot + (a * b).sum(1).double()
        sq_a = sq_a + a.square().sum(1).double()
        sq_b = sq_b + b.square().sum(1).double()
    return (dot / (sq_a.sqrt().clamp_min(1e-8) * sq_b.sqrt().clamp_min(1e-8))).float()


def gradient_cosine(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per victim, the cosine similarity of two stacked gradients ``{name: (N, ...)}``, all
    parameters as one vector; shape ``(N,)``."""
    return _cosine([(a[n], b[n]) for n in _stacked(a, b)])


def layer_cosines(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per parameter and victim, the cosine similarity of two stacked gradients: ``{name: (N,)}``."""
    return {n: _cosine([(a[n], b[n])]) for n in _stacked(a, b)}


def norm_share(gradients: dict[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """Per victim, the share of a stacked gradient's squared norm held by the parameters ``names``; ``(N,)``."""
    unknown = [n for n in names if n not in gradients]
    if unknown:
        raise InputError(f"unknown parameter name(s) {unknown}; the gradient has {list(gradients)}")
    total = sum(g.double().square().flatten(1).sum(1) for g in gradients.values())
    return (sum(gradients[n].double().square().flatten(1).sum(1) for n in names) / total).float()

