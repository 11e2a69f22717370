"""One attack experiment: the clients share, the server attacks, the victims are scored.

:func:`run_attack` is the experiment of ``python -m precode attack``, of every cell of the evaluation
grid (:func:`precode.evaluation.attack_cell`) and of chapters 2, 6 and 8, under one stated
:class:`precode.threat.ThreatModel` (:func:`run_attack_cases`: several client defenses at once,
chapter 4):

1. the server sends the model (:meth:`ThreatModel.weights_sent`: unchanged when it is honest);
2. each client computes the gradient of its batch of ``B`` images (``threat.batch_size``) and applies
   its defense, with the *client's* random stream (PRECODE's sampling noise, the defense's noise);
3. the server runs the attack with the *attacker's* stream, given the labels or not (``threat.labels``);
4. scoring (which reads the victims, as the server cannot): each reconstruction is matched to its
   victim within its batch by least MSE (:func:`precode.metrics.match_to_victims`), labels are compared
   per batch as a multiset, and MSE, PSNR and SSIM are computed per victim.

The evaluation grid (:mod:`precode.evaluation`) runs its cells one by one through this function
and stores them.

:func:`draw_agreement` measures what makes PRECODE's gradients useless to the attacker (chapter 6):
how alike two draws of the same victims' shared gradients are.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from . import metrics
from .attacks import AttackResult, infer_labels, reconstruct, resolved_budget
from .data import ImageData
from .defenses import Defense, parse_defense
from .errors import InputError
from .experiment_store import active_store, model_fingerprint, tensor_fingerprint
from .federated import compute_victim_gradients
from .profiles import get_profile
from .threat import ThreatModel
from .training import seeded

__all__ = ["AttackRun", "run_attack", "run_attack_cases", "draw_agreement", "label_recovery", "SSIM_MIN_SIDE"]

SSIM_MIN_SIDE = 7
"""SSIM's 7x7 window needs images at least this many pixels high and wide; smaller ones get no SSIM."""


