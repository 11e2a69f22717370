"""Attacks on weight updates: what a server recovers from a FedAvg client's E local SGD steps.

In FedSGD a client shares one gradient; in FedAvg it trains for ``E`` local steps and sends its
new weights. The server knows the weights ``W_0`` it sent, so it knows the client's *update*
``W_E - W_0``. With plain SGD at learning rate ``lr`` on the client's batch,

    W_E - W_0 = -lr * (g(W_0) + g(W_1) + ... + g(W_{E-1})),

the sum of the gradients along the client's path. Dividing by ``-lr`` gives the *pseudo-gradient*
(:func:`gradient_from_update`): for ``E = 1`` it is exactly the shared gradient of FedSGD, and
every attack of chapter 2 applies unchanged.

* :func:`analytic_update_attack`: the analytic division (:func:`~precode.attacks.analytic_attack`)
  on the pseudo-gradient. For a first ``Linear`` layer with a bias and one image,
  ``dW1 = -lr * sum_t delta_t x^T`` and ``db1 = -lr * sum_t delta_t``: every row is still the
  image times one number, so ``x = dW1[i] / db1[i]`` stays exact for any ``E``. For ``B > 1``
  the rows mix the images unless a unit is active for one image only, as for a batch gradient.
* :func:`inverting_updates`: Inverting Gradients whose replica of the client *simulates the E
  local steps* on the dummy images and compares the simulated update with the received one
  (cosine distance of the pseudo-gradients, TV prior, signed Adam, box; Geiping et al. 2020,
  section "weight updates"; Dimitrov et al. 2022 simulate FedAvg's epochs the same way). The
  optimisation loop is :func:`~precode.attacks.inverting_gradients`' own (chapter 2's attack);
  only the distance is new (:class:`UpdateMatcher`, passed as its ``matcher``).

Both also attack the *aggregate* of ``clients`` clients (what a server sees behind secure
aggregation): the mean of their updates, which the replica simulates as ``clients`` separate
clients of ``B`` images each, starting from the same weights.

Used in chapter 10 (``book/10_federated.ipynb``) and by ``python -m precode federate``.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..errors import InputError
from ..training import loss_fn
from .analytic import analytic_attack
from .base import (
    AttackResult,
    check_input_shape,
    prepare_gradients,
    preserved_bottleneck_state,
)
from .ig import inverting_gradients
from .labels import last_layer
from .matching import _factorize, select_layers

__all__ = [
    "UPDATE_ATTACK_NAMES",
    "UpdateMatcher",
    "analytic_update_attack",
    "gradient_from_update",
    "inverting_updates",
    "reconstruct_from_updates",
    "weight_update",
]

UPDATE_ATTACK_NAMES = ("analytic", "ig")


def weight_update(sent: Mapping[str, torch.Tensor], received: Mapping[str, torch.Tensor],
                  model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """``received - sent`` for every parameter (every trainable one of ``model``, if given).

    Args:
        sent: the weights the server sent (a state dict).
        received: the weights a client sent back after its local training, or an aggregate.
        model: restricts the update to ``model``'s trainable parameters, in its order.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad] if model is not None else list(received)
    missing = [n for n in names if n not in sent or n not in received]
    if missing:
        raise InputError(f"weights missing for {missing[:5]}: the update needs the sent and the received weights")
    return {n: (torch.as_tensor(received[n]).double() - torch.as_tensor(sent[n]).double()).float() for n in names}


def gradient_from_update(update: Mapping[str, torch.Tensor], lr: float) -> dict[str, torch.Tensor]:
    """The pseudo-gradient ``-update / lr``: the sum of the gradients along the client's E SGD steps.

    For ``E = 1`` it is the gradient the client would have shared in FedSGD. ``lr`` is the
    client's learning rate (the server chose it, so it knows it).
    """
    if not lr > 0:
        raise InputError(f"the client's learning rate must be positive, got {lr}")
    return {n: -u / lr for n, u in update.items()}


