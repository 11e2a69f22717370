"""iDLG's label rule: read the victims' labels off the last layer's shared gradient.

With softmax cross-entropy, the gradient of the loss with respect to the logits of one image is
``p - onehot(y)``: negative for the true class only, positive for every other class. The last
layer ``z = W h + b`` passes this sign on:

* bias gradient: ``dL/db = p - onehot(y)``, so the true class is ``argmin dL/db`` (always);
* weight gradient: ``dL/dW[k, :] = (p_k - [k = y]) h``, so when the features ``h`` are
  non-negative (after a ReLU or sigmoid) the row of the true class is the only one with a
  negative sum: ``argmin_k sum_j dL/dW[k, j]`` (Zhao et al., 2020).

For a client batch of ``B > 1`` images the gradients are averaged, and the classes present in
the batch are the ones with negative entries; the rule returns the ``B`` most negative classes.
That is exact when the ``B`` labels are distinct (a class that occurs twice cannot be counted
this way) and for an untrained or moderately trained model (confident predictions shrink
``p - onehot(y)`` towards zero).

Used in chapter 2 (``book/02_attacks.ipynb``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from .base import prepare_gradients

__all__ = ["infer_labels", "last_layer", "LABEL_SOURCES"]

LABEL_SOURCES = ("auto", "bias", "weight")


def last_layer(model: nn.Module) -> tuple[str, str | None]:
    """Names of the last layer's weight and bias parameters (the bias is ``None`` if it has none).

    The last layer is the last trainable two-dimensional weight (``classifier.weight`` in the
    book's models); its bias is the one-dimensional parameter of the same layer.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    weights = [n for n, p in params if p.ndim == 2]
    if not weights:
        raise InputError("the label rule needs a model whose last layer is fully connected (a 2-D weight)")
    weight = weights[-1]
    prefix = weight[: -len("weight")] if weight.endswith("weight") else None
    shapes = dict(params)
    bias = f"{prefix}bias" if prefix is not None else None
    if bias not in shapes or shapes[bias].shape != (shapes[weight].shape[0],):
        bias = None
    return weight, bias


def infer_labels(
    model: nn.Module,
    shared_gradients: dict[str, torch.Tensor],
    batch_size: int = 1,
    source: str = "auto",
) -> torch.Tensor:
    """The labels of each victim's batch, read from the last layer's shared gradient (iDLG).

    Args:
        model: the global model.
        shared_gradients: one victim's gradients, or ``N`` victims' stacked ones.
        batch_size: images per victim ``B``.
        source: ``"bias"`` (argmin of the bias gradient: exact for any features), ``"weight"``
            (argmin of the weight gradient's row sums: exact when the last layer's inputs are
            non-negative, iDLG's rule) or ``"auto"`` (the bias when the last layer has one and
            its gradient has a negative entry, else the weight rule: a pruned or zeroed bias
            gradient does not fool it).

    Returns:
        ``(N * B,)`` labels; for ``B > 1`` the classes of each victim are sorted from the most
        negative gradient entry to the least.

    Raises:
        ValueError: gradients that do not fit the model, an unknown source, a batch size
        larger than the number of classes, or a last-layer gradient that is all zero.
    """
    if source not in LABEL_SOURCES:
        raise InputError(f"unknown label source {source!r}; choose one of {list(LABEL_SOURCES)}")
    targets, _ = prepare_gradients(model, shared_gradients)
    weight, bias = last_layer(model)
    if source == "bias" and bias is None:
        raise InputError(f"the last layer ({weight}) has no bias; use source='weight'")
    # [label-rule]
    use_bias = bias is not None and source in ("auto", "bias")
    row_sums = targets[weight].sum(dim=2)  # (N, classes)
    scores = targets[bias] if use_bias else row_sums
    if not 1 <= batch_size <= scores.shape[1]:
        raise InputError(
            f"batch_size must be between 1 and the number of classes ({scores.shape[1]}) for the label rule, "
            f"got {batch_size}"
        )
    if source == "auto" and use_bias:
        # A bias gradient without a negative entry carries no label (pruning zeroes all of a small
        # bias: round(0.99 * 10) = 10 entries); argmin would return class 0 for every victim.
        # Those victims fall back to the weight rule.
        silent = (scores < 0).sum(dim=1) == 0
        scores = torch.where(silent[:, None], row_sums, scores)
    empty = (scores == 0).all(dim=1)
    if bool(empty.any()):
        raise InputError(
            f"the last layer's shared gradient ({bias if source == 'bias' else weight}) is all zero for victim(s) "
            f"{torch.nonzero(empty).flatten().tolist()[:5]}: the labels cannot be read off it; give the labels"
        )
    return scores.argsort(dim=1, stable=True)[:, :batch_size].reshape(-1).cpu()
    # [/label-rule]
