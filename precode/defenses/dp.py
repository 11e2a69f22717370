"""DP-SGD: per-sample clipping and Gaussian noise, with a privacy budget from Opacus' accountant.

Differentially private SGD (Abadi et al., CCS 2016) bounds what one image can change in an
update, then hides that bounded change in noise:

1. compute the gradient of every sample's own loss (per-sample gradients);
2. clip each sample's gradient, all layers together, to L2 norm at most ``C``
   (``g_i * min(1, C / (||g_i|| + 1e-6))``, Opacus' flat clipping);
3. sum the clipped gradients, add ``N(0, (z * C)^2)`` to every entry, divide by the batch size.

``C`` (``max_grad_norm``) is in the gradient's units (an L2 norm over all the model's
parameters); ``z`` (``noise_multiplier``) is dimensionless: the noise's standard deviation in
units of ``C``. The privacy budget ``epsilon`` at ``delta = 1e-5`` follows from ``z``, the
sampling rate and the number of steps; it comes from Opacus' RDP accountant.

What the attacker sees (:meth:`DPSGD.shared_gradients`, :func:`compute_dp_shared_gradients`):
one release of steps 1 to 3 on the client's batch. The per-sample gradients come from Opacus'
hooks (:class:`opacus.grad_sample.GradSampleHooks`), which record every layer's activations and
backpropagated errors during a single ordinary forward and backward pass of the batch, so the loss
is exactly the client's (:func:`precode.training.loss_fn`: cross-entropy plus, for a PRECODE
model, the KL of its bottleneck, both means over the batch and hence separable per sample) and a
PRECODE bottleneck draws one noise sample per image as in the plain pass.

Calling a :class:`DPSGD` on an already computed gradient dict treats that gradient as the
gradient of a single sample (clip it as a whole, add noise): exact for client batches of one
image, the setting of the attacks in chapters 2 to 6. For larger batches use
:meth:`DPSGD.shared_gradients`, which clips every sample separately.

During training (:func:`train_dp`): Opacus' ``PrivacyEngine.make_private`` on the model, an
Adam optimizer (the paper's optimizer, lr ``1e-3``, so DP-SGD differs from the other defenses'
training only by its privacy mechanism; strictly this is "DP-Adam") and a Poisson-sampled data
loader with expected batch size ``batch_size``. Training clips by Opacus' *ghost clipping*
(Li et al., ICLR 2022; ``grad_sample_mode="ghost"``): the per-sample gradient norms of
``Linear`` and ``Conv2d`` layers come from their activations and errors, then a second backward
pass of the loss reweighted by the clip factors gives the sum of clipped gradients, so no
per-sample gradient is ever stored. The result is the same as clipping stored per-sample
gradients (up to rounding); on the 1024-wide MLP, batches of 64, one CPU thread, a step takes
36 ms instead of 557 ms with hooks (``torch.func``, Opacus' ``functorch`` mode: 564 ms).

Used in chapters 4 and 5 (``book/04_defenses.ipynb``, ``book/05_defense_costs.ipynb``).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data import ImageData
from ..errors import InputError
from ..training import adam, evaluate, loss_fn, seeded, training_loop
from .base import Defense, SharedGradients, TrainingResult, _check_finite

__all__ = [
    "DPSGD",
    "DELTA",
    "per_sample_gradients",
    "clip_per_sample",
    "compute_dp_shared_gradients",
    "train_dp",
    "dp_epsilon",
]

DELTA = 1e-5
"""The ``delta`` at which this book reports ``epsilon``."""

_CLIP_EPS = 1e-6  # Opacus' guard against division by zero in the clip factor


def _check_clip(max_grad_norm: float) -> float:
    c = _check_finite(max_grad_norm, "the clipping norm C")
    if c <= 0:
        raise InputError(f"the clipping norm C must be > 0, got {c}")
    return c


def _check_noise(noise_multiplier: float) -> float:
    z = _check_finite(noise_multiplier, "the noise multiplier")
    if z < 0:
        raise InputError(f"the noise multiplier must be >= 0, got {z}")
    return z


@contextmanager
def _quiet_opacus() -> Iterator[None]:
    """Silence Opacus' notices that do not concern a simulation (secure RNG, accountant orders)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
        warnings.filterwarnings("ignore", message=".*Optimal order is the (largest|smallest) alpha.*")
        warnings.filterwarnings("ignore", message=".*full backward hook.*")
        yield


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def per_sample_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> SharedGradients:
    """The gradient of every sample's own loss: ``{name: tensor (B, *parameter shape)}``.

    One forward and backward pass of the whole batch with Opacus' per-sample-gradient hooks
    attached (removed again afterwards). The loss is :func:`precode.training.loss_fn`, so the mean
    over the batch of the result equals the batch's shared gradient (for a PRECODE model: with the
    bottleneck noise of this very pass). The model's mode and ``.grad`` are left as they were;
    Opacus records only layers in training mode, so the layers it hooks (``Linear``, ``Conv2d``,
    which compute the same in either mode) are flagged as training during the pass.

    Raises:
        ValueError: a batch that is not ``(B, C, H, W)`` with one label per image, or a model
            Opacus cannot compute per-sample gradients for (batch norm, for example).
    """
    from opacus.grad_sample import GradSampleHooks
    from opacus.validators import ModuleValidator

    if images.ndim != 4:
        raise InputError(f"images must be a batch (B, C, H, W), got shape {tuple(images.shape)}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or images.shape[0] == 0:
        raise InputError(f"need a non-empty batch with one label per image: {images.shape[0]} images, "
                         f"labels of shape {tuple(labels.shape)}")
    modes = [m.training for m in model.modules()]
    model.train()  # Opacus' validator insists on training mode; the pass below does not need it
    try:
        errors = ModuleValidator.validate(model, strict=False)
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode
    if errors:
        raise InputError(f"DP-SGD needs per-sample gradients, which Opacus cannot compute for this model: {errors[0]}")
    named = _trainable(model)
    saved_grads = [p.grad for _, p in named]
    hooked = [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
    saved_modes = [m.training for m in hooked]
    for _, p in named:
        p.grad = None
    with _quiet_opacus():
        hooks = GradSampleHooks(model, batch_first=True, loss_reduction="mean")
    try:
        for m in hooked:
            m.training = True
        loss = loss_fn(model, model(images), labels)
        with _quiet_opacus():
            loss.backward()
        missing = [n for n, p in named if getattr(p, "grad_sample", None) is None]
        if missing:
            raise InputError(f"Opacus computed no per-sample gradient for {missing[:3]}; DP-SGD cannot clip this model")
        return {n: p.grad_sample.detach().clone() for n, p in named}
    finally:
        hooks.cleanup()
        for m, mode in zip(hooked, saved_modes):
            m.training = mode
        for (_, p), g in zip(named, saved_grads):
            p.grad = g


def clip_per_sample(per_sample: SharedGradients, max_grad_norm: float) -> tuple[SharedGradients, torch.Tensor]:
    """Clip every sample's gradient, all parameters together, to L2 norm at most ``max_grad_norm``.

    Args:
        per_sample: ``{name: tensor (B, *shape)}`` from :func:`per_sample_gradients`.
        max_grad_norm: ``C``, in the gradient's units.

    Returns:
        The clipped per-sample gradients and the ``(B,)`` norms before clipping. The factor is
        ``min(1, C / (norm + 1e-6))``, as in Opacus, so a clipped norm is just below ``C``.
    """
    c = _check_clip(max_grad_norm)
    tensors = list(per_sample.values())
    batch = tensors[0].shape[0]
    norms = torch.stack([g.reshape(batch, -1).norm(2, dim=1) for g in tensors], dim=1).norm(2, dim=1)
    factor = (c / (norms + _CLIP_EPS)).clamp(max=1.0)
    clipped = {k: g * factor.reshape(-1, *([1] * (g.ndim - 1))).to(g.dtype) for k, g in per_sample.items()}
    return clipped, norms


def _noise_like(g: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    if std == 0:
        return torch.zeros_like(g)
    return std * torch.randn(g.shape, generator=generator, dtype=g.dtype).to(g.device)


def compute_dp_shared_gradients(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    max_grad_norm: float,
    noise_multiplier: float,
    generator: torch.Generator | None = None,
) -> SharedGradients:
    """The gradient a DP-SGD client shares for one batch (what the attacker sees).

    ``(sum_i clip_C(g_i) + N(0, (z * C)^2 I)) / B`` with ``g_i`` the gradient of sample ``i``'s
    loss (:func:`per_sample_gradients`), ``B`` the batch size.

    Args:
        model, images, labels: as for :func:`precode.federated.compute_shared_gradients`.
        max_grad_norm: ``C``, the per-sample clipping norm, in the gradient's units.
        noise_multiplier: ``z``; the noise's standard deviation is ``z * C`` before the division by ``B``.
        generator: source of the noise (a CPU ``torch.Generator``); the global one if ``None``.

    Used in chapter 4.
    """
    c, z = _check_clip(max_grad_norm), _check_noise(noise_multiplier)
    per_sample = per_sample_gradients(model, images, labels)
    clipped, _ = clip_per_sample(per_sample, c)
    batch = images.shape[0]
    return {k: (g.sum(0) + _noise_like(g[0], z * c, generator)) / batch for k, g in clipped.items()}


def dp_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float = DELTA) -> float:
    """``epsilon`` of ``steps`` DP-SGD steps at Poisson sampling rate ``sample_rate``, from Opacus' RDP accountant.

    A single shared gradient of a whole batch is ``sample_rate=1, steps=1``. Returns
    ``math.inf`` without noise. Used in chapter 4.
    """
    from opacus.accountants import RDPAccountant

    z = _check_noise(noise_multiplier)
    if not 0 < sample_rate <= 1:
        raise InputError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if z == 0:
        return math.inf
    accountant = RDPAccountant()
    accountant.history.append((z, float(sample_rate), int(steps)))
    with _quiet_opacus():
        return float(accountant.get_epsilon(delta))


def train_dp(
    model: nn.Module,
    train_data: ImageData | Dataset,
    test_data: ImageData | Dataset | None = None,
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 64,
    max_grad_norm: float = 1.0,
    noise_multiplier: float = 1.0,
    delta: float = DELTA,
    seed: int = 0,
    progress: bool = True,
    poisson_sampling: bool = True,
) -> TrainingResult:
    """Train ``model`` in place with DP-SGD through Opacus and report the privacy spent.

    ``PrivacyEngine(accountant="rdp").make_private(...)`` with ``wrap_model=False`` (the model
    keeps its type; Opacus' hooks are removed at the end), Adam at learning rate ``lr``, Poisson
    sampling at rate ``batch_size / len(train_data)``, flat per-sample clipping to ``C`` and
    noise of standard deviation ``z * C``.

    Args:
        model, train_data, test_data, epochs, lr, batch_size, seed, progress: as for
            :func:`precode.training.train` (``batch_size`` is the *expected* batch size).
        max_grad_norm: ``C``, the per-sample clipping norm, in the gradient's units.
        noise_multiplier: ``z``, the noise's standard deviation in units of ``C``.
        delta: the ``delta`` at which ``epsilon`` is reported (``1e-5``).
        poisson_sampling: Poisson-sampled batches of expected size ``batch_size`` (DP-SGD's
            analysis, the default), or ``False``: shuffled batches of exactly ``batch_size``
            (:func:`precode.release.train_on_releases`, which accounts ``epsilon`` itself; the
            accountant's number then assumes a sampling that did not happen).

    Returns:
        A :class:`~precode.defenses.TrainingResult` whose ``history`` entries also hold the
        ``epsilon`` spent so far, and whose ``epsilon`` is the total (``math.inf`` without noise).
        An empty Poisson batch (possible, rarely) updates nothing but is still counted as a step.
        The global RNG (PRECODE's noise) is seeded for the call; the caller's state is restored.

    Used in chapter 4.
    """
    c, z = _check_clip(max_grad_norm), _check_noise(noise_multiplier)
    if epochs < 1:
        raise InputError(f"epochs must be at least 1, got {epochs}")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if not 0 < delta < 1:
        raise InputError(f"delta must be in (0, 1), got {delta}")
    dataset = train_data.dataset() if isinstance(train_data, ImageData) else train_data
    if len(dataset) == 0:
        raise InputError("cannot train on an empty data set")
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    with seeded(seed, device):
        return _train_dp(model, dataset, test_data, epochs, lr, batch_size, c, z, delta, seed, device, progress,
                         poisson_sampling)


def _train_dp(model: nn.Module, dataset: Dataset, test_data: ImageData | Dataset | None, epochs: int, lr: float,
              batch_size: int, c: float, z: float, delta: float, seed: int, device: torch.device,
              progress: bool, poisson_sampling: bool = True) -> TrainingResult:
    from opacus import PrivacyEngine

    # Opacus draws its noise where the parameters are, so its generator lives on their device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = adam(model.parameters(), lr)
    with _quiet_opacus():
        engine = PrivacyEngine(accountant="rdp")
        hooks, dp_optimizer, dp_criterion, dp_loader = engine.make_private(
            module=model, optimizer=optimizer, criterion=_PerSampleClientLoss(model), data_loader=loader,
            noise_multiplier=z, max_grad_norm=c, noise_generator=torch.Generator(device=device).manual_seed(seed + 1),
            grad_sample_mode="ghost", wrap_model=False, poisson_sampling=poisson_sampling,
        )
    sample_rate = 1 / len(dp_loader)

    def spent() -> float:
        if z == 0:
            return math.inf
        with _quiet_opacus():
            return float(engine.get_epsilon(delta))

    try:
        history = training_loop(
            model, dp_loader, dp_optimizer, dp_criterion, epochs,  # the criterion keeps the loss per sample
            test=None if test_data is None else lambda: evaluate(model, test_data),
            step_context=_quiet_opacus,  # backward: the per-sample norms, then the clipped sum
            on_empty_batch=lambda: engine.accountant.step(noise_multiplier=z, sample_rate=sample_rate),
            epoch_extra=lambda: {"epsilon": spent()}, desc=" (DP-SGD)", progress=progress,
        )
    finally:
        dp_optimizer.zero_grad(set_to_none=True)
        hooks.cleanup()
    return TrainingResult(history=history, epsilon=spent(), delta=delta)


class _PerSampleClientLoss:
    """The client's loss (:func:`precode.training.loss_fn`) as the criterion Opacus' ghost clipping asks for.

    Cross-entropy plus every PRECODE bottleneck's ``beta * KL`` of the last forward pass, per
    sample; Opacus sets :attr:`reduction` to ``"none"`` when it needs the per-sample values.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.reduction = "mean"

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return loss_fn(self.model, logits, labels, reduction=self.reduction)


class DPSGD(Defense):
    """DP-SGD: per-sample clipping to norm ``C`` and Gaussian noise of std ``z * C``.

    Args:
        max_grad_norm: ``C``, the L2 norm (over all parameters) each sample's gradient is clipped
            to, in the gradient's units. Spec: ``dp:clip=C,noise=Z``.
        noise_multiplier: ``z``, dimensionless: the noise's standard deviation in units of ``C``.
        delta: the ``delta`` at which ``epsilon`` is reported, ``1e-5``.
        seed: seeds the noise of the shared gradient.

    Calling it on a gradient dict treats the dict as one sample's gradient (exact for batches of
    one image; see the module docstring); :meth:`shared_gradients` clips per sample in any batch;
    :meth:`train` trains with Opacus and returns ``epsilon``. Do not pass it as
    ``gradient_transform`` to :func:`precode.training.train` (or as a
    :class:`~precode.federated.Client`'s defense for local training): there it would clip each
    batch's mean gradient as a whole, which is not DP-SGD and gives no ``epsilon``.

    Used in chapter 4.
    """

    name = "dp"

    def __init__(self, max_grad_norm: float, noise_multiplier: float, delta: float = DELTA, seed: int = 0):
        self.max_grad_norm = _check_clip(max_grad_norm)
        self.noise_multiplier = _check_noise(noise_multiplier)
        if not 0 < delta < 1:
            raise InputError(f"delta must be in (0, 1), got {delta}")
        self.delta = float(delta)
        super().__init__(seed)

    @property
    def params(self) -> dict[str, Any]:
        return {"max_grad_norm": self.max_grad_norm, "noise_multiplier": self.noise_multiplier}

    @property
    def spec(self) -> str:
        return f"dp:clip={self.max_grad_norm!r},noise={self.noise_multiplier!r}"

    def __call__(self, grads: SharedGradients) -> SharedGradients:
        """Clip the whole gradient (one sample's) to norm ``C`` and add ``N(0, (z * C)^2)`` per entry."""
        present = {k: g for k, g in grads.items() if g is not None}
        if not present:
            return dict(grads)
        norm = torch.stack([g.detach().norm(2) for g in present.values()]).norm(2)
        factor = min(1.0, self.max_grad_norm / (float(norm) + _CLIP_EPS))
        std = self.noise_multiplier * self.max_grad_norm
        return {k: g if g is None else g * factor + _noise_like(g, std, self.generator) for k, g in grads.items()}

    def shared_gradients(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> SharedGradients:
        """What a DP-SGD client shares for its batch: see :func:`compute_dp_shared_gradients`."""
        return compute_dp_shared_gradients(model, images, labels, self.max_grad_norm, self.noise_multiplier,
                                           self.generator)

    def epsilon(self, sample_rate: float = 1.0, steps: int = 1) -> float:
        """``epsilon`` at :attr:`delta` of ``steps`` releases at ``sample_rate`` (one shared batch by default)."""
        return dp_epsilon(self.noise_multiplier, sample_rate, steps, self.delta)

    def train(
        self,
        model: nn.Module,
        train_data: ImageData | Dataset,
        test_data: ImageData | Dataset | None = None,
        epochs: int = 3,
        lr: float = 1e-3,
        batch_size: int = 64,
        seed: int = 0,
        progress: bool = True,
    ) -> TrainingResult:
        """Train with DP-SGD through Opacus (:func:`train_dp`); the result carries ``epsilon``."""
        return train_dp(model, train_data, test_data, epochs=epochs, lr=lr, batch_size=batch_size,
                        max_grad_norm=self.max_grad_norm, noise_multiplier=self.noise_multiplier,
                        delta=self.delta, seed=seed, progress=progress)