def _check_federation(local_steps: int, clients: int, client_lr: float) -> None:
    if int(local_steps) < 1:
        raise InputError(f"local_steps must be at least 1, got {local_steps}")
    if int(clients) < 1:
        raise InputError(f"clients must be at least 1, got {clients}")
    if not client_lr > 0:
        raise InputError(f"the client's learning rate must be positive, got {client_lr}")


def analytic_update_attack(
    model: nn.Module,
    updates: dict[str, torch.Tensor],
    input_shape: Sequence[int],
    batch_size: int = 1,
    labels: torch.Tensor | Sequence[int] | None = None,
    *,
    client_lr: float,
    clients: int = 1,
    local_steps: int = 1,
    tolerance: float = 1e-3,
) -> AttackResult:
    """The analytic division on weight updates: exact for one image per client, whatever ``E``.

    Args:
        model: the global model as the server sent it.
        updates: ``{name: update}`` of one client, or ``N`` stacked ``(N, *shape)``
            (:func:`weight_update`); for ``clients > 1`` each is the mean of that many clients' updates.
        input_shape: ``(C, H, W)``.
        batch_size: images per client ``B``; the attack separates ``clients * B`` images per update.
        labels: reported as given; ``None`` infers them from the pseudo-gradient (iDLG's rule,
            possible while ``clients * B`` is at most the number of classes, else the labels are
            reported as ``-1``).
        client_lr: the clients' learning rate (fixes the sign and scale of the pseudo-gradient).
        clients: how many clients' updates were averaged into each update (secure aggregation).
        local_steps: ``E`` (the division does not need it; accepted for a uniform signature).
        tolerance: see :func:`~precode.attacks.analytic_attack`.

    Used in chapter 10.
    """
    _check_federation(local_steps, clients, client_lr)
    pseudo = gradient_from_update(updates, client_lr)
    per_update = int(clients) * int(batch_size)
    num_classes = dict(model.named_parameters())[last_layer(model)[0]].shape[0]
    if labels is None and per_update > num_classes:  # the label rule cannot name more labels than classes
        _, n = prepare_gradients(model, pseudo)
        result = analytic_attack(model, pseudo, input_shape, batch_size=per_update,
                                 labels=torch.zeros(n * per_update, dtype=torch.long), tolerance=tolerance)
        result.labels = torch.full((n * per_update,), -1, dtype=torch.long)
    else:
        result = analytic_attack(model, pseudo, input_shape, batch_size=per_update, labels=labels, tolerance=tolerance)
    result.attack = "analytic"
    return result


