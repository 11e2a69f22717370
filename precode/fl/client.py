"""The federated client: which images it holds, and the E local SGD steps it runs on them.

A FedAvg client receives the global weights, trains a copy of the model on its own batch of ``B``
images for ``E`` local steps of plain SGD (FedAvg's local solver; McMahan et al. 2017) and sends
the new weights back. :func:`client_update` is that computation, in plain PyTorch, so that the
Flower client app (``precode.fl.flower``), the tests and chapter 10 run exactly the same code.
Every step uses the client's loss (:func:`precode.training.loss_fn`: cross-entropy plus
PRECODE's KL) on the whole batch, optionally through a defense:

* ``none``: the plain gradient;
* ``gaussian:S``, ``laplacian:S``, ``prune:P``, ``partial-gaussian:S``: the defense transforms
  each step's gradient before the step;
* ``dp:clip=C,noise=Z``: DP-SGD, each image's gradient clipped to ``C`` (per-sample gradients
  from Opacus) and Gaussian noise of ``Z * C`` added, every step;
* PRECODE is a property of the model (:func:`precode.bottleneck.add_precode`): its bottleneck samples
  fresh noise on every forward pass.

All of the client's randomness comes from its own stream (``seed``, see
``precode.fl.streams``): PRECODE's noise from the global generator, forked and seeded for the
duration of the update, the defense's noise from a generator of its own.

With one step (``E = 1``) the update is ``-lr`` times the gradient FedSGD would share
(:func:`precode.federated.compute_shared_gradients`).

Used in chapter 10 (``book/10_federated.ipynb``) and by ``python -m precode federate``.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping

import torch
from torch import nn

from ..data import ImageData
from ..defenses import Defense, NoDefense, parse_defense
from ..errors import InputError
from ..federated import compute_shared_gradients
from .streams import derive_seed

__all__ = ["client_batch", "client_update", "images_needed"]


def images_needed(clients: int, rounds: int, batch_size: int) -> int:
    """Training images a federation of ``clients`` needs for ``rounds`` rounds of ``batch_size`` images each."""
    return int(clients) * int(rounds) * int(batch_size)


def client_batch(data: ImageData, partition: int, server_round: int, clients: int, batch_size: int) -> ImageData:
    """The ``batch_size`` images client ``partition`` trains on in round ``server_round`` (1-based).

    The first ``clients * rounds * batch_size`` images of ``data`` are dealt out in order: round 1
    gives client 0 the first ``B`` images, client 1 the next ``B`` and so on, then round 2
    continues. Every client's images are its own (the partitions do not overlap), fixed and
    known to the experiment (not to the server), so a page can show the victims it discusses.

    Raises:
        ValueError: a partition or round out of range, or too few images in ``data``.
    """
    if not 0 <= partition < clients:
        raise InputError(f"partition must be in 0..{clients - 1}, got {partition}")
    if server_round < 1 or batch_size < 1:
        raise InputError(f"the round starts at 1 and the batch size at 1, got {server_round} and {batch_size}")
    start = ((server_round - 1) * clients + partition) * batch_size
    if start + batch_size > len(data):
        raise InputError(
            f"round {server_round} needs {start + batch_size} training images for {clients} clients of "
            f"{batch_size}, but the data has {len(data)}; use fewer clients, rounds or a smaller batch"
        )
    return dataclasses.replace(data, images=data.images[start : start + batch_size],
                               labels=data.labels[start : start + batch_size])


def _step_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    defense: Defense) -> dict[str, torch.Tensor]:
    if isinstance(defense, NoDefense):

        return compute_shared_gradients(model, images, labels)
    return defense.shared_gradients(model, images, labels)


def client_update(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    local_steps: int = 1,
    lr: float = 0.1,
    defense: str | Defense = "none",
    seed: int = 0,
    weights: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The weights a FedAvg client sends back: ``E`` plain SGD steps on its batch.

    ``W_{t+1} = W_t - lr * g_t`` for ``t = 0 .. E - 1``, where ``g_t`` is the gradient of the
    client's loss on the whole batch at ``W_t`` after the defense (for DP-SGD: per-sample clipping
    and noise).

    Args:
        model: the global model (left unchanged; a copy is trained).
        images, labels: the client's batch ``(B, C, H, W)`` in ``[0, 1]`` and ``(B,)``.
        local_steps: ``E``, the number of local SGD steps (1: FedSGD's gradient, as an update).
        lr: the SGD learning rate (the server's choice, sent in the round's configuration).
        defense: a defense spec (``none``, ``gaussian:S``, ``dp:clip=C,noise=Z``, ...) or a
            :class:`~precode.defenses.Defense`; its noise is reseeded from ``seed``.
        seed: the client's random stream for this round (PRECODE's sampling, the defense's noise).
        weights: load these weights (a state dict, for example from a Flower message) into the
            copy first; default: the model's own.

    Returns:
        The trained copy's state dict (detached tensors on the CPU).

    Used in chapter 10.
    """
    if int(local_steps) < 1:
        raise InputError(f"local_steps must be at least 1, got {local_steps}")
    if not lr > 0:
        raise InputError(f"the learning rate must be positive, got {lr}")
    if images.ndim != 4 or labels.shape != (images.shape[0],) or images.shape[0] == 0:
        raise InputError(f"a client needs a batch (B, C, H, W) with one label per image, got {tuple(images.shape)} "
                         f"and {tuple(labels.shape)}")
    local = copy.deepcopy(model)
    if weights is not None:
        local.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    local.train()
    # the defense's noise and PRECODE's sampling: two generators, two seeds from the client's stream
    guard = parse_defense(defense).with_seed(derive_seed(seed, "client", 0))
    device = next(local.parameters()).device
    images, labels = images.to(device), labels.to(device)
    # [client-local-steps]
    params = [(n, p) for n, p in local.named_parameters() if p.requires_grad]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derive_seed(seed, "client", 1))
        for _ in range(int(local_steps)):
            grads = _step_gradients(local, images, labels, guard)
            with torch.no_grad():
                for name, p in params:
                    p -= lr * grads[name].to(p.dtype)
    return {k: v.detach().cpu().clone() for k, v in local.state_dict().items()}
    # [/client-local-steps]
