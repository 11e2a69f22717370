"""The honest-but-curious server: it aggregates faithfully and reconstructs what it received.

The server of chapter 10 runs FedAvg exactly as Flower's strategy does (``precode.fl.flower``),
and in addition, every round, attacks each update it received (or, behind secure aggregation,
the one aggregate it can see). :class:`CuriousServer` is that curiosity in plain PyTorch, so the
Flower strategy, the tests and the chapter share it:

* :meth:`CuriousServer.remember` keeps the global weights the server sent in a round;
* :meth:`CuriousServer.attack_updates` turns each client's returned weights into its update
  and reconstructs every client's images in one batched attack;
* :meth:`CuriousServer.attack_aggregate` does the same for the mean of several clients' updates.

What it knows is :data:`THREAT_MODEL`. Its randomness (Inverting Gradients' starting point and
the noise its replica of a PRECODE client draws) comes from the ``attacker`` stream of
``precode.fl.streams``, never from a client's.

Used in chapter 10 (``book/10_federated.ipynb``) and by ``python -m precode federate``.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..attacks.updates import (
    UPDATE_ATTACK_NAMES,
    reconstruct_from_updates,
    weight_update,
)
from ..errors import InputError
from .streams import derive_seed

__all__ = ["THREAT_MODEL", "CuriousServer", "Reconstruction"]

THREAT_MODEL = (
    "Threat model: honest-but-curious server. It runs FedAvg faithfully and knows the model's architecture, "
    "the global weights it sent, and the clients' local steps E, batch size B and learning rate (it set them "
    "in the round's configuration). It does not know the clients' images, labels or random numbers. "
    "Labels are inferred from each update (iDLG's rule on the last layer); behind secure aggregation, where "
    "one aggregate mixes many clients' images, possibly of the same class, the attacker is handed the true labels."
)


@dataclasses.dataclass
class Reconstruction:
    """What the server reconstructed from one update (or one aggregate) in one round.

    Attributes:
        server_round: the round (1-based).
        clients: the partitions whose update was attacked: one for a client's own update, all of
            the round's clients for an aggregate. (The experiment knows the partitions; the server
            only needs to know how many clients an aggregate mixes.)
        images: ``(len(clients) * B, C, H, W)`` reconstructions in ``[0, 1]``, in the attack's
            order (match them to the originals before scoring).
        labels: ``(len(clients) * B,)`` labels the attack inferred or was given; ``-1``: unknown.
        labels_given: whether the attacker was handed the true labels.
        attack: ``"analytic"`` or ``"ig"``.
        seconds: this update's share of the batched attack's wall-clock time.
        distance: the final gradient distance of the update attack (``None`` for ``analytic``).
        initial_distance: the distance at the first iteration (``None`` for ``analytic``), to
            check that the optimisation made progress.
        distance_history: the distance at every iteration (``None`` for ``analytic``).
    """

    server_round: int
    clients: tuple[int, ...]
    images: torch.Tensor
    labels: torch.Tensor
    labels_given: bool
    attack: str
    seconds: float
    distance: float | None = None
    initial_distance: float | None = None
    distance_history: torch.Tensor | None = None


class CuriousServer:
    """The server's curiosity: reconstruct the clients' images from the updates it receives.

    Args:
        model: the global model's architecture (its weights are replaced by what was sent).
        input_shape: ``(C, H, W)`` of the clients' images.
        attack: ``"analytic"`` or ``"ig"`` (``precode.attacks.updates.reconstruct_from_updates``).
        batch_size: ``B``, images per client (the server's configuration).
        local_steps: ``E``, the clients' local SGD steps (the server's configuration).
        lr: the clients' learning rate (the server's configuration).
        seed: the experiment's seed; the attacker draws from its own stream derived from it.
        iterations, restarts: the Inverting Gradients budget (default: the profile's).
        options: passed to the attack (for ``ig``: ``lr``, ``tv``, ...).

    Used in chapter 10.
    """

    THREAT = THREAT_MODEL

    def __init__(self, model: nn.Module, input_shape: Sequence[int], *, attack: str, batch_size: int,
                 local_steps: int, lr: float, seed: int = 0, iterations: int | None = None,
                 restarts: int | None = None, **options):
        if str(attack).lower() not in UPDATE_ATTACK_NAMES:
            raise InputError(f"unknown update attack {attack!r}; choose one of {list(UPDATE_ATTACK_NAMES)}")
        self.model = copy.deepcopy(model)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.attack = str(attack).lower()
        self.batch_size, self.local_steps, self.lr = int(batch_size), int(local_steps), float(lr)
        self.seed, self.iterations, self.restarts, self.options = int(seed), iterations, restarts, options
        self.sent: dict[int, dict[str, torch.Tensor]] = {}
        self.reconstructions: list[Reconstruction] = []
        self.aggregates: dict[int, dict[str, torch.Tensor]] = {}  # what secure aggregation let it see

    def __repr__(self) -> str:
        return (f"CuriousServer(attack={self.attack!r}, E={self.local_steps}, B={self.batch_size}, lr={self.lr})\n"
                f"{self.THREAT}")

    def remember(self, server_round: int, weights: Mapping[str, torch.Tensor]) -> None:
        """Keep the global weights sent to the clients in ``server_round``."""
        self.sent[int(server_round)] = {k: torch.as_tensor(v).detach().clone() for k, v in weights.items()}

    def _global_model(self, server_round: int) -> nn.Module:
        if server_round not in self.sent:
            raise InputError(f"the server sent no weights in round {server_round}; call remember() first")
        self.model.load_state_dict(self.sent[server_round])
        return self.model

    def _attack(self, server_round: int, received: Sequence[Mapping[str, torch.Tensor]], clients: int,
                labels: torch.Tensor | None):
        model = self._global_model(server_round)
        per_update = [weight_update(self.sent[server_round], r, model) for r in received]
        stacked = {n: torch.stack([u[n] for u in per_update]) for n in per_update[0]}
        result = reconstruct_from_updates(
            self.attack, model, stacked, self.input_shape, self.batch_size, labels, client_lr=self.lr,
            local_steps=self.local_steps, clients=clients, iterations=self.iterations, restarts=self.restarts,
            seed=derive_seed(self.seed, "attacker", server_round), **self.options,
        )
        return result

    def _records(self, server_round, groups, result, labels_given) -> list[Reconstruction]:
        per = len(result.reconstructions) // len(groups)
        history = result.loss_history
        out = []
        for v, clients in enumerate(groups):
            rows = slice(v * per, (v + 1) * per)
            out.append(Reconstruction(
                server_round=int(server_round), clients=tuple(int(c) for c in clients),
                images=result.reconstructions[rows], labels=result.labels[rows], labels_given=labels_given,
                attack=self.attack, seconds=result.seconds / len(groups),
                distance=None if history.shape[0] == 0 else float(result.restart_losses.min(0).values[v]),
                initial_distance=None if history.shape[0] == 0 else float(history[0, v]),
                distance_history=None if history.shape[0] == 0 else history[:, v].clone(),
            ))
        self.reconstructions.extend(out)
        return out

    def attack_updates(self, server_round: int, clients: Sequence[int],
                       received: Sequence[Mapping[str, torch.Tensor]]) -> list[Reconstruction]:
        """Reconstruct each client's batch from the weights it sent back (one batched attack).

        Args:
            server_round: the round whose sent weights the updates start from.
            clients: an identifier per reply (the chapter uses the client's partition).
            received: each client's returned weights (state dicts), in the order of ``clients``.
        """
        if len(clients) != len(received) or not received:
            raise InputError(f"need one identifier per reply, got {len(clients)} and {len(received)} replies")
        result = self._attack(server_round, received, 1, None)
        return self._records(server_round, [(c,) for c in clients], result, labels_given=False)

    def attack_aggregate(self, server_round: int, clients: Sequence[int], aggregate: Mapping[str, torch.Tensor],
                         labels: torch.Tensor | None = None) -> Reconstruction:
        """Reconstruct the ``len(clients) * B`` images mixed in one aggregate (secure aggregation).

        Args:
            server_round: the round.
            clients: the clients whose updates were summed (their number is what the attack needs).
            aggregate: the aggregated weights (FedAvg's mean of the clients' weights).
            labels: the true labels of all the images, handed to the attacker (``None``: inferred,
                possible only while they are at most as many as the classes).
        """
        self.aggregates[int(server_round)] = {k: torch.as_tensor(v).detach().clone() for k, v in aggregate.items()}
        return self.attack_aggregates(server_round, [clients], [aggregate], labels)[0]

    def attack_aggregates(self, server_round: int, groups: Sequence[Sequence[int]],
                          aggregates: Sequence[Mapping[str, torch.Tensor]],
                          labels: torch.Tensor | None = None) -> list[Reconstruction]:
        """:meth:`attack_aggregate` for several aggregates of equally many clients, in one batched attack."""
        sizes = {len(g) for g in groups}
        if len(groups) != len(aggregates) or not groups or len(sizes) != 1 or 0 in sizes:
            raise InputError("need one non-empty group of clients per aggregate, all of the same size")
        result = self._attack(server_round, aggregates, sizes.pop(), labels)
        return self._records(server_round, [tuple(g) for g in groups], result, labels_given=labels is not None)
