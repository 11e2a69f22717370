"""Gradient inversion attacks: what an honest-but-curious server recovers from shared gradients.

One threat model for every attack (``precode.attacks.base``): the server knows the model's
weights and receives the shared gradients of ``N`` victims (batches of ``B`` images each); the
labels are known or read off the gradients. :func:`reconstruct` runs an attack by name and
returns an :class:`AttackResult` (reconstructions, labels, loss history, seconds).

The attacks by name (``precode.attacks.dlg``, ``.labels``, ``.ig``, ``.analytic`` and ``.adaptive``
hold them):

* ``dlg``: Deep Leakage from Gradients: image and soft label, L2 distance, L-BFGS (``dlg``);
* ``idlg``: iDLG: label from the last layer's gradient (``labels``), then the image (``dlg``);
* ``ig``: Inverting Gradients: cosine distance, TV prior, signed Adam, pixel box (``ig``);
* ``analytic``: exact division of the first linear layer's gradients (``analytic``);
* ``ig-omit``: IG on the gradients before PRECODE's sampling only (``adaptive``, chapter 8);
* ``ig-joint``: IG that optimises PRECODE's noise jointly with the images (``adaptive``, chapter 8);
* ``ig-mean``: IG on the deterministic replica of PRECODE (its noise fixed at 0; ``adaptive``,
  chapter 9);
* ``ig-eot``: IG on the distance averaged over several draws of PRECODE's noise (``adaptive``,
  chapter 9);
* ``encoder-leak``: divide PRECODE's encoder gradients for its input, then invert the layers in
  front (``adaptive``, chapter 8).

A malicious server (``precode.attacks.malicious``, :func:`switch_off_sampling`) changes the weights it sends so
that PRECODE samples nothing; then plain ``ig`` attacks.

Example (chapter 2)::

    from precode import attacks, build_model, compute_victim_gradients, load_data
    data = load_data("fashion-mnist").first(8)
    model = build_model("mlp", data.input_shape, data.num_classes, seed=0)
    shared = compute_victim_gradients(model, data.images, data.labels)
    result = attacks.reconstruct("ig", model, shared, input_shape=data.input_shape)

Used in chapter 2 (``book/02_attacks.ipynb``) and in chapters 4, 6 and 8.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import InputError
from ..profiles import get_profile
from .adaptive import encoder_leak, ig_eot, ig_joint, ig_mean, ig_omit, layers_before_sampling, layers_in_front
from .analytic import analytic_attack, first_linear_layer, linear_layer_input
from .base import AttackResult, prepare_gradients
from .dlg import dlg, idlg
from .ig import inverting_gradients, total_variation
from .labels import infer_labels, last_layer
from .lbfgs import batched_lbfgs
from .malicious import SIGMA_BIAS, switch_off_sampling
from .matching import GradientMatcher, select_layers

__all__ = [
    "resolved_budget",
    "ATTACK_NAMES", "ATTACKS", "IG_ATTACKS", "PROBED_ATTACKS", "AttackResult", "reconstruct", "dlg", "idlg",
    "inverting_gradients",
    "analytic_attack", "infer_labels", "last_layer", "first_linear_layer", "linear_layer_input",
    "GradientMatcher", "select_layers",
    "total_variation", "batched_lbfgs", "prepare_gradients", "ig_omit", "ig_joint", "ig_mean", "ig_eot", "encoder_leak",
    "layers_before_sampling", "layers_in_front", "switch_off_sampling", "SIGMA_BIAS",
]

ATTACKS: dict[str, Callable[..., AttackResult]] = {
    "dlg": dlg,
    "idlg": idlg,
    "ig": inverting_gradients,
    "analytic": analytic_attack,
    "ig-omit": ig_omit,
    "ig-joint": ig_joint,
    "ig-mean": ig_mean,
    "ig-eot": ig_eot,
    "encoder-leak": encoder_leak,
}
"""Every attack by its name: :func:`reconstruct` calls ``ATTACKS[name]``."""
ATTACK_NAMES = tuple(ATTACKS)
"""The attacks' names, in the order above (the command line's choices)."""
IG_ATTACKS = ("ig", "ig-omit", "ig-joint", "ig-mean", "ig-eot")
"""The attacks built on Inverting Gradients' loop: their budget is Inverting Gradients' (steps, restarts)."""
PROBED_ATTACKS = ("dlg", "idlg", "ig", "ig-omit", "ig-mean", "ig-eot")
"""The attacks that report ``truth_distance`` (their objective at the true images) when given a ``probe``:
those that minimise a matching distance over the images alone."""


def resolved_budget(attack: str, iterations: int | None = None, restarts: int | None = None,
                    profile=None) -> tuple[int | None, int | None]:
    """The ``(iterations, restarts)`` an attack runs with when given these (``None``: its default): the
    profile's (:func:`precode.profiles.get_profile`, or ``profile``) for Inverting Gradients and the
    attacks built on it (:data:`IG_ATTACKS`) and for DLG and iDLG (one restart); ``(None, None)`` for
    the analytic attack, which has no loop; the encoder leak's own default steps and one start."""
    profile = get_profile() if profile is None else profile
    if attack == "analytic":
        return None, None
    if attack == "encoder-leak":
        return iterations, None
    if attack in IG_ATTACKS:
        return (profile.ig_iterations if iterations is None else int(iterations),
                profile.ig_restarts if restarts is None else int(restarts))
    return (profile.dlg_iterations if iterations is None else int(iterations), 1 if restarts is None else int(restarts))


