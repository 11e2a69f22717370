"""One federated experiment: its configuration, its data, and the scoring of what the server recovered.

:class:`FederationConfig` holds every knob of a run (model, data, number of clients and rounds,
``E``, ``B``, learning rate, the clients' defense, the server's attack, secure aggregation,
seed). The same object configures the Flower apps (``precode.fl.flower``), the command line
and chapter 10. :func:`score` compares each :class:`~precode.fl.Reconstruction` with the
images the clients really held; this is the experimenter's view, outside the threat model (the
server never sees the originals). :class:`FederationReport` collects a run's rounds, test
accuracy and scores, and writes the command line's JSON.

Used in chapter 10 (``book/10_federated.ipynb``) and by ``python -m precode federate``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import metrics
from ..attacks.base import prepare_gradients, seeded
from ..attacks.updates import UpdateMatcher, gradient_from_update, weight_update
from ..bottleneck import add_precode
from ..data import ImageData, load_data
from ..defenses import parse_defense
from ..errors import InputError
from ..models import MODEL_NAMES, build_model
from .client import client_batch, client_update, images_needed
from .server import CuriousServer, Reconstruction
from .streams import derive_seed

__all__ = [
    "ATTACK_CHOICES", "FederationConfig", "FederationReport", "score", "attack_outcome", "image_outcome",
    "outcome_by_defense", "aggregate_sweep", "aggregate_error",
]

ATTACK_CHOICES = ("analytic", "ig", "none")


@dataclasses.dataclass(frozen=True)
class FederationConfig:
    """Everything that defines a federated run (the command line's flags, one to one).

    Attributes:
        model: ``mlp``, ``cnn`` or ``lenet`` (:func:`precode.models.build_model`), untrained at round 1.
        precode: insert a PRECODE bottleneck before the classifier (:func:`precode.bottleneck.add_precode`).
        data: the data set; clients hold images of its train split, the global model is tested
            on its test split.
        clients: number of clients, all of which take part in every round.
        rounds: FedAvg rounds.
        local_steps: ``E``, each client's local SGD steps per round.
        batch_size: ``B``, images each client trains on per round (a new batch every round).
        lr: the clients' SGD learning rate.
        defense: what each client applies to every step's gradient (:func:`precode.defenses.parse_defense`);
            a tuple of specs gives client ``p`` the spec ``defense[p % len(defense)]`` (clients choose
            their own defenses; chapter 10 compares them in one run).
        attack: the server's attack on each update: ``analytic``, ``ig`` or ``none``.
        secagg: run SecAgg+; the server then sees only the aggregate of the round.
        seed: the experiment's seed (every random stream is derived from it).
        iterations, restarts: Inverting Gradients' budget (``None``: the profile's).
        test_images: how many test images the global model is evaluated on, each round.
    """

    model: str = "mlp"
    precode: bool = False
    data: str = "fashion-mnist"
    clients: int = 10
    rounds: int = 2
    local_steps: int = 1
    batch_size: int = 1
    lr: float = 0.1
    defense: str | tuple[str, ...] = "none"
    attack: str = "analytic"
    secagg: bool = False
    seed: int = 0
    iterations: int | None = None
    restarts: int | None = None
    test_images: int = 2000

    def __post_init__(self) -> None:

        if self.model.lower() not in MODEL_NAMES:
            raise InputError(f"unknown model {self.model!r}; choose one of {', '.join(MODEL_NAMES)}")
        if self.attack.lower() not in ATTACK_CHOICES:
            raise InputError(f"unknown attack {self.attack!r}; choose one of {', '.join(ATTACK_CHOICES)}")
        for name, value, least in (("clients", self.clients, 2), ("rounds", self.rounds, 1),
                                   ("local_steps", self.local_steps, 1), ("batch_size", self.batch_size, 1),
                                   ("iterations", self.iterations, 1), ("restarts", self.restarts, 1),
                                   ("test_images", self.test_images, 1)):
            if value is not None and int(value) < least:
                raise InputError(f"{name.replace('_', '-')} must be at least {least}, got {value}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"the learning rate must be a positive number, got {self.lr}")
        if self.seed < 0:
            raise InputError(f"the seed must be non-negative, got {self.seed}")
        specs = (self.defense,) if isinstance(self.defense, str) else tuple(self.defense)
        if not specs:
            raise InputError("give at least one defense spec (or 'none')")
        for spec in specs:
            parse_defense(spec)  # an invalid spec fails here, before any work

    def defense_of(self, partition: int) -> str:
        """The defense spec client ``partition`` applies."""
        return self.defense if isinstance(self.defense, str) else self.defense[int(partition) % len(self.defense)]

    @property
    def images_needed(self) -> int:
        """Training images the clients hold together (``clients * rounds * batch_size``)."""
        return images_needed(self.clients, self.rounds, self.batch_size)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def build_model(self, input_shape, num_classes: int) -> nn.Module:
        """The global model at round 1: untrained, its weights from the ``model`` stream of the seed."""

        seed = derive_seed(self.seed, "model") % 2**31
        model = build_model(self.model, input_shape, num_classes, seed=seed)
        if self.precode:
            add_precode(model, seed=seed)
        return model

    def train_data(self) -> ImageData:
        """The clients' images: the first :attr:`images_needed` of the train split."""
        data = _load(self.data, "train")
        if len(data) < self.images_needed:
            raise InputError(
                f"{self.clients} clients x {self.rounds} rounds x {self.batch_size} images need "
                f"{self.images_needed} training images, but {self.data} has {len(data)}"
            )
        return data.first(self.images_needed)

    def test_data(self) -> ImageData:
        """The images the server tests the global model on: the first :attr:`test_images` of the test split."""
        data = _load(self.data, "test")
        return data.first(min(self.test_images, len(data)))

    def victims(self, server_round: int, clients) -> ImageData:
        """The images the given clients trained on in ``server_round``, in the order of ``clients``."""
        data = self.train_data()
        parts = [client_batch(data, c, server_round, self.clients, self.batch_size) for c in clients]
        return dataclasses.replace(data, images=torch.cat([p.images for p in parts]),
                                   labels=torch.cat([p.labels for p in parts]))


