"""Deep Leakage from Gradients (Zhu, Liu, Han; NeurIPS 2019) and its improved variant iDLG.

DLG starts from random noise for both the image and a *soft* label (logits, turned into a
distribution by softmax) and minimises the squared Euclidean distance between the dummy
gradient and the shared one, summed over all layers,

    minimise over x, y:   sum_layers | grad L(x, softmax(y)) - shared gradient |^2,

with L-BFGS (step 1; an iteration is one ``LBFGS.step`` of up to 20 inner iterations, as in
DLG's code). The image is not constrained to the pixel box; the result is clipped to
``[0, 1]`` at the end. DLG's code runs ``torch.optim.LBFGS`` without a line search, which
often stalls or diverges (in our runs it failed on most of 8 Fashion-MNIST victims on LeNet);
with the strong-Wolfe line search used here all of them converge.

iDLG (Zhao, Mopuri, Bilen, 2020) first reads the label off the last layer's gradient
(``precode.attacks.labels``) and then optimises the image alone, which converges faster
and more reliably.

L-BFGS builds a curvature model from past steps of *all* its variables, so optimising many
victims as one problem would couple them. Instead every victim (and restart) keeps its own
L-BFGS state, and all of them share batched evaluations (``precode.attacks.lbfgs``, a
vectorised ``torch.optim.LBFGS``): a victim follows the same path as when attacked alone, up
to rounding, which L-BFGS amplifies over long runs (a batched and a lone run can end at
different, equally good, reconstructions). The starting point is drawn from ``seed`` and is
the same for every victim.

Used in chapter 2 (``book/02_attacks.ipynb``).
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import InputError
from ..profiles import get_profile
from ..training import seeded
from .base import AttackResult, check_input_shape, initial_tensor, model_device, prepare_gradients, prepare_labels
from .labels import infer_labels, last_layer
from .lbfgs import batched_lbfgs
from .matching import GradientMatcher, distance_at

__all__ = ["dlg", "idlg", "SOLVED", "dlg_budget"]

SOLVED = 1e-9
"""A squared gradient distance at or below this fraction of the shared gradient's squared norm is a match
to rounding noise: DLG and iDLG stop there instead of spending the rest of their budget."""


def dlg_budget(iterations: int, max_eval: int = 20) -> int:
    """The evaluations of the matching loss DLG and iDLG spend on a victim (with ``restart_stalled``, in
    full): ``iterations`` L-BFGS iterations of at most ``max_eval * 5 // 4`` evaluations each, torch's
    most (25 for DLG's ``max_eval`` of 20)."""
    return int(iterations) * (int(max_eval) * 5 // 4)


def dlg(
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
    lr: float = 1.0,
    max_eval: int = 20,
    min_progress: float = 0.0,
    layers: Sequence[str] | None = None,
    restart_stalled: bool = True,
    probe: torch.Tensor | None = None,
) -> AttackResult:
    """Reconstruct every victim's images (and soft labels) with DLG.

    Args:
        model, shared_gradients, input_shape, batch_size, seed, progress: as for
            :func:`~precode.attacks.inverting_gradients`.
        labels: ``None`` (DLG: the labels are optimised as soft labels; the reported label is
            their argmax) or the known labels (then only the images are optimised, as iDLG does).
        iterations: L-BFGS iterations (``LBFGS.step`` calls of up to ``max_eval`` inner
            iterations each, as DLG's code); default: the profile's ``dlg_iterations``.
        restarts: random starting points per victim (default 1); the restart with the lowest
            final gradient distance is kept.
        lr: L-BFGS step length (1).
        max_eval: most inner iterations per L-BFGS iteration (20 in DLG, torch's default).
        min_progress: a victim whose gradient distance falls by no more than this fraction in
            an iteration stops; with 0 (default) only those whose distance did not fall at all
            (converged to rounding noise, or stuck) stop early.
        layers: parameter names whose gradients are matched (``None``: all).
        restart_stalled: every victim spends the whole budget of ``iterations * max_eval * 5 // 4``
            evaluations (25 an iteration, torch's most) unless it solves the match first (a squared
            distance of at most :data:`SOLVED` times the shared gradient's squared norm: rounding
            noise, a test the attacker can make): a victim whose L-BFGS iteration makes no progress
            (a failed line search: stuck, or an objective that changes from one evaluation to the
            next, as PRECODE's noise makes it) starts again from a fresh random point (drawn from the
            seed), and the best point of all its starts is kept (default); ``False``: ``iterations``
            L-BFGS iterations, and a victim that stalls stops for good, as ``torch.optim.LBFGS`` would.
        probe: the true images, for ``truth_distance`` (see
            :func:`~precode.attacks.inverting_gradients`); DLG evaluates it with the soft labels
            it found.

    Returns:
        An :class:`~precode.attacks.AttackResult`; ``loss_history`` holds the squared
        gradient distance after every iteration (with ``restart_stalled``: the best so far);
        ``problem_evaluations`` what each victim spent.
    """
    start = time.perf_counter()
    shape = check_input_shape(input_shape)
    iterations = get_profile().dlg_iterations if iterations is None else int(iterations)
    restarts = 1 if restarts is None else int(restarts)
    if iterations < 1 or restarts < 1:
        raise InputError(f"iterations and restarts must be at least 1, got {iterations} and {restarts}")
    targets, n = prepare_gradients(model, shared_gradients)
    device = model_device(model)
    num_classes = targets[last_layer(model)[0]].shape[1]
    known = None if labels is None else prepare_labels(labels, n, batch_size, num_classes).to(device)
    # [dlg-lbfgs]
    pixels = batch_size * math.prod(shape)
    x0 = initial_tensor((restarts, 1, pixels), seed, "randn", device).expand(restarts, n, pixels)
    if known is None:
        y0 = initial_tensor((restarts, 1, batch_size * num_classes), seed + 1, "randn", device)
        x0 = torch.cat([x0, y0.expand(restarts, n, -1)], dim=2)
    matcher = GradientMatcher(model, targets, batch_size, shape, layers=layers, distance="l2")

    def split(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = z.reshape(restarts, n, -1)
        x = z[..., :pixels].reshape(restarts, n, batch_size, *shape)
        if known is None:
            return x, z[..., pixels:].reshape(restarts, n, batch_size, num_classes)
        return x, known.expand(restarts, n, batch_size)

    def evaluate(z: torch.Tensor) -> torch.Tensor:
        return matcher.distances(*split(z)).reshape(-1)

    name = "iDLG" if known is not None else "DLG"
    bar = tqdm(total=iterations, desc=f"{name}: {n} victim(s) x {restarts} restart(s)", disable=not progress,
               leave=False)

    def fresh(k: int) -> torch.Tensor:  # the k-th fresh start of every problem, from the seed
        z = initial_tensor((restarts * n, pixels), seed + 7919 * k, "randn", device)
        if known is None:
            z = torch.cat([z, initial_tensor((restarts * n, batch_size * num_classes), seed + 7919 * k + 1, "randn",
                                             device)], dim=1)
        return z

    # solved: the squared distance at rounding level, 1e-9 of the shared gradient's own squared norm (the
    # attacker's test, from the shared gradient alone): a victim there stops instead of starting again
    norms = sum(targets[name].flatten(1).double().pow(2).sum(1) for name in matcher.names)
    with seeded(seed, device):
        z, final, history, spent = batched_lbfgs(evaluate, x0.reshape(restarts * n, -1), iterations, lr=lr,
                                          max_iter=max_eval, min_progress=min_progress,
                                          on_iteration=lambda i, f: bar.update(1),
                                          restart=fresh if restart_stalled else None,
                                          budget=dlg_budget(iterations, max_eval) if restart_stalled else None,
                                          solved=SOLVED * norms.repeat(restarts) if restart_stalled else None)
    # [/dlg-lbfgs]
    bar.close()
    final = final.reshape(restarts, n)
    final = torch.where(torch.isfinite(final), final, torch.full_like(final, math.inf))  # inf: diverged
    best = final.argmin(dim=0).cpu()  # by gradient distance only
    victims = torch.arange(n)
    x, y = split(z)
    images, found = x[best, victims], y[best, victims]
    truth = None
    if probe is not None:
        truth = distance_at(matcher, probe, y[best.to(y.device), victims.to(y.device)], n, batch_size, shape)
    if found.is_floating_point():
        found = found.argmax(-1)
    return AttackResult(
        reconstructions=images.reshape(n * batch_size, *shape).clamp(0, 1).cpu(),
        labels=found.reshape(-1).cpu(),
        loss_history=history.reshape(-1, restarts, n)[:, best, victims],
        seconds=time.perf_counter() - start,
        restart_losses=final.cpu(),
        attack="dlg" if known is None else "idlg",
        evaluations=int(spent.max()),  # the most any victim and restart used
        truth_distance=truth,
        problem_evaluations=spent.reshape(restarts, n).sum(0),
        diverged=torch.isinf(final).all(dim=0).cpu(),  # every restart's objective or gradient overflowed
    )


def idlg(
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
    **options,
) -> AttackResult:
    """iDLG: infer the labels from the last layer's gradient (unless given), then run DLG on the images.

    Arguments as for :func:`dlg` (``options``: ``lr``, ``max_eval``, ``layers``, plus
    ``label_source`` for :func:`~precode.attacks.infer_labels`).
    """
    # [idlg]
    source = options.pop("label_source", "auto")
    if labels is None:
        labels = infer_labels(model, shared_gradients, batch_size, source=source)
    result = dlg(model, shared_gradients, input_shape, batch_size=batch_size, labels=labels, iterations=iterations,
                 restarts=restarts, seed=seed, progress=progress, **options)
    result.attack = "idlg"
    return result
    # [/idlg]
