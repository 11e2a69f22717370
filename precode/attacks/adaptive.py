"""Attacks that know PRECODE: leave the noisy gradients out, or optimise the noise too.

PRECODE (:mod:`precode.bottleneck`) stops plain Inverting Gradients because the gradients of
the bottleneck's decoder and of every later layer depend on the sampling noise ``eps`` that the
server never sees. The authors' own follow-ups (Scheliga et al. 2022, 2023: ``scheliga2022combining``,
``scheliga2023privacy`` and ``scheliga2023dropout`` in ``book/references.bib``) show two ways round
it, both implemented here on top of
:func:`~precode.attacks.inverting_gradients` and
:class:`~precode.attacks.GradientMatcher`:

* ``ig-omit`` (:func:`ig_omit`): match only the gradients of the layers *before the sampling*:
  every trainable parameter registered before the bottleneck's decoder, the bottleneck's
  encoder included (:func:`layers_before_sampling`). The decoder and every later layer are left
  out of the cosine distance.
* ``ig-joint`` (:func:`ig_joint`): keep every gradient but treat the unknown ``eps`` of each
  victim's images as a variable, optimised jointly with the images (Adam on ``eps``, signed
  Adam on the pixels, a ``N(0, I)`` prior on ``eps``).
* ``ig-mean`` (:func:`ig_mean`): the deterministic replica (Athalye, Carlini, Wagner 2018): the
  attacker's copy of the model samples nothing (``z = mu``, the noise fixed at 0) and Inverting
  Gradients matches every shared gradient with it.
* ``ig-eot`` (:func:`ig_eot`): expectation over transformation (Athalye et al. 2018): every step
  averages the cosine distance, and so its gradient, over ``draws`` fresh draws of the noise, so
  that the attack follows the gradient of the *expected* distance. A step costs ``draws``
  evaluations (:attr:`~precode.attacks.AttackResult.evaluations` counts them); give it
  ``iterations // draws`` steps to compare it with the others at an equal budget.
* the encoder leak (:func:`encoder_leak`): the bottleneck's encoder is a fully connected layer
  with a bias, so dividing its weight gradient by its bias gradient gives its input exactly
  (chapter 2's analytic attack on the encoder); an image whose features match that input is
  then found by inverting the layers in front of the bottleneck.

All need a model with exactly one PRECODE bottleneck and raise ``ValueError`` otherwise.

Used in chapters 8 (``book/08_adaptive_attacks.ipynb``) and 8 (``ig-mean``, ``ig-eot``:
``book/09_randomised_defenses.ipynb``).
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..bottleneck import VariationalBottleneck
from ..errors import InputError
from ..profiles import get_profile
from ..training import seeded
from .analytic import linear_layer_input
from .base import AttackResult, check_input_shape, initial_tensor, model_device, prepare_gradients, prepare_labels
from .divergence import Divergence
from .ig import inverting_gradients, total_variation
from .labels import infer_labels, last_layer
from .matching import GradientMatcher

__all__ = ["ig_omit", "ig_joint", "ig_mean", "ig_eot", "encoder_leak", "ENCODER_LEAK_STEPS", "layers_in_front",
           "layers_before_sampling",
           "precode_bottleneck"]


def precode_bottleneck(model: nn.Module, attack: str = "this attack") -> tuple[str, VariationalBottleneck]:
    """``(module name, bottleneck)`` of the model's single PRECODE bottleneck.

    Raises:
        ValueError: the model has no bottleneck (``attack`` is named in the message) or several.
    """
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, VariationalBottleneck)]
    if not found:
        raise InputError(f"{attack} attacks PRECODE, but the model has no PRECODE bottleneck; "
                         "add one (add_precode, or --precode on the command line) or use another attack")
    if len(found) > 1:
        raise InputError(f"{attack} needs exactly one PRECODE bottleneck, the model has {len(found)}")
    return found[0]


def layers_before_sampling(model: nn.Module) -> list[str]:
    """Trainable parameter names computed before PRECODE's sampling: everything registered before
    the bottleneck's decoder, the bottleneck's encoder included (the gradients ``ig-omit`` matches).

    With the bottleneck inserted into a ``Sequential`` (:func:`~precode.bottleneck.add_precode`)
    registration order is execution order. Raises ``ValueError`` without a bottleneck.

    Used in chapter 8.
    """
    name, _vb = precode_bottleneck(model, "ig-omit")
    decoder = f"{name}.decoder."
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    cut = next(i for i, n in enumerate(names) if n.startswith(decoder))
    return names[:cut]


def ig_omit(
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
    """Inverting Gradients on the gradients before PRECODE's sampling only (``ig-omit``).

    Same arguments and result as :func:`~precode.attacks.inverting_gradients` (``lr``, ``tv``,
    ``init``, ``signed``, ``boxed``), except that ``layers`` is fixed to
    :func:`layers_before_sampling`. Labels are still read off the last layer's gradient.

    Raises:
        ValueError: the model has no (or more than one) PRECODE bottleneck.

    Used in chapter 8.
    """
    if "layers" in options:
        raise TypeError("ig-omit chooses the layers itself (those before PRECODE's sampling); use 'ig' for others")
    prepare_gradients(model, shared_gradients)  # gradients that do not fit fail first, as for every attack
    layers = layers_before_sampling(model)
    result = inverting_gradients(model, shared_gradients, input_shape, batch_size=batch_size, labels=labels,
                                 iterations=iterations, restarts=restarts, seed=seed, progress=progress,
                                 layers=layers, **options)
    result.attack = "ig-omit"
    return result


class _MeanReplica:
    """The distance seen by a replica of the model whose bottleneck samples nothing (``eps = 0``)."""

    def __init__(self, matcher: GradientMatcher, size: int):
        self.matcher, self.size = matcher, int(size)
        self.computable = matcher.computable

    def distances(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        noise = images.new_zeros((*images.shape[:3], self.size))
        return self.matcher.distances(images, labels, noise=noise)


class _ExpectedDistance:
    """The distance averaged over ``draws`` independent draws of the bottleneck's noise per call."""

    def __init__(self, matcher: GradientMatcher, draws: int):
        self.matcher, self.draws = matcher, int(draws)
        self.computable = matcher.computable

    def distances(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        trials = images.shape[0]
        copies = images.repeat(self.draws, *([1] * (images.ndim - 1)))  # gradients flow back to ``images``
        labels = labels.repeat(self.draws, *([1] * (labels.ndim - 1)))
        return self.matcher.distances(copies, labels).view(self.draws, trials, -1).mean(0)


def _ig_with(name: str, wrap, model: nn.Module, shared_gradients: dict[str, torch.Tensor],
             input_shape: Sequence[int], batch_size: int, layers: Sequence[str] | None,
             **kwargs) -> AttackResult:
    """Inverting Gradients whose distance is the wrapped :class:`GradientMatcher`'s."""
    targets, _n = prepare_gradients(model, shared_gradients)
    _name, vb = precode_bottleneck(model, name)
    shape = check_input_shape(input_shape)
    matcher = wrap(GradientMatcher(model, targets, batch_size, shape, layers=layers, distance="cosine"), vb)
    result = inverting_gradients(model, shared_gradients, shape, batch_size=batch_size, matcher=matcher, **kwargs)
    result.attack = name
    return result


def ig_mean(
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
    layers: Sequence[str] | None = None,
    **options,
) -> AttackResult:
    """Inverting Gradients on the deterministic replica of a PRECODE model (``ig-mean``).

    The attacker's copy of the model uses ``z = mu`` (the bottleneck's noise fixed at 0), the
    obvious way to remove the randomness (Athalye et al. 2018); the client's gradient was computed
    with its own random ``eps``. Same arguments and result as
    :func:`~precode.attacks.inverting_gradients` (``labels``, ``iterations``, ``restarts``,
    ``seed``, ``progress``, ``lr``, ``tv``, ``init``, ``signed``, ``boxed``); ``layers`` selects the
    gradients to match (all by default). One step is one evaluation, as for Inverting Gradients.

    Raises:
        ValueError: the model has no (or more than one) PRECODE bottleneck.

    Used in chapter 9.
    """
    return _ig_with("ig-mean", lambda m, vb: _MeanReplica(m, vb.size), model, shared_gradients, input_shape,
                    batch_size, layers, labels=labels, iterations=iterations, restarts=restarts, seed=seed,
                    progress=progress, **options)


def ig_eot(
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
    draws: int = 4,
    layers: Sequence[str] | None = None,
    **options,
) -> AttackResult:
    """Inverting Gradients on the expected distance over PRECODE's noise (``ig-eot``).

    Every step evaluates the cosine distance for ``draws`` independent draws of the bottleneck's
    noise (from the attacker's seed, never the client's) and steps on the gradient of their mean:
    expectation over transformation (Athalye et al. 2018). The final restart is chosen by the same
    averaged distance. A step costs ``draws`` evaluations, so ``iterations`` steps spend
    ``iterations * draws`` (the result's ``evaluations``); pass ``iterations // draws`` for the
    budget of plain Inverting Gradients. Other arguments as
    :func:`~precode.attacks.inverting_gradients`.

    Raises:
        ValueError: the model has no (or more than one) PRECODE bottleneck, or ``draws < 1``.

    Used in chapter 9.
    """
    if int(draws) < 1:
        raise InputError(f"draws must be at least 1 (noise draws averaged per step), got {draws}")
    result = _ig_with("ig-eot", lambda m, _vb: _ExpectedDistance(m, draws), model, shared_gradients, input_shape,
                      batch_size, layers, labels=labels, iterations=iterations, restarts=restarts, seed=seed,
                      progress=progress, **options)
    result.evaluations = int(result.evaluations) * int(draws)
    return result


def ig_joint(
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
    lr: float = 0.1,
    noise_lr: float = 0.1,
    tv: float = 1e-4,
    noise_prior: float = 1e-4,
    layers: Sequence[str] | None = None,
    init: str = "rand",
    boxed: bool = True,
) -> AttackResult:
    """Inverting Gradients that optimises PRECODE's unknown noise jointly with the images (``ig-joint``).

    Minimises ``1 - cos(grad L(x, y; eps), shared) + tv * TV(x) + noise_prior * mean(eps^2) / 2``
    over the images ``x`` (signed Adam, pixel box, as Inverting Gradients) and the bottleneck's
    noise ``eps`` of shape ``(B, K)`` per victim (plain Adam), both from the seed. Learning
    rates drop tenfold at 3/8, 5/8 and 7/8 of the iterations.

    Args:
        model, shared_gradients, input_shape, batch_size, labels, iterations, restarts, seed, progress:
            as :func:`~precode.attacks.inverting_gradients`.
        lr: Adam's step for the pixels (pixel units, pixels in ``[0, 1]``).
        noise_lr: Adam's step for ``eps`` (units of the noise's standard deviation, 1).
        tv: weight of the total-variation prior (dimensionless).
        noise_prior: weight of the ``N(0, I)`` prior on ``eps`` (dimensionless; mean over entries).
        layers: parameter names to match (``None``: all, the noisy ones included).
        init: the images' starting point (``"rand"``, ``"randn"``, ``"gray"``); ``eps`` starts
            from a standard normal draw.
        boxed: clip pixels to ``[0, 1]`` after each step.

    Returns:
        An :class:`~precode.attacks.AttackResult`.

    Raises:
        ValueError: the model has no (or more than one) PRECODE bottleneck; bad settings.

    Used in chapter 8.
    """
    start = time.perf_counter()
    targets, n = prepare_gradients(model, shared_gradients)
    _name, vb = precode_bottleneck(model, "ig-joint")
    shape = check_input_shape(input_shape)
    profile = get_profile()
    iterations = profile.ig_iterations if iterations is None else int(iterations)
    restarts = profile.ig_restarts if restarts is None else int(restarts)
    if iterations < 1 or restarts < 1:
        raise InputError(f"iterations and restarts must be at least 1, got {iterations} and {restarts}")
    if not (lr > 0 and noise_lr > 0 and tv >= 0 and noise_prior >= 0):
        raise InputError(f"lr and noise_lr must be positive, tv and noise_prior non-negative; got lr={lr}, "
                         f"noise_lr={noise_lr}, tv={tv}, noise_prior={noise_prior}")
    device = model_device(model)
    if labels is None:
        labels = infer_labels(model, targets, batch_size)
    num_classes = targets[last_layer(model)[0]].shape[1]
    y = prepare_labels(labels, n, batch_size, num_classes).to(device)

    matcher = GradientMatcher(model, targets, batch_size, shape, layers=layers, distance="cosine")
    x0 = initial_tensor((restarts, 1, batch_size, *shape), seed, init, device)
    x = x0.expand(restarts, n, *x0.shape[2:]).clone().requires_grad_(True)
    e0 = initial_tensor((restarts, 1, batch_size, vb.size), seed + 1, "randn", device)
    eps = e0.expand(restarts, n, batch_size, vb.size).clone().requires_grad_(True)
    y_trials = y.expand(restarts, n, batch_size)
    optimizer = torch.optim.Adam([{"params": [x], "lr": lr}, {"params": [eps], "lr": noise_lr}])
    milestones = sorted({max(1, int(iterations * f)) for f in (3 / 8, 5 / 8, 7 / 8)})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    history = torch.empty(iterations, restarts, n, device=device)
    diverged = Divergence(restarts, n, device, matcher.computable)

    with seeded(seed, device):
        bar = tqdm(range(iterations), desc=f"IG-joint: {n} victim(s) x {restarts} restart(s)",
                   disable=not progress, leave=False)
        for i in bar:
            distance = matcher.distances(x, y_trials, noise=eps)
            loss = distance + tv * total_variation(x) + noise_prior * 0.5 * eps.square().flatten(2).mean(-1)
            gx, ge = diverged.checked(loss, torch.autograd.grad(loss.sum(), (x, eps)), (x, eps))
            x.grad, eps.grad = gx.sign(), ge
            optimizer.step()
            scheduler.step()
            if boxed:
                with torch.no_grad():
                    x.clamp_(0, 1)
            diverged.hold((x, eps))
            history[i] = distance.detach()
            if i % 50 == 0 and diverged.all():  # every problem diverged: nothing left to optimise
                history = history[: i + 1]
                break
        final = diverged.final(matcher.distances(x.detach(), y_trials, noise=eps.detach()).detach())

    best = final.argmin(dim=0)
    victims = torch.arange(n, device=device)
    images = x.detach()[best, victims].reshape(n * batch_size, *shape)
    return AttackResult(
        reconstructions=images.clamp(0, 1).cpu(),
        labels=y.reshape(-1).cpu(),
        loss_history=history[:, best, victims].cpu(),
        seconds=time.perf_counter() - start,
        restart_losses=final.cpu(),
        attack="ig-joint",
        evaluations=len(history),
        diverged=diverged.victims(),
    )


def layers_in_front(model: nn.Module) -> nn.Sequential:
    """The part of a ``Sequential`` model in front of its PRECODE bottleneck, as a ``Sequential``
    (the same modules, not copies): what maps an image to the encoder's input.

    Raises:
        ValueError: no bottleneck, or one that is not a child of a ``Sequential`` model.

    Used by :func:`encoder_leak` and chapter 8 (to score the features it recovers).
    """
    name, _vb = precode_bottleneck(model, "the encoder leak")
    children = [n for n, _ in model.named_children()]
    if not isinstance(model, nn.Sequential) or name not in children:
        raise InputError(f"the encoder leak inverts the layers in front of the bottleneck and needs it as a child "
                         f"of a Sequential model; {name!r} is not one")
    return nn.Sequential(*[model.get_submodule(n) for n in children[: children.index(name)]])


ENCODER_LEAK_STEPS = 200
"""The encoder leak's default budget: Adam steps of its inversion of the layers in front of the bottleneck."""


def encoder_leak(
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
    lr: float = 0.05,
) -> AttackResult:
    """Read the bottleneck's input off its encoder's gradients, then invert the layers in front (``encoder-leak``).

    1. **Divide.** Row ``i`` of the encoder's weight gradient is entry ``i`` of its bias gradient
       times the encoder's input ``h`` (the noise changes the error signal, not the input), so
       ``h = sum_i g_b[i] g_W[i] / sum_i g_b[i]^2`` for each victim
       (:func:`~precode.attacks.linear_layer_input`).
    2. **Invert the layers in front.** Adam on images ``x`` in ``[0, 1]`` (uniform start from
       ``seed``) minimising ``|f(x) - h|^2 / |h|^2``, where ``f`` is the part of the network in
       front of the bottleneck (a ``Sequential`` model, as :func:`~precode.bottleneck.add_precode`
       builds).

    Args:
        model: the model with one PRECODE bottleneck, a child of a ``Sequential``.
        shared_gradients: one gradient per victim (client batches of one image), as
            :func:`precode.federated.compute_victim_gradients` gives: ``name -> (N, *shape)``.
        input_shape: ``(C, H, W)``.
        batch_size: must be 1 (the division reads one image's features per shared gradient).
        labels: reported as given; ``None`` infers them (iDLG's rule) for the result. The attack
            itself needs no labels.
        iterations: the inversion's Adam steps (``None``: :data:`ENCODER_LEAK_STEPS`).
        restarts: ignored (one start).
        seed: the start's seed (the attacker's).
        progress: a tqdm bar over the inversion's steps.
        lr: the inversion's Adam learning rate.

    Returns:
        :class:`~precode.attacks.AttackResult` with the ``(N, C, H, W)`` reconstructions, the
        relative feature distance per step as ``loss_history`` and the recovered encoder inputs
        ``(N, D)`` as ``features``, on the CPU.

    Raises:
        ValueError: gradients that do not fit the model (the encoder's missing among them), no
            bottleneck, a bottleneck that is not a child of a ``Sequential``, or a batch size other than 1.

    Used in chapter 8.
    """
    del restarts
    start = time.perf_counter()
    if int(batch_size) != 1:
        raise InputError(f"the encoder leak reads one image per shared gradient (batch size 1), got batch size "
                         f"{batch_size}")
    targets, n = prepare_gradients(model, shared_gradients)  # gradients that do not fit fail first
    front = layers_in_front(model)
    name, _vb = precode_bottleneck(model, "the encoder leak")
    shape = check_input_shape(input_shape)
    keys = (f"{name}.encoder.weight", f"{name}.encoder.bias")
    num_classes = targets[last_layer(model)[0]].shape[1]
    if labels is None:
        labels = infer_labels(model, targets, 1)
    y = prepare_labels(labels, n, 1, num_classes)
    steps = ENCODER_LEAK_STEPS if iterations is None else int(iterations)
    device = model_device(model)
    weight, bias = (targets[k].to(device) for k in keys)
    features = linear_layer_input(weight, bias).float()
    x = initial_tensor((len(features), *shape), seed, "rand", device).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    scale = features.square().sum(1).clamp_min(torch.finfo(torch.float32).tiny)  # h = 0: nothing to match
    history = torch.zeros(steps, n)
    # features or their scale that overflowed (a defense's huge noise) cannot be matched: the victim diverged
    diverged = Divergence(1, n, device, torch.isfinite(scale) & torch.isfinite(features).all(1))
    for step in tqdm(range(steps), desc="encoder-leak", disable=not progress, leave=False):
        loss = (front(x).flatten(1) - features).square().sum(1) / scale
        optimizer.zero_grad()
        loss.sum().backward()
        x.grad = diverged.checked(loss[None], [x.grad[None]], [x[None]])[0][0]
        optimizer.step()
        with torch.no_grad():
            x.clamp_(0, 1)
        diverged.hold([x[None]])
        history[step] = loss.detach().cpu()
    with torch.no_grad():
        final = diverged.final(((front(x).flatten(1) - features).square().sum(1) / scale)[None])[0].cpu()
    return AttackResult(
        reconstructions=x.detach().cpu(), labels=y.reshape(-1).cpu(), loss_history=history,
        seconds=time.perf_counter() - start, restart_losses=final[None], attack="encoder-leak",
        evaluations=steps, features=features.detach().cpu(), diverged=diverged.victims(),
    )