class UpdateMatcher:
    """The server's replica of FedAvg clients: E local SGD steps on dummy images, compared with an update.

    For each victim (one received update, the mean of ``clients`` clients' updates), the replica
    trains ``clients`` copies of the global model, one per group of ``batch_size`` dummy images,
    for ``local_steps`` plain SGD steps at learning rate ``lr`` with the client's loss
    (:func:`precode.training.loss_fn`), and compares the mean pseudo-gradient
    ``sum_t g(W_t)`` with the received one by the cosine distance of Inverting Gradients, over
    the chosen layers together. Every trainable parameter is trained; ``layers`` only selects what
    is compared.

    Wide ``Linear`` layers are never formed per victim: their update after ``t`` steps is
    ``-lr * sum_s delta_s^T h_s`` (errors times inputs, rank at most ``t * B``), so the replica
    keeps those factors, adds their effect to the layer's output in later steps, and computes
    inner products and norms from them (the shortcut of
    :class:`~precode.attacks.GradientMatcher`, carried through the local steps).
    With ``local_steps = clients = 1`` the distance equals :class:`GradientMatcher`'s.

    Args:
        model: the global model (weights read, never changed).
        targets: the received pseudo-gradients, stacked ``{name: (N, *shape)}`` on the model's
            device (:func:`gradient_from_update`, :func:`~precode.attacks.prepare_gradients`).
        batch_size: images per client ``B``.
        input_shape: ``(C, H, W)``.
        local_steps: ``E``.
        lr: the clients' learning rate.
        clients: clients averaged into each update.
        layers: parameter names compared (``None``: all).

    Used in chapter 10.
    """

    def __init__(
        self,
        model: nn.Module,
        targets: dict[str, torch.Tensor],
        batch_size: int,
        input_shape: Sequence[int],
        *,
        local_steps: int = 1,
        lr: float,
        clients: int = 1,
        layers: Sequence[str] | None = None,
    ):
        _check_federation(local_steps, clients, lr)
        self.model = model
        self.local_steps, self.lr, self.clients = int(local_steps), float(lr), int(clients)
        self.client_batch = int(batch_size)
        self.batch_size = self.clients * self.client_batch  # images per victim, as the IG loop sees it
        # One step from the same weights: the mean of K clients' batch-mean gradients over B images each is
        # the batch-mean gradient of all K * B images, so the replica simulates them as one client (faster).
        self._groups = 1 if self.local_steps == 1 else self.clients
        self._group_batch = self.batch_size // self._groups
        self.input_shape = check_input_shape(input_shape)
        self.names = select_layers(model, layers)
        params = dict(model.named_parameters())
        trainable = [n for n, p in params.items() if p.requires_grad]
        self._frozen = {n: p.detach() for n, p in params.items()}
        self._frozen.update({n: b.detach() for n, b in model.named_buffers()})
        self.num_victims = int(targets[self.names[0]].shape[0])

        calls = self._trace_linear_layers()
        self._linear: dict[str, nn.Linear] = {}
        self._rows: dict[str, int] = {}
        self._probe_shapes: dict[str, tuple[int, ...]] = {}
        steps_rows = self.local_steps * self._groups
        for name, module in model.named_modules():
            if not isinstance(module, nn.Linear) or f"{name}.weight" not in trainable:
                continue
            if module.bias is not None and f"{name}.bias" not in trainable:
                continue
            shapes = calls.get(module, [])
            if len(shapes) != 1:
                continue  # unused, or called twice: trained as a dense tensor
            rows = math.prod(shapes[0][:-1])
            factored = steps_rows * rows * (module.in_features + module.out_features)
            if factored < module.in_features * module.out_features:
                self._linear[name] = module
                self._rows[name] = rows
                self._probe_shapes[name] = shapes[0]
        covered = {f"{m}.{p}" for m in self._linear for p in ("weight", "bias")}
        self._dense = [n for n in trainable if n not in covered]

        self._targets = {n: targets[n] for n in self.names}
        self._target_sq = sum(t.double().square().flatten(1).sum(1) for t in self._targets.values()).to(
            targets[self.names[0]].dtype
        )
        self._factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in self._linear:
            wname = f"{name}.weight"
            if wname in self._targets:
                factors = _factorize(self._targets[wname], steps_rows * self._rows[name])
                if factors is not None:
                    self._factors[name] = factors
                    del self._targets[wname]
        self._capture: tuple[dict, dict, dict] | None = None

    def _trace_linear_layers(self) -> dict[nn.Module, list[tuple[int, ...]]]:
        calls: dict[nn.Module, list[tuple[int, ...]]] = {}

        def record(module, _args, output):
            calls.setdefault(module, []).append(tuple(output.shape))

        handles = [m.register_forward_hook(record) for m in self.model.modules() if isinstance(m, nn.Linear)]
        device = next(iter(self._frozen.values())).device
        try:
            with torch.no_grad(), preserved_bottleneck_state(self.model):
                self.model(torch.zeros((self._group_batch, *self.input_shape), device=device))
        except RuntimeError as e:
            raise InputError(f"images of shape {self.input_shape} do not fit the model: {e}") from None
        finally:
            for h in handles:
                h.remove()
        return calls

    def _hook(self, name: str):
        lr = self.lr

        def hook(module, args, output):
            if self._capture is None:
                return None
            probes, inputs, history = self._capture
            h = args[0]
            inputs[name] = h
            flat = h.reshape(-1, module.in_features)
            shift = torch.zeros_like(output).reshape(-1, module.out_features)
            for h_s, d_s in history[name]:  # the updates of the earlier local steps, as factors
                shift = shift + (flat @ h_s.mT) @ d_s
                if module.bias is not None:
                    shift = shift + d_s.sum(0)
            return output - lr * shift.reshape(output.shape) + probes[name]

        return hook

    @contextlib.contextmanager
    def _hooks(self) -> Iterator[None]:
        handles = [m.register_forward_hook(self._hook(n)) for n, m in self._linear.items()]
        try:
            with preserved_bottleneck_state(self.model):
                yield
        finally:
            for h in handles:
                h.remove()

    def _victim_distance(self, x, y, targets, factors, target_sq):
        """Distance for one victim (inside vmap): x ``(clients * B, C, H, W)``, y ``(clients * B,)``."""
        xs = x.reshape(self._groups, self._group_batch, *x.shape[1:])
        ys = y.reshape(self._groups, self._group_batch)
        rows_d: dict[str, list[torch.Tensor]] = {n: [] for n in self._linear}
        rows_h: dict[str, list[torch.Tensor]] = {n: [] for n in self._linear}
        dense_sum = {n: torch.zeros_like(self._frozen[n]) for n in self._dense}
        # [update-steps]
        for k in range(self._groups):
            dense = {n: self._frozen[n] for n in self._dense}
            history: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in self._linear}
            for _ in range(self.local_steps):
                probes = {n: torch.zeros(s, dtype=x.dtype, device=x.device) for n, s in self._probe_shapes.items()}

                def client_loss(probes, dense, xk=xs[k], yk=ys[k], history=history):
                    self._capture = (probes, {}, history)
                    try:
                        logits = functional_call(self.model, {**self._frozen, **dense}, (xk,))
                        inputs = self._capture[1]
                    finally:
                        self._capture = None
                    return loss_fn(self.model, logits, yk), inputs

                (g_probe, g_dense), inputs = grad(client_loss, argnums=(0, 1), has_aux=True)(probes, dense)
                for n, m in self._linear.items():
                    h = inputs[n].reshape(-1, m.in_features)
                    d = g_probe[n].reshape(-1, m.out_features)
                    history[n].append((h, d))
                    rows_h[n].append(h)
                    rows_d[n].append(d)
                for n in self._dense:
                    dense_sum[n] = dense_sum[n] + g_dense[n]
                dense = {n: dense[n] - self.lr * g_dense[n] for n in self._dense}

        # [/update-steps]
        scale = 1.0 / self._groups
        dot = x.new_zeros(())
        g_sq = x.new_zeros(())
        for name in self._linear:
            d_all, h_all = torch.cat(rows_d[name]), torch.cat(rows_h[name])
            if f"{name}.weight" in self.names:
                if name in factors:
                    q, vt = factors[name]
                    dot = dot + scale * ((d_all @ q) * (h_all @ vt.mT)).sum()
                else:
                    dot = dot + scale * ((d_all @ targets[f"{name}.weight"]) * h_all).sum()
                g_sq = g_sq + scale**2 * ((d_all @ d_all.mT) * (h_all @ h_all.mT)).sum()
            if f"{name}.bias" in self.names:
                g_bias = scale * d_all.sum(0)
                dot = dot + (g_bias * targets[f"{name}.bias"]).sum()
                g_sq = g_sq + g_bias.square().sum()
        for n in self._dense:
            if n in self.names:
                g = scale * dense_sum[n]
                dot = dot + (g * targets[n]).sum()
                g_sq = g_sq + g.square().sum()
        return 1 - dot / (g_sq * target_sq).clamp_min(1e-30).sqrt()

    def distances(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Distance of every trial and victim, differentiable w.r.t. ``images``.

        Args:
            images: ``(R, N, clients * B, C, H, W)`` dummy images; victim ``v``'s client ``k``
                holds images ``k * B`` to ``(k + 1) * B``.
            labels: ``(R, N, clients * B)`` integer labels.

        Returns:
            ``(R, N)`` cosine distances in ``[0, 2]``.
        """
        if images.ndim != 6 or tuple(images.shape[1:3]) != (self.num_victims, self.batch_size):
            raise InputError(
                f"dummy images must be (R, {self.num_victims}, {self.batch_size}, C, H, W), got {tuple(images.shape)}"
            )
        per_victim = vmap(self._victim_distance, in_dims=(0, 0, 0, 0, 0), randomness="different")
        per_trial = vmap(per_victim, in_dims=(0, 0, None, None, None), randomness="different")
        with self._hooks():
            return per_trial(images, labels, self._targets, self._factors, self._target_sq)


def inverting_updates(
    model: nn.Module,
    updates: dict[str, torch.Tensor],
    input_shape: Sequence[int],
    batch_size: int = 1,
    labels: torch.Tensor | Sequence[int] | None = None,
    iterations: int | None = None,
    restarts: int | None = None,
    seed: int = 0,
    progress: bool = True,
    *,
    client_lr: float,
    local_steps: int = 1,
    clients: int = 1,
    lr: float = 0.1,
    tv: float = 1e-4,
    layers: Sequence[str] | None = None,
    init: str = "rand",
    signed: bool = True,
    boxed: bool = True,
) -> AttackResult:
    """Inverting Gradients on weight updates, simulating the clients' E local SGD steps.

    Args:
        model: the global model as the server sent it.
        updates: ``{name: update}`` of one victim or ``N`` stacked (:func:`weight_update`).
        input_shape: ``(C, H, W)``.
        batch_size: images per client ``B``.
        labels: ``(N * clients * B,)`` known labels; ``None`` infers them from the
            pseudo-gradient with iDLG's rule (needs ``clients * B`` at most the number of classes).
        iterations, restarts: default to the profile's Inverting Gradients budget.
        seed: the attacker's seed: the starting point and the noise its replica of a PRECODE
            client draws (never the client's own seed).
        progress: tqdm bar on stderr.
        client_lr: the clients' SGD learning rate (known to the server, which chose it).
        local_steps: ``E``, the clients' local steps (known to the server). Setting 1 for an
            update of several steps gives the naive attacker that treats it as one gradient.
        clients: clients averaged into each update (secure aggregation's sum, divided).
        lr, tv, layers, init, signed, boxed: as for :func:`~precode.attacks.inverting_gradients`.

    Returns:
        An :class:`~precode.attacks.AttackResult` with ``N * clients * B`` reconstructions.

    Used in chapter 10.
    """
    _check_federation(local_steps, clients, client_lr)
    shape = check_input_shape(input_shape)
    pseudo = gradient_from_update(updates, client_lr)
    targets, _ = prepare_gradients(model, pseudo)
    matcher = UpdateMatcher(model, targets, batch_size, shape, local_steps=local_steps, lr=client_lr,
                            clients=clients, layers=layers)
    # Inverting Gradients' own loop (signed Adam, box, lr steps, restarts), on the update's distance
    return inverting_gradients(model, pseudo, shape, batch_size=int(clients) * int(batch_size), labels=labels,
                               iterations=iterations, restarts=restarts, seed=seed, progress=progress, lr=lr, tv=tv,
                               init=init, signed=signed, boxed=boxed, matcher=matcher)


def reconstruct_from_updates(
    name: str,
    model: nn.Module,
    updates: dict[str, torch.Tensor],
    input_shape: Sequence[int],
    batch_size: int = 1,
    labels: torch.Tensor | Sequence[int] | None = None,
    *,
    client_lr: float,
    local_steps: int = 1,
    clients: int = 1,
    iterations: int | None = None,
    restarts: int | None = None,
    seed: int = 0,
    progress: bool = False,
    **options,
) -> AttackResult:
    """Run the update attack called ``name`` (``analytic`` or ``ig``) on ``N`` stacked updates.

    Arguments as for :func:`analytic_update_attack` and :func:`inverting_updates`; ``options``
    go to the attack (``lr``, ``tv``, ``layers`` ... for ``ig``).

    Used by the curious server of chapter 10 (``precode.fl.server``).
    """
    key = str(name).lower()
    if key == "analytic":
        return analytic_update_attack(model, updates, input_shape, batch_size, labels, client_lr=client_lr,
                                      clients=clients, local_steps=local_steps, **options)
    if key == "ig":
        return inverting_updates(model, updates, input_shape, batch_size, labels, iterations, restarts, seed,
                                 progress, client_lr=client_lr, local_steps=local_steps, clients=clients, **options)
    raise InputError(f"unknown update attack {name!r}; choose one of {list(UPDATE_ATTACK_NAMES)}")