def reconstruct(
    name: str,
    model: nn.Module,
    shared_gradients: dict[str, torch.Tensor],
    input_shape: Sequence[int],
    batch_size: int = 1,
    labels: torch.Tensor | Sequence[int] | None = None,
    iterations: int | None = None,
    restarts: int | None = None,
    seed: int = 0,
    progress: bool = True,
    probe: torch.Tensor | None = None,
    **options,
) -> AttackResult:
    """Run the attack called ``name`` on the shared gradients of one or many victims.

    Args:
        name: one of :data:`ATTACK_NAMES` (``dlg``, ``idlg``, ``ig``, ``analytic``, ``ig-omit``,
            ``ig-joint``, ``ig-mean``, ``ig-eot``, ``encoder-leak``).
        model: the global model (the server knows its weights); the attack runs on the
            device of its parameters.
        shared_gradients: ``{parameter name: gradient}`` of one victim, or stacked ``(N, ...)``
            for ``N`` victims (:func:`precode.federated.compute_victim_gradients`).
        input_shape: ``(C, H, W)`` of one image.
        batch_size: images per victim ``B``.
        labels: known labels ``(N * B,)``; ``None``: inferred (``idlg``, ``ig``, ``analytic``)
            or optimised (``dlg``).
        iterations, restarts: default to the profile's values (:func:`precode.profiles.get_profile`).
        seed: seeds the starting points and PRECODE's noise; the same seed gives the same result.
        progress: tqdm progress bar on stderr.
        probe: the true images ``(N * B, C, H, W)``, which only the scoring side knows: the attack
            never uses them; those of :data:`PROBED_ATTACKS` evaluate their own matching distance
            there and return it as the result's ``truth_distance`` (the others ignore it).
        **options: the attack's keyword arguments (``lr``, ``tv``, ``layers`` ... see each attack).

    Returns:
        :class:`AttackResult` with ``reconstructions (N * B, C, H, W)``, ``labels (N * B,)``,
        ``loss_history`` and ``seconds``.

    Raises:
        ValueError: unknown attack, gradients that do not fit the model or are not finite,
        or an attack the model does not allow (``analytic`` without a leading linear layer).
    """
    key = str(name).lower()
    if key not in ATTACKS:
        raise InputError(f"unknown attack {name!r}; choose one of {list(ATTACK_NAMES)}")
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if probe is not None and key in PROBED_ATTACKS:
        options["probe"] = probe
    return ATTACKS[key](model, shared_gradients, input_shape, batch_size=int(batch_size), labels=labels,
                        iterations=iterations, restarts=restarts, seed=seed, progress=progress, **options)
