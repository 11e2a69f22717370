"""Gradient matching: the server replays a client's step on dummy images and compares gradients.

Optimisation attacks (DLG, iDLG, Inverting Gradients) all share one inner step: compute the
gradients a client *would* share for dummy images and labels, with the same loss the client
uses (:func:`precode.training.loss_fn`: cross-entropy plus PRECODE's KL term, evaluated in the
same forward pass), and measure their distance to the shared gradients. The distance is then
minimised over the dummy images by differentiating through that gradient (a second derivative).

:class:`GradientMatcher` does this for many victims at once: one ``torch.func.vmap`` over the
victims (and, for Inverting Gradients, over restarts) of ``torch.func.grad`` of a
``functional_call`` of the model, followed by ordinary backpropagation to the dummy images.
PRECODE's sampling runs with ``randomness="different"``, so every victim draws its own noise,
as every client does.

One shortcut keeps many victims cheap on wide fully connected layers (the 1024-wide MLP has
1.8 million weights per victim): the weight gradient of a ``Linear`` layer is
``delta^T h`` (errors times inputs, rank at most the batch size), so both distances need
only ``delta``, ``h`` and the shared gradient's exact low-rank factors, never a per-victim
weight gradient: the cosine from ``<g, t>`` and ``|g|^2``, the squared distance as
``|g|^2 - 2 <g, t> + |t|^2``, that sum in float64 so that it keeps its precision near zero,
where DLG converges. The result is the same number (up to rounding) as the plain computation;
gradients that are not of low rank (a defense added noise) are compared with ``delta^T T h``,
still without a per-victim weight gradient.

Used in chapter 2 (``book/02_attacks.ipynb``) through ``precode.attacks.dlg`` and
``precode.attacks.ig``, and by the PRECODE-aware attacks of chapter 8.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..bottleneck import bottleneck_loss, bottlenecks
from ..errors import InputError
from ..training import loss_fn
from .base import preserved_bottleneck_state

__all__ = ["GradientMatcher", "DISTANCES", "select_layers", "distance_at", "at_or_below"]

DISTANCES = ("cosine", "l2")


def select_layers(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    """The trainable parameter names to match, in the model's order (all of them for ``None``).

    Raises:
        ValueError: an empty selection or a name the model does not have.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if layers is None:
        return names
    if isinstance(layers, str):
        layers = [layers]
    chosen = list(dict.fromkeys(layers))
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise InputError(f"unknown parameter name(s) {unknown[:5]} in layers; the model has {names}")
    if not chosen:
        raise InputError("layers selects no parameters; give None (all) or a list of parameter names")
    return [n for n in names if n in chosen]


