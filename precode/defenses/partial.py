"""Partial perturbation: Gaussian noise only on the gradients computed before PRECODE's sampling.

PRECODE's own noise already hides the gradients of its decoder and of every later layer; what an
adaptive attacker (``ig-omit``, chapter 8) still matches are the gradients computed before the
sampling. The authors' fix (Scheliga et al. 2022, arXiv:2208.04767: ``scheliga2022combining`` in
``book/references.bib``) is to perturb only those, which costs less accuracy than noise on every
gradient.

The rule, on the names of the shared gradients (``{parameter name: gradient}`` in the model's
``named_parameters`` order, which is execution order for this package's models): a gradient is
*before the sampling* when it comes before the first key of the bottleneck's decoder, a key that
contains the path ``precode.decoder.`` (the name :func:`precode.bottleneck.add_precode` gives the
bottleneck). The bottleneck's encoder (``precode.encoder.*``) counts as before the sampling, since
``ig-omit`` matches it too; so every parameter of the layers before the bottleneck and the
encoder get ``N(0, S^2)`` noise, the decoder and every later layer none.

Used in chapter 8 (``book/08_adaptive_attacks.ipynb``).
"""
from __future__ import annotations

import re

from ..errors import InputError
from .base import SharedGradients
from .noise import GaussianNoise, add_gaussian_noise

__all__ = ["PartialGaussianNoise", "gradients_before_sampling"]

_DECODER = re.compile(r"(^|\.)_*precode\.decoder\.")


def gradients_before_sampling(names) -> list[str]:
    """The keys, in order, that come before the first PRECODE decoder key (the encoder included).

    Raises:
        ValueError: no key names a PRECODE decoder (``...precode.decoder.*``): the gradients
            are not those of a model with a PRECODE bottleneck.

    Used in chapter 8.
    """
    names = list(names)
    cut = next((i for i, n in enumerate(names) if _DECODER.search(n)), None)
    if cut is None:
        raise InputError(
            "partial-gaussian perturbs the gradients before PRECODE's sampling, but no gradient name contains "
            "'precode.decoder.' (the model has no PRECODE bottleneck); use gaussian:S for a plain model"
        )
    return names[:cut]


class PartialGaussianNoise(GaussianNoise):
    """Gaussian noise ``N(0, std^2)`` on every entry of the gradients before PRECODE's sampling only.

    Args:
        std: the noise's standard deviation, in the gradient's units (``>= 0``).
            Spec: ``partial-gaussian:STD``.
        seed: seeds the noise.

    Calling it on gradients without a PRECODE decoder raises ``ValueError``
    (:func:`gradients_before_sampling`).

    Used in chapter 8.
    """

    name = "partial-gaussian"

    def __call__(self, grads: SharedGradients) -> SharedGradients:
        # GaussianNoise on the gradients before the sampling (a prefix, so the draws come in the same order)
        noisy = add_gaussian_noise({k: grads[k] for k in gradients_before_sampling(grads)}, self.std, self.generator)
        return {k: noisy.get(k, g) for k, g in grads.items()}
