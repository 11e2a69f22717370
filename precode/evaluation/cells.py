"""Running one cell of the grid, and training a model under a defense for its test accuracy.

A cell is one experiment of :func:`precode.experiment.run_attack`, the function behind
``python -m precode attack``, with the grid's threat model, budget and seed, so that a cell of the
summary and the same attack run alone give the same numbers:

1. the victims are the first ``N`` test images of the setting's data set;
2. the model is built from the seed, untrained (PRECODE: a bottleneck with weights from the
   seed is inserted before the classifier, or before the layer of ``precode@LAYER``); a trained
   cell (``weights="trained"``) loads the weights its model reached in the grid's training;
3. every victim's client shares the gradient of its own image, after the defense (its noise and
   PRECODE's from the client's stream of the seed, :func:`precode.seeds.streams`; for
   ``precode+SPEC`` the gradient defense ``SPEC`` on the PRECODE model's gradient);
4. the attack runs on all victims at once (:func:`precode.attacks.reconstruct`, labels inferred
   from the gradients, the grid's budget, the attacker's stream of the seed); the cells that attack
   one model without PRECODE under other defenses run in one call (:func:`attack_cells`: the same
   numbers up to rounding, in a fraction of the time);
5. each reconstruction is compared with its victim: MSE, PSNR, SSIM, whether the label was
   recovered, and whether its nearest real image (by MSE, among the victims and the ``pool``
   following test images) is the victim itself (identification).

Training (:func:`train_model`) follows ``python -m precode train``: the model built from the same
seed, trained with Adam under the defense (DP-SGD through Opacus) on a seeded subset of the
training split, tested after every epoch.

Used by ``python -m precode evaluate`` and chapter 7.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import metrics
from ..attacks import IG_ATTACKS
from ..bottleneck import add_precode, sampling_std
from ..data import ImageData
from ..defenses import TrainingResult, parse_defense, train_with_defense
from ..errors import InputError
from ..experiment import AttackRun, run_attack_cases
from ..experiment_store import active_store, tensor_fingerprint
from ..federated import compute_victim_gradients
from ..models import build_model
from ..release import Release, train_on_releases
from ..training import seeded
from .grid import Cell, Grid, Setting, split_defense
from .schema import TRAINING_FIELDS

__all__ = [
    "victim_model", "cell_model", "train_defended", "defended_gradients", "attack_cell", "attack_cells",
    "batchable", "score_cell", "run_cells", "train_model", "TRAINING_FIELDS",
]


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def victim_model(model: str, input_shape, num_classes: int, defense: str, seed: int) -> nn.Module:
    """The model a cell attacks: built from ``seed``; PRECODE inserts its bottleneck (seeded too)
    before the classifier, or before ``LAYER`` for ``precode@LAYER``."""
    net = build_model(model, input_shape, num_classes, seed=seed)
    at = split_defense(defense).at
    if at is not None:
        add_precode(net, before=at, seed=seed)
    return net


def train_defended(model: str, defense: str, train: ImageData, test: ImageData | None = None, *, epochs: int,
                   seed: int = 0, lr: float = 1e-3, batch_size: int = 64,
                   releases: bool = True) -> tuple[nn.Module, TrainingResult]:
    """Build the model a grid defense name describes (:func:`victim_model`: PRECODE's bottleneck where
    the name puts it) and train it under the name's gradient defense (``precode+SPEC``: ``SPEC``), on
    the CPU or the GPU.

    Args:
        releases: ``True`` (default): the training is made of the releases the attacks read
            (:func:`precode.release.train_on_releases`: ``batch_size`` clients a step each share the
            defended gradient of one image); ``False``: the PRECODE paper's view, the defense applied
            once to each step's mean gradient of ``batch_size`` images
            (:func:`precode.defenses.train_with_defense`; DP-SGD: Opacus' central DP-SGD), another
            system than the release.

    Returns:
        ``(model, result)``: the trained model and its :class:`~precode.defenses.TrainingResult`
        (``history`` per epoch, ``test_accuracy`` on ``test`` when given).

    Used by :func:`train_model` (the grid's trainings), chapter 5 and chapter 8 (its CNN variants).
    """
    net = victim_model(model, train.input_shape, train.num_classes, defense, seed).to(_device())
    spec = split_defense(defense).gradient
    if releases:
        release = Release(spec, images=1, clients=batch_size)
        return net, train_on_releases(net, train, test, release=release, epochs=epochs, lr=lr, seed=seed)
    return net, train_with_defense(net, train, test, defense=spec, epochs=epochs, lr=lr,
                                   batch_size=batch_size, seed=seed, progress=False)


def defended_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, defense: str,
                       seed: int) -> dict[str, torch.Tensor]:
    """What the victims' clients share: one gradient per image, after the defense.

    The defense's noise comes from its own generator, seeded with ``seed`` and drawn victim by
    victim in order; PRECODE's sampling noise from the global generator, seeded with ``seed``
    for this call (the caller's random state is restored afterwards). :func:`run_cells` passes the
    client's stream (:func:`precode.seeds.streams`), never the attacker's.
    """
    spec = split_defense(defense).gradient
    transform = None if spec == "none" else parse_defense(spec, seed=seed)
    with seeded(seed, images.device):
        return compute_victim_gradients(model, images, labels, batch_size=1, defense=transform)


def attack_cell(cell: Cell, grid: Grid, victims, *, server: str = "honest", iterations: int | None = None,
                **options) -> AttackRun:
    """Steps 2 to 4 for one cell: build the model, let the clients share, run the attack
    (:func:`precode.experiment.run_attack` under the grid's threat model).

    Args:
        cell: the cell (setting, defense, attack).
        grid: budgets and seed.
        victims: the setting's victims (:class:`~precode.data.ImageData`).
        server: ``"honest"`` (the grid's threat model) or ``"malicious"``: the server first makes the
            model the one it sends (:meth:`precode.threat.ThreatModel.weights_sent`), chapter 8.
        iterations: the attack's steps, if not the grid's budget (chapter 9 gives ``ig-eot`` fewer
            steps of several noise draws each, for an equal number of evaluations).
        **options: the attack's keyword arguments (``draws`` of ``ig-eot``).

    Returns:
        The experiment's :class:`~precode.experiment.AttackRun`: per victim MSE, PSNR, SSIM and the
        label, and the attack's own result (its ``loss_history`` and ``evaluations`` say how far the
        optimisation got and what it spent).
    """
    return attack_cells([cell], grid, victims, server=server, iterations=iterations, **options)[0]


def batchable(cell: Cell) -> tuple | None:
    """What cells must share to be attacked in one call (:func:`attack_cells`), or ``None`` when the
    cell is attacked alone: its model, data and attack, an attack of the Inverting Gradients family
    on a model without PRECODE.

    A PRECODE replica draws its sampling noise for all the problems of a call at once, so a cell
    batched with others would see other draws than alone, and a resumed run other numbers than an
    uninterrupted one; a deterministic model gives the same numbers either way, up to rounding.
    iDLG's L-BFGS is left alone: a batch evaluates every problem until the last one has finished
    its line searches, which measured slower than one call per cell (the quick grid's 11 MLP cells:
    140 s batched, 83 s alone); so is the analytic attack, which has no loop to share.
    A trained model's cell is attacked alone too (its model's weights are its own).
    """
    if split_defense(cell.defense).precode or cell.attack not in IG_ATTACKS or cell.weights != "initial":
        return None
    return cell.setting, cell.attack, cell.labels


def cell_model(cell: Cell, grid: Grid, victims, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The model a cell attacks, on the CPU or the GPU: :func:`victim_model` at its initial weights,
    or for a trained cell (``cell.weights == "trained"``) with the trained weights ``state``.

    Raises:
        ValueError: a trained cell without ``state``, or ``state`` for an initial one.
    """
    if (cell.weights == "trained") != (state is not None):
        raise InputError(f"cell {cell.key}: the trained weights are given exactly when the cell attacks the "
                         "trained model")
    model = victim_model(cell.setting.model, victims.input_shape, victims.num_classes, cell.defense, grid.seed)
    if state is not None:
        model.load_state_dict(state)
    return model.to(_device())


def attack_cells(cells: Sequence[Cell], grid: Grid, victims, *, server: str = "honest",
                 iterations: int | None = None, state: dict[str, torch.Tensor] | None = None,
                 **options) -> list[AttackRun]:
    """:func:`attack_cell` for cells that attack the same model (one :func:`batchable` key) under
    other client defenses, in one attack call (:func:`precode.experiment.run_attack_cases`).

    Each cell's clients share exactly what they share alone (each defense seeded with the client's
    stream); the attack then optimises every victim of every cell as its own problem in one batch,
    so each cell gets the numbers it gets alone, up to floating-point rounding, at a fraction of the
    time where a step costs little more for more victims (the MLP on a CPU: 8 victims about 15 ms a
    step, 32 about 19 ms). Each run's ``result.seconds`` are those of the whole call. ``state``: the
    trained weights of a trained cell (:func:`cell_model`).

    Raises:
        ValueError: no cells, or cells that :func:`batchable` does not put together.
    """
    if not cells:
        raise InputError("give at least one cell")
    first = cells[0]
    if len(cells) > 1 and (batchable(first) is None or any(batchable(c) != batchable(first) for c in cells)):
        raise InputError(f"cells {[c.key for c in cells]} cannot be attacked together: they need one model "
                         "without PRECODE, one data set and one attack (see batchable)")
    model = cell_model(first, grid, victims, state)
    threat = dataclasses.replace(grid.threat_model(first.defense, first.attack, first.labels), server=server)
    budget, restarts = grid.budget(first.attack)
    runs = run_attack_cases(first.attack, model, victims, threat, [split_defense(c.defense).gradient for c in cells],
                            iterations=budget if iterations is None else iterations, restarts=restarts, **options)
    return [dataclasses.replace(run, threat=dataclasses.replace(threat, defense=c.defense))
            for c, run in zip(cells, runs)]


def score_cell(run: AttackRun, victims, pool: torch.Tensor, threshold: float) -> list[dict[str, Any]]:
    """Step 5: one dict per victim (``victim, label, label_pred, label_inferred, mse, psnr, ssim,
    identified, success, evaluations, distance, truth_distance, status``).

    ``label_pred`` is the label the attack used (given, or its own inference), ``label_inferred``
    the one iDLG's rule reads off the victim's shared gradient (whether the attacker could have had
    it without being given it); ``evaluations`` what the attack spent on the victim, ``distance``
    where its matching distance ended and ``truth_distance`` that distance at the true image (empty
    for the analytic attack, which has no objective); a victim the attack diverged on has ``status``
    ``diverged``, no scores and no success."""
    if run.ssim is None:
        raise InputError("a grid cell is judged by SSIM, which these images are too small for (under 7x7 pixels)")
    candidates = torch.cat([victims.images, pool]) if len(pool) else victims.images
    nearest = metrics.nearest_neighbours(run.images, candidates)
    spent = run.result.victim_evaluations()
    ended, truth = run.result.distance, run.result.truth_distance

    def number(values, i):
        return None if values is None or not math.isfinite(float(values[i])) else float(values[i])

    rows = [
        {"victim": i, "label": int(victims.labels[i]), "label_pred": int(run.labels[i]),
         "label_inferred": None if run.inferred_labels is None else int(run.inferred_labels[i]),
         "mse": float(run.mse[i]), "psnr": float(run.psnr[i]), "ssim": float(run.ssim[i]),
         "identified": int(nearest[i] == i), "success": int(float(run.ssim[i]) >= threshold),
         "evaluations": int(spent[i]), "distance": number(ended, i), "truth_distance": number(truth, i),
         "status": "ok"}
        for i in range(len(victims))
    ]
    for i in np.flatnonzero(run.diverged):  # the attack overflowed: no score, and a failure of the attack
        rows[i].update(mse=None, psnr=None, ssim=None, identified=0, success=0, status="diverged")
    return rows


def run_cells(cells: Sequence[Cell], grid: Grid, victims, pool: torch.Tensor,
              state: dict[str, torch.Tensor] | None = None) -> list[tuple[list[dict[str, Any]], float, torch.Tensor,
                                                                         float | None]]:
    """Attack the victims of cells that :func:`batchable` puts together (one cell: alone) and
    measure every reconstruction (:func:`attack_cells`, :func:`score_cell`).

    Args:
        cells: the cells (setting, defense, attack).
        grid: budgets, seed and threshold.
        victims: the setting's victims (:class:`~precode.data.ImageData`, the first ``N`` test images).
        pool: further real test images, ``(P, C, H, W)``, for the identification rate.
        state: the trained weights, for a trained cell (attacked alone).

    Returns:
        Per cell ``(rows, seconds, reconstructions, sigma)``: one dict per victim (``victim, label,
        label_pred, mse, psnr, ssim, identified, success``), the cell's share of the attack call's
        wall-clock seconds (the call's seconds over the number of cells), the reconstructions,
        ``(N, C, H, W)`` on the CPU, and the mean sigma of PRECODE's sampling noise on the victims at
        the attacked weights (:func:`precode.bottleneck.sampling_std`; ``None`` without PRECODE).
    """
    runs = attack_cells(cells, grid, victims, state=state)
    sigma = sampling_std(cell_model(cells[0], grid, victims, state), victims.images.to(_device()))
    return [(score_cell(run, victims, pool, grid.threshold), float(run.result.seconds) / len(cells), run.images,
             sigma) for run in runs]


def train_model(setting: Setting, defense: str, grid: Grid, train_full,
                test_full) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, torch.Tensor]]:
    """Train the setting's model under ``defense`` and return its history, a description and its weights.

    Args:
        setting: which model; trained on ``setting.train_data``.
        defense: a defense name of the grid (``precode``: the bottleneck, trained without other defense;
            ``precode+SPEC``: the bottleneck, trained under the gradient defense ``SPEC``).
        grid: epochs, learning rate, batch size, subset sizes and seed.
        train_full, test_full: the train and test splits of ``setting.train_data``.

    Returns:
        ``(history, info, state)``: one dict per epoch with :data:`TRAINING_FIELDS` (``epsilon`` only
        for DP-SGD), ``{"train_images", "test_images", "epsilon", "training"}`` (``training``: how,
        in words) and the trained weights (the model's ``state_dict`` on the CPU; the grid's trained
        cells attack them). The model is trained on the defense's releases
        (:func:`train_defended`), the system whose release the cells attack. With the experiment store
        in use (:mod:`precode.experiment_store`, the chapters), a training of the very same
        configuration (model, defense, release, budget, seed, data, package code) is read from it.
    """
    train = train_full.subset(grid.train_images)
    test = test_full.subset(grid.test_images)
    store = active_store()  # the chapters' store: chapter 8's grid trains several models as chapter 7's does
    key = None if store is None else store.key({
        "kind": "grid training", "model": setting.model, "defense": defense, "epochs": grid.epochs, "lr": grid.lr,
        "release": dataclasses.asdict(grid.release(defense)), "seed": grid.seed, "device": str(_device()),
        "train": tensor_fingerprint(train.images, train.labels), "test": tensor_fingerprint(test.images, test.labels)})
    if key is not None and (entry := store.get(key)) is not None:
        return entry["history"], entry["info"], entry["state"]
    start = time.perf_counter()
    model, result = train_defended(setting.model, defense, train, test, epochs=grid.epochs, lr=grid.lr,
                                   batch_size=grid.batch_size, seed=grid.seed)
    history = [{k: h.get(k) for k in TRAINING_FIELDS} for h in result.history]
    steps = grid.epochs * math.ceil(len(train) / grid.batch_size)
    info = {"train_images": len(train), "test_images": len(test), "epsilon": result.epsilon,
            "train_seconds": time.perf_counter() - start,
            "training": f"on releases: {grid.batch_size} clients x 1 image a step, {steps} Adam steps"}
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    if key is not None:
        store.put(key, {"history": history, "info": info, "state": state})
    return history, info, state
