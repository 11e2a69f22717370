"""A defended release, and a training made of nothing but releases: privacy and utility of one system.

Every attack in this book reads a **release**: what one client sends the server in one round, the
gradient of its batch of ``B`` images at the weights the server sent, after the client's defense
(its *mechanism*: none, gradient noise, pruning, DP-SGD, or PRECODE inside the model). A defense's
privacy is measured on a release; its utility must then come from a training in which every update
the server receives is made of exactly such releases, or the two numbers describe two different
systems. (The PRECODE paper's comparison adds the noise once to the mean gradient of a training
batch of 64 images: relative to the signal, 64 times less noise variance than on the release the
attack reads, so its accuracy belongs to another deployment than its attack.)

:func:`train_on_releases` is that training: federated SGD in which, at every step, ``K`` clients
(:attr:`Release.clients`) each share the release of their own ``B`` images, and the server averages
the ``K`` releases and applies Adam (the paper's optimiser and learning rate) to the model. It is
simulated centrally, exactly in distribution:

* no defense, PRECODE: the mean of the ``K`` releases *is* the gradient of the batch of ``K * B``
  images (each image draws its own PRECODE noise either way), so this is ordinary training;
* Gaussian noise of standard deviation ``s`` on every release: the mean of ``K`` independent
  draws is one draw of standard deviation ``s / sqrt(K)`` (``partial-gaussian`` likewise, on the
  layers it perturbs);
* Laplacian noise of scale ``b``: a Laplace(1) variable is the difference of two Exponential(1)
  ones, so the mean of ``K`` of them is ``b (G1 - G2) / K`` with ``G1, G2 ~ Gamma(K, 1)``;
* DP-SGD (clipping norm ``C``, noise multiplier ``z``): each release clips its images' gradients
  to ``C``, sums them and adds ``N(0, (z C)^2)`` before dividing by ``B``; the mean of ``K`` such
  releases is DP-SGD on fixed batches of ``K * B`` images with noise multiplier ``z sqrt(K)``
  (Opacus, :func:`precode.defenses.train_dp`). Its ``epsilon`` is the one each *release* gives its
  images, since the server sees every release, not only their mean: one Gaussian mechanism of
  multiplier ``z`` per epoch (each image is in one release per epoch), composed over the epochs by
  Opacus' RDP accountant, at ``delta = 1e-5`` (no amplification by sampling: the server knows who
  sent each release);
* pruning (the fraction ``p`` of every tensor of every release zeroed): no shortcut, since the
  mean of pruned gradients is not the pruned mean. Each release's gradient is formed (for ``B = 1``
  all of them at once, as per-sample gradients through Opacus' hooks) and pruned on its own, then
  they are averaged: exact, and slow on a CPU (the 1024-wide MLP: about 1 s a step of 64 releases
  on one thread, against 11 ms for a plain step), so the quick profile does not train under it.

Used by the evaluation grid (:func:`precode.evaluation.train_defended`, chapter 7) and chapter 5.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.utils.data import Dataset

from .data import ImageData
from .defenses import DELTA, DPSGD, GaussianNoise, GradientPruning, LaplacianNoise, PartialGaussianNoise, parse_defense
from .defenses.base import TrainingResult
from .defenses.dp import dp_epsilon, per_sample_gradients, train_dp
from .defenses.pruning import prune_gradients
from .errors import InputError
from .federated import compute_shared_gradients
from .training import loss_fn, train

__all__ = ["Release", "train_on_releases", "release_epsilon"]


@dataclasses.dataclass(frozen=True)
class Release:
    """One client's release and the training made of them.

    Attributes:
        defense: the client's gradient mechanism, a spec of :func:`precode.defenses.parse_defense`
            (``"none"``, ``"gaussian:0.1"``, ``"prune:0.9"``, ``"dp:clip=1.0,noise=1.0"``,
            ``"partial-gaussian:0.01"``); PRECODE is part of the model, not of the release.
        images: ``B``, the images one release covers (the client's batch).
        clients: ``K``, the releases the server averages into one step of the training.
    """

    defense: str = "none"
    images: int = 1
    clients: int = 64

    def __post_init__(self) -> None:
        if int(self.images) < 1 or int(self.clients) < 1:
            raise InputError(f"a release covers at least 1 image and a step averages at least 1 release, got "
                             f"images={self.images}, clients={self.clients}")
        object.__setattr__(self, "defense", parse_defense(self.defense).spec)

    def __str__(self) -> str:
        plural = "image" if int(self.images) == 1 else "images"
        mechanism = "no gradient defense" if self.defense == "none" else self.defense
        return (f"each client shares the gradient of {self.images} {plural} under {mechanism}; the server "
                f"averages {self.clients} such releases into every Adam step")


def release_epsilon(defense: str, epochs: int, delta: float = DELTA) -> float | None:
    """``epsilon`` at ``delta`` that DP-SGD releases give each image over ``epochs`` epochs of
    :func:`train_on_releases` (one release per image and epoch, each a Gaussian mechanism of noise
    multiplier ``z``); ``None`` for any other mechanism, ``math.inf`` without noise."""
    mechanism = parse_defense(defense)
    if not isinstance(mechanism, DPSGD):
        return None
    if mechanism.noise_multiplier == 0:
        return math.inf
    return dp_epsilon(mechanism.noise_multiplier, sample_rate=1.0, steps=int(epochs), delta=delta)


def train_on_releases(model: nn.Module, train_data: ImageData | Dataset, test_data: ImageData | Dataset | None = None,
                      *, release: Release, epochs: int, lr: float = 1e-3, seed: int = 0,
                      progress: bool = False) -> TrainingResult:
    """Train ``model`` in place by federated SGD over defended releases (see the module docstring).

    Every step averages ``release.clients`` releases of ``release.images`` images each (batches of
    ``K * B`` training images, reshuffled every epoch from ``seed``) and applies Adam at ``lr``.

    Returns:
        A :class:`~precode.defenses.TrainingResult`; for DP-SGD its ``epsilon`` (and each
        epoch's) is the releases' (:func:`release_epsilon`).

    Raises:
        ValueError: an unknown mechanism, or ``epochs < 1``.
    """
    mechanism = parse_defense(release.defense, seed=seed)
    k, b = int(release.clients), int(release.images)
    batch = k * b
    common = dict(epochs=epochs, lr=lr, batch_size=batch, seed=seed, progress=progress)
    if isinstance(mechanism, DPSGD):
        result = train_dp(model, train_data, test_data, max_grad_norm=mechanism.max_grad_norm,
                          noise_multiplier=mechanism.noise_multiplier * math.sqrt(k), poisson_sampling=False,
                          **common)
        for h in result.history:
            h["epsilon"] = release_epsilon(mechanism.spec, h["epoch"])
        return TrainingResult(history=result.history, epsilon=release_epsilon(mechanism.spec, epochs), delta=DELTA)
    if isinstance(mechanism, GradientPruning):
        step = _PrunedReleases(mechanism.fraction, b)
        history = train(model, train_data, test_data, gradient_step=step, **common)
        return TrainingResult(history=history)
    transform = _mean_of_releases(mechanism, k, seed)
    return TrainingResult(history=train(model, train_data, test_data, gradient_transform=transform, **common))


def _mean_of_releases(mechanism, k: int, seed: int):
    """The noise of ``k`` releases' mean, added to the batch's gradient (``None``: no noise)."""
    if isinstance(mechanism, PartialGaussianNoise):
        return PartialGaussianNoise(mechanism.std / math.sqrt(k), seed=seed)
    if isinstance(mechanism, GaussianNoise):
        return GaussianNoise(mechanism.std / math.sqrt(k), seed=seed)
    if isinstance(mechanism, LaplacianNoise):
        return _MeanLaplacian(mechanism.scale, k, seed)
    if mechanism.name == "none":
        return None
    raise InputError(f"no release training for the defense {mechanism.spec!r}")


class _MeanLaplacian:
    """The mean of ``k`` independent Laplace(``scale``) draws on every gradient entry: ``scale (G1 - G2) / k``."""

    def __init__(self, scale: float, k: int, seed: int):
        self.scale, self.k = float(scale), int(k)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.scale == 0:
            return dict(grads)
        out = {}
        for name, g in grads.items():
            if g is None:
                out[name] = g
                continue
            # Gamma(k, 1) by torch's sampler, seeded through the generator's draws of its uniform stream
            seed = int(torch.randint(2**62, (1,), generator=self.generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                gammas = torch._standard_gamma(torch.full((2, *g.shape), float(self.k)))
            out[name] = g + (self.scale / self.k) * (gammas[0] - gammas[1]).to(g.device, g.dtype)
        return out


class _PrunedReleases:
    """The mean of ``K`` releases, each pruned on its own (``fraction`` of every tensor zeroed).

    Called by :func:`precode.training.train` with the step's model, images and labels, instead of
    a backward pass of the batch; sets every parameter's ``.grad`` and returns the batch's mean loss
    and logits.
    """

    def __init__(self, fraction: float, images_per_release: int):
        self.fraction = float(fraction)
        self.b = int(images_per_release)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        totals = {n: torch.zeros_like(params[n]) for n in names}
        releases = math.ceil(len(y) / self.b)  # the last batch of an epoch may end with a smaller release
        if self.b == 1:  # every image its own release: all of them at once, as per-sample gradients
            per_sample = per_sample_gradients(model, x, y)
            gradients = ({n: per_sample[n][i] for n in names} for i in range(releases))
        else:
            parts = (slice(i * self.b, (i + 1) * self.b) for i in range(releases))
            gradients = (compute_shared_gradients(model, x[part], y[part]) for part in parts)
        for gradient in gradients:
            pruned = prune_gradients(gradient, self.fraction)
            for n in names:
                totals[n] += pruned[n]
        for n in names:
            params[n].grad = (totals[n] / releases).to(memory_format=torch.preserve_format)
        with torch.no_grad():
            logits = model(x)
            loss = loss_fn(model, logits, y)
        return loss, logits
