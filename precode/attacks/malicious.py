"""A malicious server: weights chosen so that PRECODE's sampling does nothing.

An honest-but-curious server sends the global model as it is. A *malicious* server chooses the
weights it sends (Fowl et al. 2022, Boenisch et al. 2023: ``fowl2022robbing``,
``boenisch2023curious`` in ``book/references.bib``). Against PRECODE (:mod:`precode.bottleneck`)
one change is enough: the bottleneck computes ``std = softplus(a)`` from the second half ``a`` of
its encoder's output, so a server that sets that half's weights to 0 and its biases to a large
negative number ``b`` makes ``std = softplus(b)`` (about ``e^b``: 9e-14 for ``b = -30``) for every
input. The client's ``z = mu + eps * std`` is then ``mu`` to within that, its gradient no longer
depends on the noise, and plain Inverting Gradients recovers the images as if there were no
bottleneck. The mean half (``mu``) and every other layer stay as sent, so the model's predictions
in ``eval_mode="mean"`` do not change.

A client can see this: the encoder's rows are zero and their biases far below anything training
produces, and the bottleneck's KL term becomes large. Checking the weights it receives (or fixing
the bottleneck's noise scale on the client) is the defense; the chapter says so.

Used by ``python -m precode attack --server malicious`` and chapter 9.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InputError
from .adaptive import precode_bottleneck

__all__ = ["switch_off_sampling", "SIGMA_BIAS"]

SIGMA_BIAS = -30.0
"""The bias the malicious server gives the encoder's standard-deviation half (``softplus(-30)`` is 9e-14)."""


def switch_off_sampling(model: nn.Module, sigma_bias: float = SIGMA_BIAS) -> float:
    """Change the weights of the model's PRECODE bottleneck, in place, so that it samples (almost) nothing.

    The rows of the encoder that produce the standard deviation get weight 0 and bias
    ``sigma_bias``; the rows of the mean are left as they are.

    Args:
        model: a model with exactly one PRECODE bottleneck (the global model the server sends).
        sigma_bias: the bias of the standard-deviation rows; negative, the more negative the
            smaller the noise.

    Returns:
        The standard deviation every input now gets, ``softplus(sigma_bias)``.

    Raises:
        ValueError: the model has no (or more than one) bottleneck, or ``sigma_bias`` is not a
            finite negative number.
    """
    _name, vb = precode_bottleneck(model, "a malicious server (switching PRECODE's sampling off)")
    if not (math.isfinite(sigma_bias) and sigma_bias < 0):
        raise InputError(f"sigma_bias must be a finite negative number, got {sigma_bias}")
    with torch.no_grad():
        vb.encoder.weight[vb.size:] = 0.0
        vb.encoder.bias[vb.size:] = float(sigma_bias)
    return float(torch.nn.functional.softplus(torch.tensor(float(sigma_bias), dtype=torch.float64)))