@functools.lru_cache(maxsize=8)
def _load(name: str, split: str) -> ImageData:
    return load_data(name, split)


mean_ci = metrics.mean_bootstrap_ci
"""Chapter 10's interval: :func:`precode.metrics.mean_bootstrap_ci` (one implementation, in :mod:`precode.metrics`)."""


def image_scores(config: FederationConfig, record: Reconstruction) -> dict[str, torch.Tensor]:
    """Per image of ``record``, in the order of its clients' images: ``mse``, ``psnr``, ``ssim``, ``label``
    (the label the attack used for it, ``-1`` unknown) and ``true_label``.

    Reconstructions are matched to the originals first (:func:`precode.metrics.match_to_victims`: the
    server cannot know which reconstruction of an update belongs to which client image; scoring pairs
    them as favourably for the attacker as possible).
    """
    truth = config.victims(record.server_round, record.clients)
    order = metrics.match_to_victims(record.images, truth.images)
    recon = record.images[order]
    out = {"mse": metrics.mse(recon, truth.images), "psnr": metrics.psnr(recon, truth.images),
           "label": record.labels[order], "true_label": truth.labels}
    if min(truth.input_shape[1:]) >= 7:
        out["ssim"] = metrics.ssim(recon, truth.images)
    return out


def score(config: FederationConfig, record: Reconstruction) -> list[dict[str, Any]]:
    """Per client of ``record``: MSE, PSNR and SSIM of its images' reconstructions and label accuracy.

    A client with ``B > 1`` images gets the mean over its images (:func:`image_scores`). Label
    accuracy is ``None`` when the attacker was handed the labels or could not infer them.
    """
    images = image_scores(config, record)
    b = config.batch_size
    out = []
    for i, client in enumerate(record.clients):
        rows = slice(i * b, (i + 1) * b)
        known = not record.labels_given and bool((images["label"][rows] >= 0).all())
        out.append({
            "client": int(client),
            "mse": float(images["mse"][rows].mean()),
            "psnr": float(images["psnr"][rows].mean()),
            "ssim": float(images["ssim"][rows].mean()) if "ssim" in images else None,
            "label_accuracy": metrics.label_accuracy(images["label"][rows], images["true_label"][rows]) if known
            else None,
        })
    return out