class GradientMatcher:
    """The server's replica of the client, for ``N`` victims with batches of ``batch_size`` images.

    Args:
        model: the global model (its weights are read, never changed).
        targets: the shared gradients, stacked: ``{name: (N, *shape)}`` on the model's device
            (see :func:`precode.attacks.prepare_gradients`).
        batch_size: images per victim ``B``.
        input_shape: ``(C, H, W)`` of one image.
        layers: parameter names whose gradients are compared; ``None`` compares all of them.
        distance: ``"cosine"``: ``1 - <g, t> / (|g| |t|)`` with the inner product and norms
            summed over all chosen layers (Inverting Gradients), in ``[0, 2]``; ``"l2"``:
            ``sum |g - t|^2`` over the chosen layers (DLG).
        low_rank: use the low-rank shortcut for wide ``Linear`` layers.
    """

    def __init__(
        self,
        model: nn.Module,
        targets: dict[str, torch.Tensor],
        batch_size: int,
        input_shape: Sequence[int],
        layers: Sequence[str] | None = None,
        distance: str = "cosine",
        low_rank: bool = True,
    ):
        if distance not in DISTANCES:
            raise InputError(f"unknown distance {distance!r}; choose one of {list(DISTANCES)}")
        self.model = model
        self.distance = distance
        self.batch_size = int(batch_size)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.names = select_layers(model, layers)
        params = dict(model.named_parameters())
        self._frozen = {n: p.detach() for n, p in params.items()}
        self._frozen.update({n: b.detach() for n, b in model.named_buffers()})
        self._device = next(iter(self._frozen.values())).device
        self.num_victims = int(targets[self.names[0]].shape[0])

        calls = self._trace_linear_layers()
        self._linear: dict[str, nn.Linear] = {}
        self._probe_shapes: dict[str, tuple[int, ...]] = {}
        for name, module in model.named_modules():
            wname = f"{name}.weight"
            if not (low_rank and isinstance(module, nn.Linear) and wname in self.names):
                continue
            shapes = calls.get(module, [])
            if len(shapes) != 1:
                continue  # unused, or called twice (shared weights): compare in full
            rows = math.prod(shapes[0][:-1])
            if rows * (module.in_features + module.out_features) < module.in_features * module.out_features:
                self._linear[name] = module
                self._probe_shapes[name] = shapes[0]
        covered = {f"{m}.{p}" for m in self._linear for p in ("weight", "bias")}
        self._dense = [n for n in self.names if n not in covered]

        self._targets = {n: targets[n] for n in self.names}
        if distance == "cosine":  # |t|^2 over all chosen layers
            self._target_sq = sum(_squared_norms(t) for t in self._targets.values()).to(targets[self.names[0]].dtype)
        else:  # l2: |t|^2 over the weights of the shortcut's layers only, in float64 (see _victim_distance)
            self._target_sq = sum((_squared_norms(self._targets[f"{m}.weight"]) for m in self._linear),
                                  torch.zeros(self.num_victims, dtype=torch.float64, device=self._device))
        self._factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in self._linear:
            rows = math.prod(self._probe_shapes[name][:-1])
            # l2 factors in float64: DLG converges to distances near zero only when the target is of
            # low rank (no noise), and there the inner product needs float64's precision. A target
            # that is not of low rank (noise, pruning, clipping) keeps float32: its distance never
            # falls below the perturbation's own size, and reading a float64 copy of every victim's
            # weight gradient each evaluation made iDLG's noisy cells memory-bound at twice the cost.
            weight = self._targets[f"{name}.weight"]
            factors = _factorize(weight.double() if distance == "l2" else weight, rows)
            if factors is not None:
                self._factors[name] = factors
                del self._targets[f"{name}.weight"]  # the factors replace it
        self._capture: tuple[dict, dict] | None = None

    # -- the client's step on dummy data ---------------------------------------------------------

    def _trace_linear_layers(self) -> dict[nn.Module, list[tuple[int, ...]]]:
        """Output shapes of every ``Linear`` call in one forward pass of a batch of ``B`` images."""
        calls: dict[nn.Module, list[tuple[int, ...]]] = {}

        def record(module, _args, output):
            calls.setdefault(module, []).append(tuple(output.shape))

        handles = [m.register_forward_hook(record) for m in self.model.modules() if isinstance(m, nn.Linear)]
        try:
            with torch.no_grad(), preserved_bottleneck_state(self.model):
                self.model(torch.zeros((self.batch_size, *self.input_shape), device=self._device))
        except RuntimeError as e:
            raise InputError(f"images of shape {self.input_shape} do not fit the model: {e}") from None
        finally:
            for h in handles:
                h.remove()
        return calls

    def _hook(self, name: str):
        def hook(_module, args, output):
            if self._capture is None:
                return None
            probes, inputs = self._capture
            inputs[name] = args[0]
            return output + probes[name]

        return hook

    def _client_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.is_floating_point():  # DLG's soft label, given as logits
            return F.cross_entropy(logits, labels.softmax(-1)) + bottleneck_loss(self.model)
        return loss_fn(self.model, logits, labels)

    def _victim_distance(self, x, y, noise, targets, factors, target_sq):
        """Distance for one victim (inside vmap): x ``(B, C, H, W)``, y ``(B,)`` or ``(B, K)``."""
        probes = {
            n: torch.zeros(s, dtype=x.dtype, device=x.device) for n, s in self._probe_shapes.items()
        }
        dense = {n: self._frozen[n] for n in self._dense}

        def client_loss(probes, dense):
            self._capture = (probes, {})
            vbs = bottlenecks(self.model) if noise is not None else []
            try:
                for vb in vbs:
                    vb.noise = noise
                logits = functional_call(self.model, {**self._frozen, **dense}, (x,))
                inputs = self._capture[1]
            finally:
                self._capture = None
                for vb in vbs:
                    vb.noise = None
            return self._client_loss(logits, y), inputs

        (g_probe, g_dense), inputs = grad(client_loss, argnums=(0, 1), has_aux=True)(probes, dense)

        # [matcher-distance]
        if self.distance == "l2":
            return self._victim_l2(g_probe, g_dense, inputs, targets, factors, target_sq).to(x.dtype)
        dot = x.new_zeros(())
        g_sq = x.new_zeros(())
        for name, module in self._linear.items():
            delta = g_probe[name].reshape(-1, module.out_features)
            h = inputs[name].reshape(-1, module.in_features)
            if name in factors:
                q, vt = factors[name]
                dot = dot + ((delta @ q) * (h @ vt.mT)).sum()
            else:
                dot = dot + ((delta @ targets[f"{name}.weight"]) * h).sum()
            g_sq = g_sq + ((delta @ delta.mT) * (h @ h.mT)).sum()
            if f"{name}.bias" in self.names:
                g_bias = delta.sum(0)
                dot = dot + (g_bias * targets[f"{name}.bias"]).sum()
                g_sq = g_sq + g_bias.square().sum()
        for n in self._dense:
            dot = dot + (g_dense[n] * targets[n]).sum()
            g_sq = g_sq + g_dense[n].square().sum()
        return 1 - dot / (g_sq * target_sq).clamp_min(1e-30).sqrt()
        # [/matcher-distance]

    def _victim_l2(self, g_probe, g_dense, inputs, targets, factors, weight_sq):
        """``sum |g - t|^2`` of one victim; the shortcut layers' weights as ``|g|^2 - 2 <g, t> + |t|^2`` in float64."""
        total = weight_sq
        for name, module in self._linear.items():
            delta = g_probe[name].reshape(-1, module.out_features).double()
            h = inputs[name].reshape(-1, module.in_features).double()
            if name in factors:
                q, vt = factors[name]
                dot = ((delta @ q) * (h @ vt.mT)).sum()
            else:  # a dense float32 target (see __init__): the product in float32, summed in float64
                dot = ((g_probe[name].reshape(-1, module.out_features) @ targets[f"{name}.weight"]).double() * h).sum()
            total = total + ((delta @ delta.mT) * (h @ h.mT)).sum() - 2 * dot
            if f"{name}.bias" in self.names:
                total = total + (delta.sum(0) - targets[f"{name}.bias"]).square().sum()
        for n in self._dense:
            total = total + (g_dense[n] - targets[n]).square().sum()
        return total

    # -- public ------------------------------------------------------------------------------------

    @property
    def computable(self) -> torch.Tensor | None:
        """``(N,)``: whether each victim's cosine can be computed in the gradients' precision (``None``
        for the L2 distance, which shows an overflow itself as ``inf``). A shared gradient whose squared
        norm overflows (a defense's noise of about 1e19 and more) makes the cosine exactly 0 whatever
        the images, with a zero gradient: the attack would stall at its starting point
        (``precode.attacks.divergence``)."""
        return torch.isfinite(self._target_sq) if self.distance == "cosine" else None


    @contextlib.contextmanager
    def _hooks(self) -> Iterator[None]:
        handles = [m.register_forward_hook(self._hook(n)) for n, m in self._linear.items()]
        try:
            with preserved_bottleneck_state(self.model):
                yield
        finally:
            for h in handles:
                h.remove()

    def distances(self, images: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Gradient distance of every trial and victim, differentiable w.r.t. ``images`` (and ``labels``, ``noise``).

        Args:
            images: ``(R, N, B, C, H, W)``: ``R`` trials (restarts) of dummy batches for each of
                the ``N`` victims.
            labels: ``(R, N, B)`` integer labels, or ``(R, N, B, K)`` soft-label logits.
            noise: optional ``(R, N, B, K_vb)`` values that replace the PRECODE bottleneck's
                random ``eps`` (for attacks that optimise it; the model must hold one bottleneck).

        Returns:
            ``(R, N)`` distances.
        """
        if images.ndim != 6 or tuple(images.shape[1:3]) != (self.num_victims, self.batch_size):
            raise InputError(
                f"dummy images must be (R, {self.num_victims}, {self.batch_size}, C, H, W), got {tuple(images.shape)}"
            )
        if noise is not None and len(bottlenecks(self.model)) != 1:
            raise InputError("noise can be given only for a model with exactly one PRECODE bottleneck")
        noise_dim = None if noise is None else 0
        per_victim = vmap(self._victim_distance, in_dims=(0, 0, noise_dim, 0, 0, 0), randomness="different")
        per_trial = vmap(per_victim, in_dims=(0, 0, noise_dim, None, None, None), randomness="different")
        with self._hooks():
            return per_trial(images, labels, noise, self._targets, self._factors, self._target_sq)


def distance_at(matcher, images: torch.Tensor, labels: torch.Tensor, n: int, batch_size: int,
                shape: Sequence[int]) -> torch.Tensor:
    """``(N,)``: ``matcher``'s distance (a :class:`GradientMatcher`, or any matcher with its
    ``distances``) at the given images ``(N * B, C, H, W)`` with the labels ``(N, B)`` (ints, or DLG's
    soft labels ``(N, B, classes)``), on the CPU: the attacker's objective at the truth, for
    :attr:`~precode.attacks.AttackResult.truth_distance` (Inverting Gradients, DLG, iDLG)."""
    device = labels.device
    x = images.detach().to(device=device, dtype=torch.float32).reshape(1, n, batch_size, *shape)
    return matcher.distances(x, labels.detach()[None]).detach()[0].cpu()


def _squared_norms(stacked: torch.Tensor) -> torch.Tensor:
    """``|t|^2`` of every victim's tensor in ``(N, ...)``, summed in float64, one victim at a time: a float64
    copy of the whole stack (436 MB for 104 gradients of the MLP's 1024 x 1024 layer) took 4 s or more."""
    return torch.stack([v.double().square().sum() for v in stacked]) if len(stacked) else stacked.new_zeros(
        0, dtype=torch.float64)


def _factorize(weight_grads: torch.Tensor, rank_bound: int, tolerance: float = 1e-4):
    """Exact low-rank factors ``(Q, Q^T T)`` of each victim's weight gradient ``T``, or ``None``.

    A ``Linear`` layer's weight gradient for ``r`` input rows has rank at most ``r``; a random
    sketch with a few extra columns finds its column space. The sketch is drawn from a fixed
    seed, so results do not depend on which other victims are attacked alongside.
    """
    _, out_f, in_f = weight_grads.shape
    k = min(rank_bound + 2, out_f, in_f)
    omega = torch.randn(in_f, k, generator=torch.Generator().manual_seed(0)).to(weight_grads)
    q = torch.linalg.qr(weight_grads @ omega).Q
    vt = q.mT @ weight_grads
    residual = (weight_grads - q @ vt).flatten(1).norm(dim=1)
    scale = weight_grads.flatten(1).norm(dim=1).clamp_min(1e-30)
    if bool((residual / scale <= tolerance).all()):
        return q, vt
    return None


def at_or_below(distance: float, truth: float) -> bool:
    """Whether an attack's final matching distance is at or below the true images' (``truth``, from
    :func:`distance_at`), with the slack of float32 rounding (a relative and an absolute 1e-6: a cosine
    distance at the true image of an undefended client is 0 up to about 1e-7). Where it is, the
    objective no longer singles out the victim: the attack did not fail to optimise it."""
    return distance <= truth + 1e-6 * abs(truth) + 1e-6
