"""Random streams: who draws which random numbers in a federated experiment.

A seeded experiment must give the same numbers every time, and the attacker must never replay
the randomness of the client it attacks (PRECODE's sampling noise, DP-SGD's noise), which it
would if both were seeded with the same number. Every party therefore draws from its own
stream, derived from the experiment's seed, the stream's name and where it is used (the round,
the client's partition):

============ =========================================================================
stream       what it drives
============ =========================================================================
``client``   a client's local training: PRECODE's ``eps``, gradient noise, DP-SGD noise,
             the stochastic rounding of SecAgg+'s quantisation
``attacker`` the server's reconstruction: Inverting Gradients' starting point and the
             noise its replica of a PRECODE client draws
``model``    the global model's initial weights (the server's choice, known to everyone)
============ =========================================================================

:func:`derive_seed` mixes the three parts with NumPy's ``SeedSequence`` (a hash designed for
exactly this), so two streams never share a seed by accident, unlike ``seed + 1`` offsets.

Used in chapter 10 (``book/10_federated.ipynb``) by the Flower apps and the command line.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError

__all__ = ["STREAMS", "derive_seed", "generator"]

STREAMS = {"model": 0, "client": 1, "attacker": 2}


def derive_seed(seed: int, stream: str, *keys: int) -> int:
    """A 63-bit seed for ``stream`` at ``keys`` (for example the round and the client's partition).

    Args:
        seed: the experiment's seed (``--seed``).
        stream: one of :data:`STREAMS` (``"client"``, ``"attacker"``, ``"model"``).
        keys: non-negative integers that say where the stream is used; different keys give
            independent seeds.

    Raises:
        ValueError: an unknown stream or a negative seed or key.
    """
    if stream not in STREAMS:
        raise InputError(f"unknown random stream {stream!r}; choose one of {list(STREAMS)}")
    parts = [int(seed), STREAMS[stream], *(int(k) for k in keys)]
    if min(parts) < 0:
        raise InputError(f"seeds and keys must be non-negative, got seed {seed} and keys {keys}")
    state = np.random.SeedSequence(parts).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def generator(seed: int, stream: str, *keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` ``(seed, stream, *keys)``."""
    return torch.Generator().manual_seed(derive_seed(seed, stream, *keys))
