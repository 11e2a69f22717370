"""The threat model every attack shares: what the server knows and what an attack returns.

The server is honest-but-curious. It knows the model's architecture and weights (the global
model it sent out) and receives the *shared gradients* of ``N`` victims, each computed by a
client on a batch of ``batch_size`` private images (:func:`precode.federated.compute_victim_gradients`).
Labels are either known or inferred from the gradients (``precode.attacks.labels``). An
attack returns an :class:`AttackResult`: the reconstructed images, the labels it used or found,
and the history of its gradient-matching loss.

Used in chapter 2 (``book/02_attacks.ipynb``) and by every later chapter that attacks.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..bottleneck import bottlenecks
from ..errors import InputError
from ..federated import validate_gradients
from ..training import seeded

__all__ = ["AttackResult", "prepare_gradients", "prepare_labels", "model_device", "seeded", "initial_tensor"]


@dataclasses.dataclass
class AttackResult:
    """What an attack recovered from the shared gradients of ``N`` victims of ``B`` images each.

    Attributes:
        reconstructions: ``(N * B, C, H, W)`` images, clipped to the pixel box ``[0, 1]``, on
            the CPU; victim ``v``'s batch is rows ``v * B`` to ``(v + 1) * B``. Within a batch
            of ``B > 1`` the order is whatever the attack found (an attacker cannot know the
            client's order), so compare after matching (as ``precode attack`` does).
        labels: ``(N * B,)`` labels the attack used (given, inferred) or found (DLG's soft
            labels, argmax), in the same order as ``reconstructions``.
        loss_history: ``(steps, N)`` gradient-matching loss per step and victim (for the
            restart that was kept); empty ``(0, N)`` for the analytic attack.
        seconds: wall-clock time of the attack.
        restart_losses: ``(restarts, N)`` final gradient-matching loss of every restart; the
            restart with the lowest one is kept (chosen without looking at the victims' images).
        attack: the attack's name.
        evaluations: the attack's budget as spent, in evaluations of the gradient-matching loss
            and its gradient per problem (one victim, one restart): Inverting Gradients' steps, or
            L-BFGS's function evaluations, line searches included (all problems are evaluated
            together, so a problem that stopped early counts as if it had gone on); 0 for the
            analytic attack. Compare optimisers at equal ``evaluations``.
        features: what the attack read inside the model, per victim, when it reads something:
            the encoder leak's recovered encoder inputs ``(N, D)``; ``None`` for the others.
        truth_distance: ``(N,)``, the attacker's own matching distance (the quantity in
            ``loss_history``, without its image prior) evaluated at the true victims' images with
            the labels the attack used; ``None`` unless the experiment asked for it (``probe``
            of :func:`precode.attacks.reconstruct`, which only the scoring side knows) or when the
            attack has no such objective (analytic, encoder leak) or optimises more than the image
            (``ig-joint``'s noise). An attack that ends at or below it has found images that its
            objective rates as well as the truth: the objective no longer singles out the victim,
            and a failure is not the optimiser's. One that ends above it failed to optimise.
        problem_evaluations: ``(N,)`` evaluations of the matching loss each victim's problem used
            (its restarts together); ``None``: every victim used :attr:`evaluations`.
        diverged: ``(N,)`` bool, per victim (its client's batch, one problem): every restart's
            objective or its gradient stopped being finite (a defense's noise overflowed it), so the
            attack stopped and its reconstruction is no result
            (``precode.attacks.divergence``); ``None``: not tracked (the analytic attacks).
    """

    reconstructions: torch.Tensor
    labels: torch.Tensor
    loss_history: torch.Tensor
    seconds: float
    restart_losses: torch.Tensor | None = None
    attack: str = ""
    evaluations: int = 0
    features: torch.Tensor | None = None
    truth_distance: torch.Tensor | None = None
    problem_evaluations: torch.Tensor | None = None
    diverged: torch.Tensor | None = None

    @property
    def num_victims(self) -> int:
        return int(self.loss_history.shape[1])

    @property
    def distance(self) -> torch.Tensor | None:
        """``(N,)``: each victim's final matching distance, of the restart that was kept (``None`` for
        the attacks without a loop)."""
        if self.restart_losses is not None and self.restart_losses.numel():
            return self.restart_losses.min(dim=0).values
        if self.loss_history.shape[0]:
            return self.loss_history[-1]
        return None

    def victim_evaluations(self) -> torch.Tensor:
        """``(N,)``: evaluations each victim's problem used (:attr:`problem_evaluations`, else
        :attr:`evaluations` for every victim)."""
        if self.problem_evaluations is not None:
            return self.problem_evaluations
        return torch.full((self.num_victims,), int(self.evaluations), dtype=torch.long)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters: attacks run where the model lives (CPU or CUDA)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def prepare_gradients(
    model: nn.Module, shared_gradients: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], int]:
    """Check the shared gradients against the model and give them a leading victim dimension.

    Accepts one victim's gradients (``{name: tensor shaped like the parameter}``, from
    :func:`~precode.federated.compute_shared_gradients`) or many stacked ones (``{name: (N, *shape)}``,
    from :func:`~precode.federated.compute_victim_gradients`).

    Returns:
        ``({name: (N, *shape) tensor on the model's device}, N)``.

    Raises:
        ValueError: missing or extra parameters, wrong shapes, NaN or infinite values.
    """
    if not isinstance(shared_gradients, dict):
        raise InputError(
            f"shared gradients must be a dict parameter name -> tensor, got {type(shared_gradients).__name__}"
        )
    bad = [n for n, g in shared_gradients.items() if not isinstance(g, torch.Tensor)]
    if bad:
        raise InputError(f"shared gradients must be tensors; {bad[:5]} are not")
    params = dict(model.named_parameters())
    common = [n for n in params if isinstance(shared_gradients.get(n), torch.Tensor)]
    if common and shared_gradients[common[0]].ndim == params[common[0]].ndim:
        validate_gradients(model, shared_gradients, stacked=False)
        stacked = {k: v[None] for k, v in shared_gradients.items()}
    else:
        validate_gradients(model, shared_gradients, stacked=True)
        stacked = shared_gradients
    device = model_device(model)
    out = {n: stacked[n].detach().to(device=device, dtype=params[n].dtype) for n in params if n in stacked}
    return out, int(next(iter(out.values())).shape[0])


def prepare_labels(
    labels: torch.Tensor | Sequence[int], n_victims: int, batch_size: int, num_classes: int
) -> torch.Tensor:
    """Known labels as an ``(N, B)`` integer tensor; accepts ``(N * B,)`` or ``(N, B)``."""
    y = torch.as_tensor(labels).long()
    if y.numel() != n_victims * batch_size:
        raise InputError(
            f"need {n_victims * batch_size} labels ({n_victims} victims x batch size {batch_size}), got {y.numel()}"
        )
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise InputError(f"labels must lie in 0..{num_classes - 1}, got {y.min().item()}..{y.max().item()}")
    return y.reshape(n_victims, batch_size)


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"input_shape must be (channels, height, width), got {tuple(input_shape)}")
    return shape  # type: ignore[return-value]


@contextlib.contextmanager
def preserved_bottleneck_state(model: nn.Module) -> Iterator[None]:
    """Leave PRECODE bottlenecks as they were: attacks trace forward passes that overwrite ``kl``."""
    saved = [(vb, vb.kl, vb.noise) for vb in bottlenecks(model)]
    try:
        yield
    finally:
        for vb, kl, noise in saved:
            vb.kl, vb.noise = kl, noise


def initial_tensor(shape: Sequence[int], seed: int, init: str, device: torch.device) -> torch.Tensor:
    """The attack's starting point, drawn on the CPU from ``seed`` (identical on every device).

    ``init``: ``"randn"`` (standard normal, as DLG and Inverting Gradients), ``"rand"``
    (uniform in ``[0, 1]``) or ``"gray"`` (all pixels 0.5).
    """
    g = torch.Generator().manual_seed(int(seed))
    if init == "randn":
        x = torch.randn(tuple(shape), generator=g)
    elif init == "rand":
        x = torch.rand(tuple(shape), generator=g)
    elif init == "gray":
        x = torch.full(tuple(shape), 0.5)
    else:
        raise InputError(f"unknown init {init!r}; choose 'randn', 'rand' or 'gray'")
    return x.to(device)
