"""The random streams of one experiment: the client's and the attacker's, derived from one seed.

An experiment has one seed (``--seed`` of ``python -m precode attack``, a grid's ``seed``); the
model's weights come from it directly. The *client's* randomness (PRECODE's sampling noise, a
defense's noise) and the *attacker's* (its starting points, the PRECODE noise it draws when it
replays the client's forward pass) come from two streams derived from it with numpy's
``SeedSequence.spawn``, so they are independent. Seeding both with the experiment's seed would
hand the attacker the client's noise: the first forward pass of the attack would draw the very
samples the client drew, and at the true image the gradient distance would be ~1e-7 instead of
about 1 (``tests/test_seeds.py`` shows both).

Used by ``python -m precode attack`` (``precode.cli.attack``) and the evaluation grid
(``precode.evaluation.cells``, chapters 7 and 8).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .errors import InputError

__all__ = ["Streams", "streams"]


@dataclasses.dataclass(frozen=True)
class Streams:
    """Seeds of an experiment's two random streams (each a non-negative ``int`` below ``2**31``).

    Attributes:
        seed: the experiment's seed (the model's weights).
        client: the clients' randomness: PRECODE's sampling noise and the defense's noise.
        attacker: the server's randomness: the attack's starting points and its own PRECODE noise.
    """

    seed: int
    client: int
    attacker: int


def streams(seed: int) -> Streams:
    """The client's and the attacker's seeds for experiment seed ``seed`` (the same for the same seed).

    Raises:
        ValueError: a negative seed.
    """
    seed = int(seed)
    if seed < 0:
        raise InputError(f"the seed must be a non-negative integer, got {seed}")
    client, attacker = (int(s.generate_state(1)[0] >> 1) for s in np.random.SeedSequence(seed).spawn(2))
    return Streams(seed=seed, client=client, attacker=attacker)