@dataclasses.dataclass
class FederationReport:
    """A finished run: per round the global model's test accuracy and each client's scores.

    Attributes:
        config: the run's configuration.
        test_accuracy: ``{round: accuracy}``, round 0 being the initial model.
        reconstructions: every :class:`~precode.fl.Reconstruction`, in order.
        scores: ``{round: [per-client scores]}`` (:func:`score`), sorted by client.
        seconds: wall-clock time of the whole run, Flower's start-up included.
        attack_seconds: the time spent in the server's attacks.
        data_source: where the clients' images came from.
        engine: how it ran (``"Flower simulation engine (Ray)"`` ...).
        server: the curious server (what it sent, reconstructed and, behind SecAgg+, saw).
    """

    config: FederationConfig
    test_accuracy: dict[int, float]
    reconstructions: list[Reconstruction]
    scores: dict[int, list[dict[str, Any]]]
    seconds: float
    attack_seconds: float
    data_source: str
    engine: str
    server: CuriousServer | None = None

    def clients(self) -> list[dict[str, Any]]:
        """Every client score of every round, flat, each with its ``round``."""
        return [{"round": r, **c} for r, cs in sorted(self.scores.items()) for c in cs]

    def summary(self) -> dict[str, Any]:
        rows = self.clients()

        def values(key):
            return [r[key] for r in rows if r[key] is not None]

        def mean(key):
            v = values(key)
            return float(sum(v) / len(v)) if v else None

        last = max(self.test_accuracy) if self.test_accuracy else None
        return {
            "victims": len(rows),
            "mse": mean("mse"), "psnr": mean("psnr"), "ssim": mean("ssim"),
            "psnr_min": min(values("psnr")) if values("psnr") else None,
            "ssim_min": min(values("ssim")) if values("ssim") else None,
            "ssim_max": max(values("ssim")) if values("ssim") else None,
            "label_accuracy": mean("label_accuracy"),
            "initial_test_accuracy": self.test_accuracy.get(0),
            "final_test_accuracy": None if last is None else self.test_accuracy[last],
            "seconds": self.seconds, "attack_seconds": self.attack_seconds,
        }

    def to_json(self) -> dict[str, Any]:
        """The command line's JSON: ``{"config", "rounds": [...], "summary"}``."""
        config = {**self.config.as_dict(), "data_source": self.data_source, "engine": self.engine}
        rounds = [
            {"round": r, "test_accuracy": self.test_accuracy.get(r), "clients": self.scores.get(r, [])}
            for r in range(1, self.config.rounds + 1)
        ]
        return {"config": config, "rounds": rounds, "summary": self.summary()}


