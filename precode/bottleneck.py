"""PRECODE: the variational bottleneck as a privacy module (Scheliga, Mäder, Seeland, WACV 2022).

The bottleneck encodes its input into the mean ``mu`` and standard deviation ``std`` of a
``K``-dimensional Gaussian, samples ``z = mu + eps * std`` with fresh noise ``eps ~ N(0, I)``
on every forward pass, and decodes ``z`` back to the input's shape. The gradients of the
decoder and of every later layer therefore depend on noise that the server never sees, which
is what stops optimisation attacks (chapter 6). A KL term pulls the code towards ``N(0, I)``.

Follows the paper's public reference implementation (Scheliga et al. 2022, arXiv:2108.04725;
``scheliga2022precode`` in ``book/references.bib``): a single linear
encoder ``Linear(d, 2K)`` without activation, ``std = softplus(.)``, a single linear decoder
``Linear(K, d)``, ``K = 256``, ``beta = 1e-3`` and the KL measured in bits.

Used in chapter 6 (PRECODE) and chapter 8 (adaptive attacks).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError

__all__ = [
    "VariationalBottleneck",
    "kl_divergence_bits",
    "add_precode",
    "bottlenecks",
    "bottleneck_loss",
    "sampling_std",
    "EVAL_MODES",
]

EVAL_MODES = ("sample", "mean")


def kl_divergence_bits(mu: torch.Tensor, std: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """KL divergence of ``N(mu, diag(std^2))`` from ``N(0, I)`` in bits, averaged over the batch.

    ``mean_batch( sum_K -0.5 * (1 + 2 log std - mu^2 - std^2) ) / ln 2``. ``mu`` and ``std``
    have shape ``(batch, K)``. ``reduction="none"`` returns the ``(batch,)`` per-sample values.
    """
    per_sample = (-0.5 * (1 + 2 * torch.log(std) - mu.pow(2) - std.pow(2))).sum(dim=-1) / math.log(2)
    if reduction == "none":
        return per_sample
    if reduction != "mean":
        raise InputError(f"unknown reduction {reduction!r}; choose 'mean' or 'none'")
    return per_sample.mean()


class VariationalBottleneck(nn.Module):
    """The PRECODE variational bottleneck.

    Args:
        in_features: number of input features ``d`` (the input is flattened from the batch
            dimension on and reshaped back on output, so feature maps work too).
        size: the bottleneck size ``K`` (number of Gaussian latent variables), 256 in the paper.
        beta: weight of the KL term in the loss (dimensionless), ``1e-3`` in the paper.
        eval_mode: what the bottleneck does in ``model.eval()``: ``"sample"`` draws
            ``z = mu + eps * std`` as in training (what the reference implementation does), while
            ``"mean"`` uses ``z = mu`` (deterministic predictions, slightly different from the
            reference's test accuracy). Training mode always samples.

    After each forward pass :attr:`kl` holds ``beta * KL`` (bits) of that pass, which
    :func:`bottleneck_loss` adds to the loss, and :attr:`kl_per_sample` the ``(batch,)`` values
    it is the mean of (DP-SGD's ghost clipping needs the loss of every sample). Setting
    :attr:`noise` to a tensor of shape ``(batch, K)`` replaces the random ``eps`` on the
    following forward passes (chapter 8's attacker optimises it); ``None`` (the default) draws
    fresh noise each pass.
    """

    def __init__(self, in_features: int, size: int = 256, beta: float = 1e-3, eval_mode: str = "sample"):
        super().__init__()
        if int(in_features) < 1:
            raise InputError(f"in_features must be positive, got {in_features}")
        if int(size) < 1:
            raise InputError(f"bottleneck size K must be positive, got {size}")
        if not (beta >= 0 and math.isfinite(beta)):
            raise InputError(f"beta must be a finite number >= 0, got {beta}")
        if eval_mode not in EVAL_MODES:
            raise InputError(f"unknown eval_mode {eval_mode!r}; choose one of {list(EVAL_MODES)}")
        self.in_features = int(in_features)
        self.size = int(size)
        self.beta = float(beta)
        self.eval_mode = eval_mode
        self.encoder = nn.Linear(self.in_features, 2 * self.size)
        self.decoder = nn.Linear(self.size, self.in_features)
        self.kl: torch.Tensor | None = None
        self.kl_per_sample: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, std)``, each ``(batch, K)``, for an input batch."""
        h = x.reshape(x.shape[0], -1)
        if h.shape[1] != self.in_features:
            raise InputError(
                f"bottleneck expects {self.in_features} input features per sample, got input of shape "
                f"{tuple(x.shape)} ({h.shape[1]} features)"
            )
        out = self.encoder(h)
        return out[:, : self.size], F.softplus(out[:, self.size :])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, std = self.encode(x)
        if self.training or self.eval_mode == "sample":
            eps = self.noise if self.noise is not None else torch.randn_like(std)
            z = mu + eps * std
        else:
            z = mu
        self.kl_per_sample = self.beta * kl_divergence_bits(mu, std, reduction="none")
        self.kl = self.kl_per_sample.mean()
        return self.decoder(z).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"K={self.size}, beta={self.beta}, eval_mode={self.eval_mode!r}"


def bottlenecks(model: nn.Module) -> list[VariationalBottleneck]:
    """All PRECODE bottlenecks inside ``model``, in registration order."""
    return [m for m in model.modules() if isinstance(m, VariationalBottleneck)]


class _Reached(Exception):
    """Stops a forward pass where the bottleneck's input is known (nothing sampled, no state changed)."""


def sampling_std(model: nn.Module, images: torch.Tensor) -> float | None:
    """The mean standard deviation ``sigma`` of the first PRECODE bottleneck's sampling noise over
    ``images`` and the latent units, at the model's current weights; ``None`` without a bottleneck.

    ``sigma`` sets how much a client's shared gradient depends on its noise draw: about
    ``softplus(0) = 0.69`` at initialisation, and whatever training made of it. The forward pass stops
    at the bottleneck's input: no noise is drawn and the model's state is left as it was.

    Used by the evaluation grid (its ``precode_sigma`` column, chapter 7).
    """
    found = bottlenecks(model)
    if not found:
        return None
    seen: dict[str, torch.Tensor] = {}

    def reached(_module, args):
        seen["x"] = args[0]
        raise _Reached

    handle = found[0].register_forward_pre_hook(reached)
    try:
        with torch.no_grad():
            model(images)
    except _Reached:
        pass
    finally:
        handle.remove()
    with torch.no_grad():
        return float(found[0].encode(seen["x"])[1].mean())


def bottleneck_loss(model: nn.Module) -> torch.Tensor | float:
    """Sum of ``beta * KL`` over every bottleneck's last forward pass (0.0 for a plain model).

    The training loss and the gradient a client shares are ``cross_entropy + bottleneck_loss``.
    """
    total: torch.Tensor | float = 0.0
    for vb in bottlenecks(model):
        if vb.kl is None:
            raise RuntimeError("a PRECODE bottleneck has no KL yet: run a forward pass before asking for the loss")
        total = total + vb.kl
    return total


def _layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def add_precode(
    model: nn.Module,
    before: str = "classifier",
    size: int = 256,
    beta: float = 1e-3,
    eval_mode: str = "sample",
    input_shape: Sequence[int] | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Extend ``model`` in place with a PRECODE bottleneck inserted before the layer ``before``.

    Works on any ``nn.Module`` whose layer ``before`` is a submodule: in a ``nn.Sequential``
    parent the bottleneck becomes a new layer named ``precode`` right before it; elsewhere (for
    example torchvision's ResNet-18, ``before="fc"``) the layer is replaced by
    ``Sequential(precode=bottleneck, layer=original)``. The bottleneck's input size is found by
    running one dummy batch through the model.

    Args:
        model: the model to extend (changed in place and returned).
        before: dotted name of the layer in front of which the bottleneck goes; the final
            classifier by default.
        size: bottleneck size ``K``.
        beta: KL weight.
        eval_mode: ``"sample"`` (reference behaviour) or ``"mean"``, see
            :class:`VariationalBottleneck`.
        input_shape: ``(channels, height, width)`` of the inputs; taken from
            ``model.input_shape`` when omitted.
        seed: if given, the bottleneck's weights are initialised from ``torch.manual_seed(seed)``
            (the global random state is left as it was), so runs are reproducible.

    Returns:
        The same model, with ``model.precode_before`` set to ``before``.

    Raises:
        ValueError: no layer called ``before``, or no input shape known.

    Used in chapters 6 and 8.
    """
    names = _layer_names(model)
    if before not in names:
        shown = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")
        raise InputError(f"cannot insert PRECODE before {before!r}: the model has no such layer. Layers: {shown}")
    if input_shape is None:
        input_shape = getattr(model, "input_shape", None)
    if input_shape is None:
        raise InputError("add_precode needs input_shape=(channels, height, width) for a model without .input_shape")
    target = model.get_submodule(before)

    captured: list[torch.Size] = []
    handle = target.register_forward_pre_hook(lambda _m, args: captured.append(args[0].shape))
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros((2, *tuple(input_shape)), device=device))
    finally:
        handle.remove()
        model.train(was_training)
    if not captured:
        raise InputError(f"layer {before!r} is never called in the model's forward pass; choose another layer")
    in_features = math.prod(captured[0][1:])
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        vb = VariationalBottleneck(in_features, size=size, beta=beta, eval_mode=eval_mode).to(device)

    parent_name, _, child = before.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.Sequential):
        key = "precode"
        while key in parent._modules:
            key = "_" + key
        items: Iterable[tuple[str, nn.Module | None]] = list(parent._modules.items())
        parent._modules.clear()
        for name, module in items:
            if name == child:
                parent._modules[key] = vb
            parent._modules[name] = module
    else:
        setattr(parent, child, nn.Sequential(OrderedDict(precode=vb, layer=target)))
    model.precode_before = before
    return model