@dataclasses.dataclass(frozen=True)
class AttackRun:
    """What one experiment found, per victim and in the victims' order.

    Attributes:
        result: the attack's own :class:`precode.attacks.AttackResult` (its labels, loss history,
            evaluations and seconds).
        images: the reconstructions ``(N, C, H, W)``, matched to the victims.
        labels: the attacker's labels, matched to the victims' labels per batch.
        mse, psnr: per victim.
        ssim: per victim, or ``None`` for images below :data:`SSIM_MIN_SIDE` pixels.
        label_accuracy: the fraction of victims whose label the attacker had right.
        threat: the experiment's threat model.
        gradient_cosine: per client, the cosine between the gradient it shared and the one it would
            have shared without its defense (the same PRECODE draws): how much of the gradient's
            direction the defense left; 1 without a defense.
        inferred_labels: per victim, the label iDLG's rule (:func:`precode.attacks.infer_labels`)
            reads off its client's shared gradient, matched to the victims per batch as ``labels``:
            what an attacker that is not given the labels would have (``None``: not computed).
    """

    result: AttackResult
    images: torch.Tensor
    labels: torch.Tensor
    mse: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray | None
    label_accuracy: float
    threat: ThreatModel
    gradient_cosine: np.ndarray | None = None
    inferred_labels: torch.Tensor | None = None

    @property
    def diverged(self) -> np.ndarray:
        """Per victim: whether the attack diverged on its client's batch
        (:attr:`precode.attacks.AttackResult.diverged`); its MSE, PSNR and SSIM are then NaN, no score."""
        n = len(self.psnr)
        if self.result.diverged is None:
            return np.zeros(n, dtype=bool)
        return np.repeat(self.result.diverged.numpy(), n // max(1, len(self.result.diverged)))

    def success(self, threshold: float) -> np.ndarray:
        """Per victim: whether its reconstruction reached SSIM ``threshold`` (a diverged victim did not)."""
        if self.ssim is None:
            raise InputError(f"these images are smaller than {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE} pixels and have no "
                             "SSIM; judge them by PSNR")
        return self.ssim >= threshold

    def line(self, name: str) -> str:
        """One line for a chapter's output: SSIM (mean, min), PSNR, labels, budget spent and seconds
        (and how many victims diverged, whose scores the means leave out)."""
        kept = ~self.diverged
        lost = int((~kept).sum())
        if not kept.any():
            return f"{name} diverged on all {lost} victims (no score), {self.result.seconds:5.1f} s"
        ssim_, psnr = (None if self.ssim is None else self.ssim[kept]), self.psnr[kept]
        ssim = "" if ssim_ is None else f"SSIM mean {ssim_.mean():.3f} (min {ssim_.min():.3f}), "
        return (f"{name} {ssim}PSNR mean {psnr.mean():5.1f} dB, labels {self.label_accuracy:.2f}, "
                f"{self.result.evaluations:5d} evaluations, {self.result.seconds:5.1f} s"
                + (f", diverged on {lost} victims" if lost else ""))


def run_attack(attack: str, model: nn.Module, victims: ImageData, threat: ThreatModel, *,
               defense: str | Defense | None = None, iterations: int | None = None, restarts: int | None = None,
               progress: bool = False, **options) -> AttackRun:
    """Run one attack experiment on ``victims`` under ``threat`` (see the module docstring for the steps).

    Args:
        attack: a name of :data:`precode.attacks.ATTACKS`.
        model: the global model, on the device the experiment runs on; a malicious ``threat.server``
            changes its weights in place (the weights it sends).
        victims: the clients' images, cut in order into batches of ``threat.batch_size``.
        threat: the threat model: server, labels given or inferred, batch size, seed.
        defense: what each client applies to its gradient before sharing it (a spec of
            :func:`precode.defenses.parse_defense`, seeded with the client's stream, or a
            :class:`precode.defenses.Defense`); ``None`` or ``"none"``: nothing.
        iterations, restarts: the attack's budget; ``None``: the profile's.
        progress: a tqdm bar on stderr.
        **options: the attack's own keyword arguments (``lr``, ``tv``, ``draws`` ...).

    Returns:
        :class:`AttackRun`.

    Raises:
        ValueError: victims that cannot be cut into batches of ``threat.batch_size``, an unknown attack
        or defense, or what the attack itself refuses.
    """
    return run_attack_cases(attack, model, victims, threat, [defense], iterations=iterations, restarts=restarts,
                            progress=progress, **options)[0]


def run_attack_cases(attack: str, model: nn.Module, victims: ImageData, threat: ThreatModel,
                     defenses: Sequence[str | Defense | None], *, iterations: int | None = None,
                     restarts: int | None = None, progress: bool = False, **options) -> list[AttackRun]:
    """:func:`run_attack` for the same victims under each of several client defenses, in one attack call.

    Every case is the experiment :func:`run_attack` runs with that defense (each defense seeded with
    the client's stream, as there); the attack then optimises all victims of all cases together,
    each victim of each case its own problem, so batching shares only the optimiser's loop: on a
    deterministic model a case gives the numbers it gives alone, up to floating-point rounding (a
    PRECODE replica draws its noise for all problems at once: other draws of the same distribution).
    Each run's ``result`` is its slice of the batched result (its ``seconds`` are those of the whole
    call). Chapter 4 attacks all its defense levels this way.

    Returns:
        One :class:`AttackRun` per defense, in order.
    """
    b = int(threat.batch_size)
    if len(victims) == 0 or len(victims) % b:
        raise InputError(f"{len(victims)} victims cannot be cut into client batches of {b}; give a multiple of {b}")
    if not defenses:
        raise InputError("give at least one defense (None: the clients share their gradients as they are)")
    store = active_store()
    key = None if store is None else _store_key(store, attack, model, victims, threat, defenses, iterations,
                                                 restarts, options)
    if key is not None and (entry := store.get(key)) is not None:
        threat.weights_sent(model)  # the server's side effect on its model, as when computed
        return [_unpacked(run, threat) for run in entry["runs"]]
    runs = _run_cases(attack, model, victims, threat, defenses, iterations, restarts, progress, options)
    if key is not None:
        store.put(key, {"runs": [_packed(run) for run in runs]})
    return runs


def _run_cases(attack, model, victims, threat, defenses, iterations, restarts, progress, options) -> list[AttackRun]:
    b = int(threat.batch_size)
    cases = [parse_defense(d, seed=threat.streams.client) if isinstance(d, str) else d for d in defenses]
    cases = [None if d is None or d.name == "none" else d for d in cases]
    device = next(model.parameters()).device
    threat.weights_sent(model)
    images, labels = victims.images.to(device), victims.labels.to(device)
    shared, cosines, inferred = [], [], []
    for defense in cases:
        with seeded(threat.streams.client, device):  # PRECODE's sampling noise: the client's stream
            shared.append(compute_victim_gradients(model, images, labels, batch_size=b, defense=defense))
        inferred.append(_rule_labels(model, shared[-1], b))  # what the gradient gives away
        if defense is None:
            cosines.append(np.ones(len(victims) // b))
            continue
        with seeded(threat.streams.client, device):  # the same draws, without the defense
            plain = compute_victim_gradients(model, images, labels, batch_size=b)
        cosines.append(metrics.gradient_cosine(shared[-1], plain).cpu().numpy())
    together = shared[0] if len(cases) == 1 else {n: torch.cat([s[n] for s in shared]) for n in shared[0]}
    del shared
    # the true images go in as the probe only: the attack evaluates its objective there for the report
    # (truth_distance), it never optimises towards them
    result = reconstruct(attack, model, together, victims.input_shape, batch_size=b,
                         labels=labels.repeat(len(cases)) if threat.labels_given else None, iterations=iterations,
                         restarts=restarts, seed=threat.streams.attacker, progress=progress,
                         probe=images.repeat(len(cases), 1, 1, 1), **options)
    n, problems = len(victims), len(victims) // b
    return [_scored(_case_slice(result, k, n, problems), victims, threat, cosine, guess)
            for k, (cosine, guess) in enumerate(zip(cosines, inferred))]


def _rule_labels(model: nn.Module, shared: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor | None:
    """The labels iDLG's rule reads off the shared gradients, or ``None`` where it cannot read any (a
    batch larger than the number of classes, a last-layer gradient that is all zero)."""
    try:
        return infer_labels(model, shared, batch_size).cpu()
    except InputError:
        return None


def _plain(value):
    """``value`` as JSON-ready data, or ``None`` when it is not plain data (numbers, strings, lists of them)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return {"v": value}
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return None if any(i is None for i in items) else {"seq": items}
    return None


def _store_key(store, attack, model, victims, threat, defenses, iterations, restarts, options) -> str | None:
    """The store's key of this experiment, or ``None`` when it cannot be stored (a defense given as an
    object, an option that is not plain data)."""
    if not all(d is None or isinstance(d, str) for d in defenses):
        return None
    plain_options = {k: _plain(v) for k, v in options.items()}
    if any(v is None for v in plain_options.values()):
        return None
    iterations, restarts = resolved_budget(attack, iterations, restarts)  # None: the default, said as it is
    config = {
        "attack": attack, "iterations": iterations, "restarts": restarts, "profile": get_profile().name,
        "options": plain_options, "defenses": [d if d is None else d.strip().lower() for d in defenses],
        "server": threat.server, "labels": threat.labels,
        "label_rule": None if threat.labels_given else threat.label_rule,
        "batch_size": int(threat.batch_size), "seed": int(threat.seed),
        "model": model_fingerprint(model), "device": str(next(model.parameters()).device),
        "victims": tensor_fingerprint(victims.images, victims.labels),
    }
    return store.key(config)


def _tensor(value) -> torch.Tensor | None:
    return None if value is None else torch.as_tensor(value)


def _packed(run: AttackRun) -> dict:
    """An :class:`AttackRun` as tensors and plain values (the store's entry; the threat model is the key's)."""
    return {
        "result": {f.name: getattr(run.result, f.name) for f in dataclasses.fields(run.result)},
        "images": run.images, "labels": run.labels, "mse": _tensor(run.mse), "psnr": _tensor(run.psnr),
        "ssim": _tensor(run.ssim), "label_accuracy": float(run.label_accuracy),
        "gradient_cosine": _tensor(run.gradient_cosine), "inferred_labels": run.inferred_labels,
    }


def _unpacked(entry: dict, threat: ThreatModel) -> AttackRun:
    numpy = {k: None if entry[k] is None else entry[k].numpy() for k in ("mse", "psnr", "ssim", "gradient_cosine")}
    return AttackRun(result=AttackResult(**entry["result"]), images=entry["images"], labels=entry["labels"],
                     label_accuracy=entry["label_accuracy"], threat=threat,
                     inferred_labels=entry.get("inferred_labels"), **numpy)


def _case_slice(result: AttackResult, k: int, n: int, problems: int) -> AttackResult:
    """Case ``k`` of a batched result: its ``n`` images and ``problems`` victims' losses."""
    rows, cols = slice(k * n, (k + 1) * n), slice(k * problems, (k + 1) * problems)
    per_problem = {name: None if getattr(result, name) is None else getattr(result, name)[cols]
                   for name in ("truth_distance", "problem_evaluations")}
    return dataclasses.replace(
        result, reconstructions=result.reconstructions[rows], labels=result.labels[rows],
        loss_history=result.loss_history[:, cols],
        restart_losses=None if result.restart_losses is None else result.restart_losses[:, cols],
        diverged=None if result.diverged is None else result.diverged[cols], **per_problem,
    )


def _scored(result: AttackResult, victims: ImageData, threat: ThreatModel, cosine: np.ndarray,
            inferred: torch.Tensor | None = None) -> AttackRun:
    """Step 4: match each reconstruction to its victim within its batch and score it."""
    b = int(threat.batch_size)
    recon = result.reconstructions.cpu()
    recon = recon[metrics.match_to_victims(recon, victims.images, b)]
    predicted = metrics.match_labels(result.labels.cpu(), victims.labels, b)
    inferred = None if inferred is None else metrics.match_labels(inferred.reshape(-1), victims.labels, b)
    small = min(victims.input_shape[1:]) < SSIM_MIN_SIDE
    scores = [metrics.mse(recon, victims.images).numpy(), metrics.psnr(recon, victims.images).numpy(),
              None if small else metrics.ssim(recon, victims.images).numpy()]
    if result.diverged is not None and bool(result.diverged.any()):  # no score for an attack that overflowed
        lost = np.repeat(result.diverged.numpy(), b)
        scores = [None if s is None else np.where(lost, np.nan, s) for s in scores]
    return AttackRun(
        result=result, images=recon, labels=predicted, mse=scores[0], psnr=scores[1], ssim=scores[2],
        label_accuracy=metrics.label_accuracy(predicted, victims.labels), threat=threat, gradient_cosine=cosine,
        inferred_labels=inferred,
    )


def draw_agreement(model: nn.Module, victims: ImageData) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """How alike two draws of each victim's shared gradient are: two forward and backward passes of
    the same images, so for a PRECODE model two draws of its sampling noise (a deterministic model
    agrees with itself up to rounding).

    The noise comes from the global generator: seed it first for a reproducible number.

    Returns:
        ``(per_layer, overall)``: ``{parameter name: cosine per victim}`` and the cosine per victim
        of all layers as one vector (:func:`precode.metrics.layer_cosines`, :func:`precode.metrics.gradient_cosine`).
    """
    first, second = (compute_victim_gradients(model, victims.images, victims.labels) for _ in range(2))
    per_layer = {name: c.numpy() for name, c in metrics.layer_cosines(first, second).items()}
    return per_layer, metrics.gradient_cosine(first, second).numpy()


def label_recovery(model: nn.Module, victims: ImageData, batch_sizes: Sequence[int]) -> tuple[list[float], list[float]]:
    """How well iDLG's label rule (:func:`precode.attacks.infer_labels`) reads the labels off the shared
    gradients of client batches of each size ``B`` in ``batch_sizes`` (no defense, honest server).

    Returns:
        ``(recovered, ceiling)``, one value per batch size: the fraction of images whose label is
        among those inferred for their batch (:func:`precode.metrics.batch_label_recovery`), and the
        most a rule that returns ``B`` distinct classes can reach (the fraction of images whose label
        is not a repeat within its batch, :func:`precode.metrics.distinct_label_fraction`).
    """
    recovered, ceiling = [], []
    for b in batch_sizes:
        shared = compute_victim_gradients(model, victims.images, victims.labels, batch_size=b)
        recovered.append(metrics.batch_label_recovery(infer_labels(model, shared, b), victims.labels, b))
        ceiling.append(metrics.distinct_label_fraction(victims.labels, b))
    return recovered, ceiling