def client_updates(config: FederationConfig, server_round: int = 1,
                   weights: dict[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """What every client of ``config`` sends back in ``server_round``, recomputed without Flower.

    Each client runs :func:`~precode.fl.client_update` on its batch of that round, with its
    defense and its own random stream, exactly as its ``ClientApp`` does; so the result equals the
    replies of a simulation that sent ``weights`` (default: the initial global model).

    Returns:
        ``(sent, received)``: the weights sent, and each client's returned weights by partition.
    """
    train = config.train_data()
    model = config.build_model(train.input_shape, train.num_classes)
    if weights is not None:
        model.load_state_dict(weights)
    sent = {k: v.detach().clone() for k, v in model.state_dict().items()}
    received = []
    for p in range(config.clients):
        batch = client_batch(train, p, server_round, config.clients, config.batch_size)
        received.append(client_update(model, batch.images, batch.labels, local_steps=config.local_steps, lr=config.lr,
                                      defense=config.defense_of(p),
                                      seed=derive_seed(config.seed, "client", server_round, p)))
    return sent, received


def distance_at_truth(config: FederationConfig, server: CuriousServer, server_round: int,
                      received: list[dict] | None = None) -> torch.Tensor:
    """The update distance the *true* images reach, per client of ``server_round`` (the experimenter's check).

    Inverting Gradients minimises the cosine distance between the update its replica simulates and
    the one received. Under a defense the true images need not reach zero; if the attack ends at or
    below this value, its failure to reconstruct is the defense's doing, not a stalled optimiser.
    The replica draws its noise (PRECODE) from the attacker's stream, as in the attack.

    Returns:
        ``(config.clients,)`` distances, by partition.
    """

    sent = server.sent[server_round]
    if received is None:
        _, received = client_updates(config, server_round, sent)
    model = server._global_model(server_round)
    updates = [weight_update(sent, r, model) for r in received]
    stacked = {n: torch.stack([u[n] for u in updates]) for n in updates[0]}
    targets, n = prepare_gradients(model, gradient_from_update(stacked, config.lr))
    truth = config.victims(server_round, range(config.clients))
    shape = truth.input_shape
    matcher = UpdateMatcher(model, targets, config.batch_size, shape, local_steps=server.local_steps, lr=config.lr)
    x = truth.images.reshape(1, n, config.batch_size, *shape)
    y = truth.labels.reshape(1, n, config.batch_size)
    with torch.no_grad(), seeded(derive_seed(config.seed, "attacker", server_round), torch.device("cpu")):
        return matcher.distances(x, y)[0]


def attack_first_round(config: FederationConfig, *, group_size: int | None = None, labels_given: bool = False,
                       attacker_local_steps: int | None = None, updates: tuple | None = None, progress: bool = False,
                       **attack_options) -> tuple[CuriousServer, list[dict[str, Any]]]:
    """Round 1 of ``config`` without Flower: the same clients, the same curious server, no Ray.

    Every client runs :func:`~precode.fl.client_update` on its round-1 batch from the
    initial global model, exactly as its ``ClientApp`` would (:func:`client_updates`); the server
    attacks the updates with ``config.attack`` in one batched call. Used to measure many victims at
    once (chapter 10 attacks 32 and more this way, next to the simulations), never as a replacement
    for the rounds.

    Args:
        config: the experiment (``config.clients`` clients; ``rounds`` is ignored).
        group_size: ``None`` to attack every client's own update; ``K`` to attack the mean of each
            run of ``K`` consecutive clients' updates instead (what secure aggregation among ``K``
            clients reveals, without SecAgg+'s quantisation).
        labels_given: hand the attacker the true labels (the aggregate case; see
            :data:`~precode.fl.THREAT_MODEL`).
        attacker_local_steps: the ``E`` the server's replica assumes (default: the clients' own;
            1 for a naive attacker that treats an update as one gradient).
        updates: ``(sent, received)`` from :func:`client_updates`, to reuse them.
        progress: the attack's progress bar.
        **attack_options: passed to the attack.

    Returns:
        The server (its reconstructions) and one score per client (:func:`score`).
    """
    if config.attack == "none":
        raise InputError("attack_first_round needs an attack (analytic or ig)")
    sent, received = updates if updates is not None else client_updates(config)
    train = config.train_data()
    model = config.build_model(train.input_shape, train.num_classes)
    server = CuriousServer(model, train.input_shape, attack=config.attack, batch_size=config.batch_size,
                           local_steps=attacker_local_steps or config.local_steps, lr=config.lr, seed=config.seed,
                           iterations=config.iterations, restarts=config.restarts, progress=progress,
                           **attack_options)
    server.remember(1, sent)
    if group_size is None:
        records = server.attack_updates(1, list(range(config.clients)), received)
    else:
        if group_size < 1 or config.clients % group_size:
            raise InputError(f"{config.clients} clients cannot be cut into groups of {group_size}")
        groups = [list(range(i, i + group_size)) for i in range(0, config.clients, group_size)]
        means = [{k: torch.stack([received[c][k].double() for c in g]).mean(0).float() for k in sent} for g in groups]
        labels = config.victims(1, range(config.clients)).labels if labels_given else None
        records = server.attack_aggregates(1, groups, means, labels)
    return server, [s for r in records for s in score(config, r)]


def attack_outcome(scores: list[dict[str, Any]], records: list[Reconstruction],
                   floors: dict[int, torch.Tensor] | None = None) -> dict[str, Any]:
    """What an attack on some clients achieved, and whether its optimiser did its part.

    Args:
        scores: the clients' scores (:func:`score`; ``ssim`` and ``label_accuracy``).
        records: the server's reconstructions of those clients.
        floors: ``{round: distances}`` from :func:`distance_at_truth`, by partition; ``None``: skip ``below``.

    Returns:
        ``ssim`` (per victim, an array), ``labels`` (mean label accuracy), ``progress`` (mean final
        over initial update distance: near 0 when the optimiser converged) and ``below`` (the share
        of updates the attack matched at least as well as the true images do, within 1e-3: a defense
        that "works" while ``below`` is high is not an optimiser that stalled).

    Raises:
        ValueError: no scores or no records.
    """
    if not scores or not records:
        raise InputError("attack_outcome needs the scores and the reconstructions of at least one client")
    outcome = {"ssim": np.array([c["ssim"] for c in scores], dtype=float),
               "labels": float(np.mean([c["label_accuracy"] for c in scores])),
               "progress": float(np.mean([r.distance / r.initial_distance for r in records]))}
    if floors is not None:
        outcome["below"] = float(np.mean([r.distance <= float(floors[r.server_round][r.clients[0]]) + 1e-3
                                          for r in records]))
    return outcome


def image_outcome(config: FederationConfig, records: list[Reconstruction]) -> dict[str, Any]:
    """What an attack achieved per *image* (not per client) of ``records``, and its optimiser's progress.

    Returns:
        ``ssim`` and ``psnr`` per image (arrays, the records' images in order; no ``ssim`` below 7x7
        pixels), ``labels`` (the share of images whose label the attack got right: 0 for labels it
        could not infer) and ``progress`` (mean final over initial distance of the records that have
        one, ``None`` for attacks without an optimiser).

    Raises:
        ValueError: no records.
    """
    if not records:
        raise InputError("image_outcome needs the reconstructions of at least one client")
    per_image = [image_scores(config, r) for r in records]
    out = {key: torch.cat([s[key] for s in per_image]).numpy() for key in ("ssim", "psnr") if key in per_image[0]}
    out["labels"] = float(torch.cat([(s["label"] == s["true_label"]).float() for s in per_image]).mean())
    ratios = [r.distance / r.initial_distance for r in records if r.initial_distance]
    out["progress"] = float(np.mean(ratios)) if ratios else None
    return out


def outcome_by_defense(config: FederationConfig, report: FederationReport,
                       floors: dict[int, torch.Tensor] | None = None) -> dict[str, dict[str, Any]]:
    """:func:`attack_outcome` of each defense's clients in a run whose clients defend differently.

    Returns:
        ``{defense spec: outcome}``, in the order of ``config.defense``.
    """
    specs = dict.fromkeys(config.defense_of(c) for c in range(config.clients))
    return {spec: attack_outcome([c for c in report.clients() if config.defense_of(c["client"]) == spec],
                                 [r for r in report.reconstructions if config.defense_of(r.clients[0]) == spec], floors)
            for spec in specs}


def aggregate_sweep(config: FederationConfig, group_sizes, metric: str, threshold: float,
                    updates: tuple | None = None) -> dict[int, tuple[int, int, np.ndarray]]:
    """What secure aggregation among ``K`` clients leaves to the attack, for each ``K`` in ``group_sizes``.

    The round-1 updates of ``config``'s clients (computed once, or ``updates``) are averaged in runs of
    ``K`` clients and attacked with the true labels given (:func:`attack_first_round`); each client
    counts as reconstructed when its ``metric`` (``"ssim"`` or ``"psnr"``) reaches ``threshold``.

    Returns:
        ``{K: (reconstructed clients, clients, the metric per client)}``.
    """
    if metric not in ("ssim", "psnr"):
        raise InputError(f"metric must be 'ssim' or 'psnr', got {metric!r}")
    updates = client_updates(config) if updates is None else updates
    out = {}
    for k in group_sizes:
        _, scores = attack_first_round(config, group_size=k, labels_given=True, updates=updates)
        values = np.array([c[metric] for c in scores])
        out[k] = (int((values >= threshold).sum()), len(values), values)
    return out


def aggregate_error(config: FederationConfig, report: FederationReport, server_round: int = 1) -> tuple[float, float]:
    """How far a SecAgg+ run's aggregate is from the plain mean of the clients' updates (the experimenter's check).

    The clients' updates are recomputed from the weights the server sent (:func:`client_updates`; the
    server itself cannot see them).

    Returns:
        ``(largest |aggregate - plain mean| over all weights, largest entry of the mean update of the
        first layer)``: the quantisation error and the scale it is to be compared with.

    Raises:
        ValueError: the run has no SecAgg+ aggregate for that round.
    """
    server = report.server
    if server is None or server_round not in server.aggregates:
        raise InputError(f"the run has no SecAgg+ aggregate for round {server_round}; run it with secagg=True")
    sent, seen = server.sent[server_round], server.aggregates[server_round]
    _, own = client_updates(config, server_round, sent)
    plain_mean = {k: torch.stack([o[k] for o in own]).mean(0) for k in sent}
    first = next(iter(sent))
    return (max(float((seen[k] - plain_mean[k]).abs().max()) for k in sent),
            float((plain_mean[first] - sent[first]).abs().max()))
