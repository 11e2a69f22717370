"""Inverting Gradients (Geiping, Bauermeister, Dröge, Moeller; NeurIPS 2020), for many victims at once.

The attack looks for images whose gradient *points the same way* as the shared one:

    minimise over x in [0, 1]:   1 - cos(grad L(x, y), shared gradient)  +  tv * TV(x)

where the cosine is taken over the chosen layers together (all of them by default) and
``TV(x)`` is the mean absolute difference between neighbouring pixels (horizontal plus
vertical), a prior for natural images. The optimiser is Adam applied to the *sign* of the
gradient, every pixel is clipped back into ``[0, 1]`` after each step, and the learning rate
drops tenfold at 3/8, 5/8 and 7/8 of the iterations. Several restarts from different random
starting points can be run; for each victim the restart whose final gradient distance is the
lowest is kept. The victims' images are never looked at.

All victims and restarts are optimised together in one batched optimisation
(:class:`~precode.attacks.GradientMatcher`). Because Adam, the sign and the clipping
act on every pixel separately, this gives each victim the same result (up to floating-point
rounding) as attacking it alone with the same seed. Over long runs the sign of near-zero
gradient entries can flip with that rounding, so details may drift apart
(``benchmarks/bench_attacks.py`` measures how much).

Used in chapter 2 (``book/02_attacks.ipynb``); chapters 6 and 8 attack PRECODE with it, where
``layers`` selects the gradients to match.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import InputError
from ..profiles import get_profile
from ..training import seeded
from .base import AttackResult, check_input_shape, initial_tensor, model_device, prepare_gradients, prepare_labels
from .divergence import Divergence
from .labels import infer_labels, last_layer
from .matching import GradientMatcher, distance_at

__all__ = ["inverting_gradients", "total_variation", "REFERENCE_ITERATIONS"]

REFERENCE_ITERATIONS = (4_800, 24_000)
"""Inverting Gradients' budgets in its reference implementation (``inversefed``): 4,800 iterations by
default, 24,000 for its long runs (the PRECODE paper runs 7,000). Quoted in chapter 2."""


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute horizontal plus vertical pixel difference of each batch in ``(..., B, C, H, W)``.

    Returns one value per leading index (the ``B`` images of a victim are averaged together).
    """
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(-4).mean(-1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(-4).mean(-1)
    return dx + dy


def inverting_gradients(
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
    lr: float | Sequence[float] = 0.1,
    tv: float = 1e-4,
    layers: Sequence[str] | None = None,
    init: str = "rand",
    signed: bool = True,
    boxed: bool = True,
    matcher=None,
    probe: torch.Tensor | None = None,
) -> AttackResult:
    """Reconstruct every victim's images with Inverting Gradients.

    Args:
        model: the global model the server sent (weights known to the server).
        shared_gradients: one victim's gradients, or ``N`` victims' stacked ones
            (:func:`~precode.federated.compute_victim_gradients`).
        input_shape: ``(C, H, W)`` of one image.
        batch_size: images per victim ``B``.
        labels: the victims' labels, ``(N * B,)``; ``None`` infers them with iDLG's rule
            (:func:`~precode.attacks.infer_labels`).
        iterations: optimisation steps; default: the profile's ``ig_iterations``.
        restarts: random starting points per victim; default: the profile's ``ig_restarts``.
        seed: seeds the starting points (the same for every victim) and PRECODE's noise.
        progress: show a tqdm progress bar on stderr.
        lr: Adam's initial step size in pixel units (pixels live in ``[0, 1]``); with the
            signed gradient every pixel moves by about ``lr`` per step at first. The reference
            uses 0.01 for 7,000 steps; 0.1 suits the quick profile's shorter runs. A sequence of
            ``G`` rates cuts the ``N`` victims, in order, into ``G`` equal groups, each optimised
            with its own rate (Adam's parameter groups): a learning-rate sweep in one batched
            run, each group as if attacked alone with its rate (chapter 3).
        tv: weight of the total-variation prior (dimensionless: the cosine distance lies in
            ``[0, 2]``, the TV of a natural 28x28 image is about 0.1 to 0.3). The reference
            uses 1e-6 on untrained models. Measured with 1,000 steps on 8 victims: 1e-3 helps
            LeNet (SSIM 0.87 vs 0.81) and the CNN on photos but biases the MLP's exact answer
            (PSNR 60 vs 79 dB); the default 1e-4 sits in between.
        layers: parameter names whose gradients are matched (``None``: all).
        init: starting point: ``"rand"`` (uniform in the pixel box, the default), ``"randn"``
            (standard normal, the reference's choice for normalised images) or ``"gray"``. On
            untrained models the first two give the same quality (Fashion-MNIST, 8 victims:
            SSIM 0.99999 on the MLP either way; 0.81 and 0.80 on LeNet after 1,000 steps).
        signed: step on the sign of the gradient (as Inverting Gradients) or on the gradient.
        boxed: clip pixels to ``[0, 1]`` after each step.
        matcher: the distance to minimise, if not the shared gradient's: any object with
            ``distances(images (R, N, B, C, H, W), labels (R, N, B)) -> (R, N)``, for example
            chapter 10's ``precode.attacks.updates.UpdateMatcher``, which replays a client's
            local steps (``layers`` is then the matcher's business); ``None``: a
            :class:`~precode.attacks.GradientMatcher` on ``layers``.
        probe: the true images ``(N * B, C, H, W)``, given only by the scoring side (the
            experiment, which knows the victims): the attack never uses them, it only evaluates its
            matching distance there (with its labels and, for ``ig-eot``, its own noise draws) and
            returns it as ``truth_distance``.

    Returns:
        An :class:`~precode.attacks.AttackResult`.
    """
    start = time.perf_counter()
    shape = check_input_shape(input_shape)
    profile = get_profile()
    iterations = profile.ig_iterations if iterations is None else int(iterations)
    restarts = profile.ig_restarts if restarts is None else int(restarts)
    if iterations < 1 or restarts < 1:
        raise InputError(f"iterations and restarts must be at least 1, got {iterations} and {restarts}")
    rates = [float(r) for r in lr] if isinstance(lr, Sequence) else [float(lr)]
    if not (rates and all(r > 0 for r in rates) and tv >= 0):
        raise InputError(f"lr must be positive (or a non-empty sequence of positive rates) and tv non-negative, "
                         f"got lr={lr}, tv={tv}")
    targets, n = prepare_gradients(model, shared_gradients)
    if n % len(rates):
        raise InputError(f"{len(rates)} learning rates cannot cut {n} victims into equal groups; give a number of "
                         "rates that divides the number of victims")
    device = model_device(model)
    if labels is None:
        labels = infer_labels(model, targets, batch_size)
    num_classes = targets[last_layer(model)[0]].shape[1]
    y = prepare_labels(labels, n, batch_size, num_classes).to(device)

    # [ig-loop]
    matcher = (GradientMatcher(model, targets, batch_size, shape, layers=layers, distance="cosine")
               if matcher is None else matcher)
    x0 = initial_tensor((restarts, 1, batch_size, *shape), seed, init, device)
    x = x0.expand(restarts, n, *x0.shape[2:])
    groups = [g.clone().requires_grad_(True) for g in x.split(n // len(rates), dim=1)]  # one per rate
    y_trials = y.expand(restarts, n, batch_size)
    optimizer = torch.optim.Adam([{"params": [g], "lr": r} for g, r in zip(groups, rates)])
    milestones = sorted({max(1, int(iterations * f)) for f in (3 / 8, 5 / 8, 7 / 8)})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    history = torch.empty(iterations, restarts, n, device=device)
    diverged = Divergence(restarts, n, device, getattr(matcher, "computable", None))

    with seeded(seed, device):
        bar = tqdm(range(iterations), desc=f"IG: {n} victim(s) x {restarts} restart(s)", disable=not progress,
                   leave=False)
        for i in bar:
            x = torch.cat(groups, dim=1) if len(groups) > 1 else groups[0]
            distance = matcher.distances(x, y_trials)
            loss = distance + tv * total_variation(x) if tv else distance
            grads = diverged.checked(loss, torch.autograd.grad(loss.sum(), groups), groups)  # non-finite: stops
            for group, g in zip(groups, grads):
                group.grad = g.sign() if signed else g
            optimizer.step()
            scheduler.step()
            if boxed:
                with torch.no_grad():
                    for group in groups:
                        group.clamp_(0, 1)
            diverged.hold(groups)
            history[i] = distance.detach()
            if progress and (i % 50 == 0 or i == iterations - 1):
                bar.set_postfix(distance=f"{float(distance.detach().mean()):.4f}")
            if i % 50 == 0 and diverged.all():  # every problem diverged: nothing left to optimise
                history = history[: i + 1]
                break
        x = torch.cat(groups, dim=1).detach()
        final = diverged.final(matcher.distances(x, y_trials).detach())
        truth = None if probe is None else distance_at(matcher, probe, y, n, batch_size, shape)

    best = final.argmin(dim=0)  # by gradient distance only
    # [/ig-loop]
    victims = torch.arange(n, device=device)
    images = x.detach()[best, victims].reshape(n * batch_size, *shape)
    return AttackResult(
        reconstructions=images.clamp(0, 1).cpu(),
        labels=y.reshape(-1).cpu(),
        loss_history=history[:, best, victims].cpu(),
        seconds=time.perf_counter() - start,
        restart_losses=final.cpu(),
        attack="ig",
        evaluations=len(history),
        diverged=diverged.victims(),
        truth_distance=truth,
    )
