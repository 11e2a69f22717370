"""One federated experiment: its configuration, its data, and the scoring of what the server recovered.

:class:`FederationConfig` holds every knob of a run (model, data, number of clients and rounds,
``E``, ``B``, learning rate, the clients' defense, the server's attack, secure aggregation,
seed). The same object configures the Flower apps (:mod:`precode.fl.flower`), the command line
and chapter 7. :func:`score` compares each :class:`~precode.fl.server.Reconstruction` with the
images the clients really held; this is the experimenter's view, outside the threat model (the
server never sees the originals). :class:`FederationReport` collects a run's rounds, test
accuracy and scores, and writes the command line's JSON.

Used in chapter 7 (``book/07_federated.ipynb``) and by ``python -m precode federate``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import torch
from torch import nn

from .. import metrics
from ..data import ImageData, load_data
from .client import client_batch, images_needed
from .server import Reconstruction
from .streams import derive_seed

__all__ = ["ATTACK_CHOICES", "FederationConfig", "FederationReport", "match_reconstructions", "score"]

ATTACK_CHOICES = ("analytic", "ig", "none")


@dataclasses.dataclass(frozen=True)
class FederationConfig:
    """Everything that defines a federated run (the command line's flags, one to one).

    Attributes:
        model: ``mlp``, ``cnn`` or ``lenet`` (:func:`precode.build_model`), untrained at round 1.
        precode: insert a PRECODE bottleneck before the classifier (:func:`precode.add_precode`).
        data: the data set; clients hold images of its train split, the global model is tested
            on its test split.
        clients: number of clients, all of which take part in every round.
        rounds: FedAvg rounds.
        local_steps: ``E``, each client's local SGD steps per round.
        batch_size: ``B``, images each client trains on per round (a new batch every round).
        lr: the clients' SGD learning rate.
        defense: what each client applies to every step's gradient (:func:`precode.defenses.parse_defense`);
            a tuple of specs gives client ``p`` the spec ``defense[p % len(defense)]`` (clients choose
            their own defenses; chapter 7 compares them in one run).
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
        from ..defenses import parse_defense
        from ..models import MODEL_NAMES

        if self.model.lower() not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODEL_NAMES)}")
        if self.attack.lower() not in ATTACK_CHOICES:
            raise ValueError(f"unknown attack {self.attack!r}; choose one of {', '.join(ATTACK_CHOICES)}")
        for name, value, least in (("clients", self.clients, 2), ("rounds", self.rounds, 1),
                                   ("local_steps", self.local_steps, 1), ("batch_size", self.batch_size, 1),
                                   ("iterations", self.iterations, 1), ("restarts", self.restarts, 1),
                                   ("test_images", self.test_images, 1)):
            if value is not None and int(value) < least:
                raise ValueError(f"{name.replace('_', '-')} must be at least {least}, got {value}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"the learning rate must be a positive number, got {self.lr}")
        if self.seed < 0:
            raise ValueError(f"the seed must be non-negative, got {self.seed}")
        specs = (self.defense,) if isinstance(self.defense, str) else tuple(self.defense)
        if not specs:
            raise ValueError("give at least one defense spec (or 'none')")
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
        from ..bottleneck import add_precode
        from ..models import build_model

        seed = derive_seed(self.seed, "model") % 2**31
        model = build_model(self.model, input_shape, num_classes, seed=seed)
        if self.precode:
            add_precode(model, seed=seed)
        return model

    def train_data(self) -> ImageData:
        """The clients' images: the first :attr:`images_needed` of the train split."""
        data = _load(self.data, "train")
        if len(data) < self.images_needed:
            raise ValueError(
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


def match_reconstructions(reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """For each original, the index of its reconstruction: the least-MSE one-to-one assignment.

    The server cannot know which reconstruction of a batch (or an aggregate) belongs to which
    client's image; scoring pairs them as favourably for the attacker as possible.
    """
    from scipy.optimize import linear_sum_assignment

    if len(reconstructions) == 1:
        return torch.zeros(1, dtype=torch.long)
    cost = torch.cdist(originals.flatten(1).double(), reconstructions.clamp(0, 1).flatten(1).double()).square()
    rows, cols = linear_sum_assignment(cost.numpy())
    order = torch.empty(len(originals), dtype=torch.long)
    order[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return order


def mean_ci(values, *, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and its 95% percentile-bootstrap interval ``(mean, low, high)``.

    The bootstrap means are means of the data, so the interval never leaves the metric's range
    (SSIM's ``[-1, 1]``, a rate's ``[0, 1]``), unlike ``mean +- 1.96 SE`` on a few values near a bound.
    """
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    if x.numel() == 0 or not torch.isfinite(x).all():
        raise ValueError("need at least one finite value")
    g = torch.Generator().manual_seed(seed)
    means = x[torch.randint(len(x), (resamples, len(x)), generator=g)].mean(1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return float(x.mean()), float(low), float(high)


def score(config: FederationConfig, record: Reconstruction) -> list[dict[str, Any]]:
    """Per client of ``record``: MSE, PSNR and SSIM of its images' reconstructions and label accuracy.

    A client with ``B > 1`` images gets the mean over its images. Label accuracy is ``None`` when
    the attacker was handed the labels or could not infer them. Reconstructions are matched to
    the originals first (:func:`match_reconstructions`), within the update.
    """
    truth = config.victims(record.server_round, record.clients)
    order = match_reconstructions(record.images, truth.images)
    recon, labels = record.images[order], record.labels[order]
    mse, psnr = metrics.mse(recon, truth.images), metrics.psnr(recon, truth.images)
    ssim = metrics.ssim(recon, truth.images) if min(truth.input_shape[1:]) >= 7 else None
    b = config.batch_size
    out = []
    for i, client in enumerate(record.clients):
        rows = slice(i * b, (i + 1) * b)
        known = not record.labels_given and bool((labels[rows] >= 0).all())
        out.append({
            "client": int(client),
            "mse": float(mse[rows].mean()),
            "psnr": float(psnr[rows].mean()),
            "ssim": None if ssim is None else float(ssim[rows].mean()),
            "label_accuracy": metrics.label_accuracy(labels[rows], truth.labels[rows]) if known else None,
        })
    return out


@dataclasses.dataclass
class FederationReport:
    """A finished run: per round the global model's test accuracy and each client's scores.

    Attributes:
        config: the run's configuration.
        test_accuracy: ``{round: accuracy}``, round 0 being the initial model.
        reconstructions: every :class:`~precode.fl.server.Reconstruction`, in order.
        scores: ``{round: [per-client scores]}`` (:func:`score`), sorted by client.
        seconds: wall-clock time of the whole run, Flower's start-up included.
        attack_seconds: the time spent in the server's attacks.
        data_source: where the clients' images came from.
        engine: how it ran (``"Flower simulation engine (Ray)"`` ...).
    """

    config: FederationConfig
    test_accuracy: dict[int, float]
    reconstructions: list[Reconstruction]
    scores: dict[int, list[dict[str, Any]]]
    seconds: float
    attack_seconds: float
    data_source: str
    engine: str

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
