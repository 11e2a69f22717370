"""The analytic attack: exact recovery from a first fully connected layer with a bias.

For a layer ``y = W x + b`` applied to one image ``x`` (flattened), the chain rule gives
``dL/dW[i, :] = dL/dy[i] * x`` and ``dL/db[i] = dL/dy[i]``, so every row ``i`` with
``dL/db[i] != 0`` holds the image itself:

    x = dL/dW[i, :] / dL/db[i]          (Phong et al. 2017; Geiping et al. 2020)

No optimisation, no iterations: the server divides two shared tensors. This module uses the
least-squares combination of all rows, ``x = sum_i dL/db[i] dL/dW[i, :] / sum_i dL/db[i]^2``,
which is the same value computed with the least rounding error.

Noise injected *after* that layer cancels in the ratio: on a PRECODE MLP the first layer
``fc1`` sits before the variational bottleneck, so the attack stays exact (Balunović et al.,
ICLR 2022). A model whose first layer is not a ``Linear`` with a bias (a CNN, LeNet) is out of
its reach: :func:`analytic_attack` raises a ``ValueError``.

Batches of ``B > 1`` images: the gradient is the batch mean, so row ``i`` holds a weighted
mean of the images whose pre-activation ``i`` got a non-zero error signal. With ReLU after the
layer, a unit that is active for exactly one image of the batch gives that image exactly; all
the rows of such units coincide, while mixtures differ from row to row. The attack therefore
returns, for each victim, the ``B`` largest groups of identical rows: exact for every image
that is the only active one for at least two units (likely for small batches of a wide layer:
with about half the units active per image, ``B / 2^B`` of the 1024 units of the MLP's
``fc1`` are private to one image, 64 per image for ``B = 4``); for large batches the groups run
out and the remaining reconstructions are mixtures.

Used in chapter 2 (``book/02_attacks.ipynb``) and chapter 6 (PRECODE does not stop it).
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError
from .base import (
    AttackResult,
    check_input_shape,
    model_device,
    prepare_gradients,
    prepare_labels,
    preserved_bottleneck_state,
)
from .labels import infer_labels, last_layer

__all__ = ["analytic_attack", "first_linear_layer", "linear_layer_input"]


def first_linear_layer(model: nn.Module, input_shape: Sequence[int]) -> str:
    """Name of the model's first layer if it is a ``Linear`` with a bias that sees the raw pixels.

    Runs one forward pass and checks that the first layer with parameters is an ``nn.Linear``
    with a bias whose input is the flattened image.

    Raises:
        ValueError: the model does not start with such a layer.
    """
    shape = check_input_shape(input_shape)
    names = {m: n for n, m in model.named_modules()}
    order: list[tuple[nn.Module, torch.Tensor]] = []

    def record(module, args, _output):
        if not order and any(True for _ in module.parameters(recurse=False)):
            order.append((module, args[0]))

    handles = [m.register_forward_hook(record) for m in model.modules()]
    was_training = model.training
    x = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0)).to(model_device(model))
    try:
        model.eval()
        with torch.no_grad(), preserved_bottleneck_state(model):
            model(x)
    except RuntimeError as e:
        raise InputError(f"images of shape {shape} do not fit the model: {e}") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not order:
        raise InputError("the analytic attack needs a model with parameters")
    module, seen = order[0]
    name = names[module]
    if not isinstance(module, nn.Linear) or module.bias is None:
        kind = type(module).__name__ + ("" if not isinstance(module, nn.Linear) else " without a bias")
        raise InputError(
            f"the analytic attack needs a model whose first layer is fully connected with a bias "
            f"(y = Wx + b on the pixels); this model's first layer {name!r} is a {kind}"
        )
    if seen.shape != (2, math.prod(shape)) or not torch.equal(seen, x.flatten(1)):
        raise InputError(
            f"the analytic attack needs the first layer {name!r} to see the raw flattened pixels, "
            f"but its input is transformed first"
        )
    return name


def analytic_attack(
    model: nn.Module,
    shared_gradients: dict[str, torch.Tensor],
    input_shape: Sequence[int],
    *,
    batch_size: int = 1,
    labels: torch.Tensor | Sequence[int] | None = None,
    iterations: int | None = None,
    restarts: int | None = None,
    seed: int = 0,
    progress: bool = True,
    tolerance: float = 1e-3,
) -> AttackResult:
    """Recover every victim's images exactly from the first layer's weight and bias gradients.

    Args:
        model, shared_gradients, input_shape, batch_size: as for
            :func:`~precode.attacks.inverting_gradients`.
        labels: reported as given; ``None`` infers them (iDLG's rule) for the result.
        iterations, restarts, seed, progress: ignored (the attack is a division).
        tolerance: for ``B > 1``, rows whose ratios differ by less than this fraction of their
            size count as the same image.

    Raises:
        ValueError: the model does not start with a fully connected layer with a bias, or the
        gradients do not fit the model.
    """
    del iterations, restarts, seed, progress
    start = time.perf_counter()
    shape = check_input_shape(input_shape)
    layer = first_linear_layer(model, shape)
    targets, n = prepare_gradients(model, shared_gradients)
    num_classes = targets[last_layer(model)[0]].shape[1]
    if labels is None:
        labels = infer_labels(model, targets, batch_size)
    y = prepare_labels(labels, n, batch_size, num_classes)
    # [analytic-division]
    dw = targets[f"{layer}.weight"].double()  # (N, units, pixels)
    db = targets[f"{layer}.bias"].double()  # (N, units)
    images = torch.zeros(n, batch_size, math.prod(shape), dtype=torch.float64, device=dw.device)
    if batch_size == 1:
        for v in (db.square().sum(1) == 0).nonzero().flatten().tolist():
            warnings.warn(f"victim {v}: the first layer's bias gradient is zero; nothing to recover", stacklevel=2)
        images[:, 0] = linear_layer_input(dw, db)
    else:
        for v in range(n):
            images[v] = _separate(dw[v], db[v], batch_size, tolerance)
    # [/analytic-division]
    return AttackResult(
        reconstructions=images.reshape(n * batch_size, *shape).float().clamp(0, 1).cpu(),
        labels=y.reshape(-1),
        loss_history=torch.zeros(0, n),
        seconds=time.perf_counter() - start,
        restart_losses=None,
        attack="analytic",
    )


def linear_layer_input(weight_grad: torch.Tensor, bias_grad: torch.Tensor) -> torch.Tensor:
    """The input of a fully connected layer with a bias, from its gradients for one image.

    Row ``i`` of the weight gradient is entry ``i`` of the bias gradient times the layer's input
    ``h``, whatever the error signal (a PRECODE bottleneck's noise included), so
    ``h = sum_i db_i dW_i / sum_i db_i^2``: exact up to rounding. The analytic attack applies it
    to the first layer; chapter 8 to PRECODE's encoder.

    Args:
        weight_grad: ``(out, in)``, or ``(N, out, in)`` for ``N`` victims.
        bias_grad: ``(out,)``, or ``(N, out)``.

    Returns:
        ``(in,)`` or ``(N, in)``, in float64; zero for a victim whose bias gradient is zero
        (nothing to recover).

    Raises:
        ValueError: shapes that do not belong to one linear layer.
    """
    # [linear-layer-input]
    dw, db = weight_grad.double(), bias_grad.double()
    single = dw.dim() == 2
    if single:
        dw, db = dw[None], db[None]
    if dw.dim() != 3 or db.dim() != 2 or dw.shape[:2] != db.shape:
        raise InputError(f"a linear layer's gradients are weight (out, in) and bias (out,), or (N, out, in) and "
                         f"(N, out); got {tuple(weight_grad.shape)} and {tuple(bias_grad.shape)}")
    out = torch.zeros(dw.shape[0], dw.shape[2], dtype=torch.float64, device=dw.device)
    for v in range(dw.shape[0]):
        norm = db[v].square().sum()
        if norm != 0:
            out[v] = db[v] @ dw[v] / norm
    return out[0] if single else out
    # [/linear-layer-input]


def _separate(dw: torch.Tensor, db: torch.Tensor, batch_size: int, tolerance: float) -> torch.Tensor:
    """``B`` images from one batch's gradients: the largest groups of coinciding row ratios."""
    scale = db.abs().max()
    out = torch.zeros(batch_size, dw.shape[1], dtype=dw.dtype, device=dw.device)
    if scale == 0:
        return out
    rows = (db.abs() > 1e-6 * scale).nonzero().flatten()
    ratios = dw[rows] / db[rows, None]
    norms = ratios.norm(dim=1).clamp_min(1e-12)
    close = torch.cdist(ratios, ratios) <= tolerance * torch.maximum(norms[:, None], norms[None, :])
    free = torch.ones(len(rows), dtype=torch.bool, device=dw.device)
    for b in range(batch_size):
        if not free.any():
            break
        sizes = (close & free[None, :]).sum(1).masked_fill(~free, -1)
        centre = int(sizes.argmax())
        members = close[centre] & free
        weights = db[rows][members]
        out[b] = weights @ dw[rows][members] / weights.square().sum()
        free &= ~members
    return out
