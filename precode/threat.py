"""The threat model of an experiment: what the server knows, stated once and printed with the results.

Every attack in this book is run against a stated threat model (:class:`ThreatModel`):

* the **server**: ``honest`` (honest-but-curious: it runs the protocol, sends the model's real
  weights and keeps what the clients send) or ``malicious`` (it chooses the weights it sends: here,
  weights that switch PRECODE's sampling off, :func:`precode.attacks.switch_off_sampling`, which
  :meth:`ThreatModel.weights_sent` applies);
* the **labels**: ``given`` (the server knows each victim's label, as in the PRECODE paper's
  evaluation and chapters 2 to 6) or ``inferred`` (not known to the server: read off the shared
  gradient of the last layer by :func:`precode.attacks.infer_labels`, with its ``label_rule``, or
  ``optimised`` with the image, as DLG does: what ``python -m precode attack`` and the evaluation
  grid do);
* the **client's batch size** ``B``: the images behind one shared gradient (the server knows it);
* the **client's defense** (a spec of :func:`precode.defenses.parse_defense`, or a grid's defense
  name such as ``precode+partial-gaussian:0.01``): the server knows which defense and its
  parameters, not the random numbers the client drew;
* the experiment's **seed**, from which the client's and the attacker's random streams are derived
  separately (:func:`precode.seeds.streams`): the attacker never replays the client's noise.

Used by ``python -m precode attack`` (printed, and stored under ``threat_model`` in its JSON), the
evaluation grid (:meth:`precode.evaluation.Grid.threat_model`, stored in each run's
``config.json``) and the chapters, which print the threat model of each experiment.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .attacks.labels import LABEL_SOURCES
from .attacks.malicious import switch_off_sampling
from .errors import InputError
from .seeds import Streams, streams

__all__ = ["ThreatModel", "SERVERS", "LABELS", "LABEL_RULES", "label_rule_of", "papers_threat"]

SERVERS = ("honest", "malicious")
LABELS = ("given", "inferred")
LABEL_RULES = (*LABEL_SOURCES, "optimised")
"""How inferred labels are found: the rules of :func:`precode.attacks.infer_labels`, or DLG's soft
labels optimised with the image."""


def label_rule_of(attack: str) -> str:
    """How an attack that is not given the labels finds them: DLG optimises them with the image
    (``"optimised"``), every other attack reads them off the gradient (``"auto"``)."""
    return "optimised" if str(attack).lower() == "dlg" else "auto"


@dataclasses.dataclass(frozen=True)
class ThreatModel:
    """What the server knows in one experiment (see the module docstring for each field).

    Attributes:
        server: ``"honest"`` (honest-but-curious) or ``"malicious"`` (sends weights that switch
            PRECODE's sampling off; needs a model with a PRECODE bottleneck).
        labels: ``"given"`` or ``"inferred"``.
        label_rule: how inferred labels are found (:data:`LABEL_RULES`: ``auto``, ``bias`` or
            ``weight`` of :func:`precode.attacks.infer_labels`, or ``optimised`` for DLG); ignored
            when the labels are given.
        batch_size: images per shared gradient, ``B >= 1``.
        defense: the client's defense (``"none"``: none).
        seed: the experiment's seed (the model's weights); the client's and the attacker's random
            streams are derived from it separately (:attr:`streams`).

    Raises:
        ValueError: an unknown server or label mode, a batch size below 1 or a negative seed.
    """

    server: str = "honest"
    labels: str = "inferred"
    label_rule: str = "auto"
    batch_size: int = 1
    defense: str = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.server not in SERVERS:
            raise InputError(f"unknown server {self.server!r}; choose one of {list(SERVERS)}")
        if self.labels not in LABELS:
            raise InputError(f"unknown labels {self.labels!r}; choose 'given' (the server knows them) or "
                             "'inferred' (read off the gradient)")
        if self.label_rule not in LABEL_RULES:
            raise InputError(f"unknown label rule {self.label_rule!r}; choose one of {list(LABEL_RULES)}")
        if int(self.batch_size) < 1:
            raise InputError(f"the client's batch size must be at least 1, got {self.batch_size}")
        if int(self.seed) < 0:
            raise InputError(f"the seed must be a non-negative integer, got {self.seed}")

    @property
    def streams(self) -> Streams:
        """The experiment's seed and the client's and the attacker's separate stream seeds."""
        return streams(self.seed)

    def weights_sent(self, model):
        """Make ``model`` the model the server sends, in place, and return it: unchanged by an honest
        server; a malicious one switches PRECODE's sampling off (:func:`precode.attacks.switch_off_sampling`).

        Raises:
            ValueError: a malicious server and a model without a PRECODE bottleneck.
        """
        if self.server == "malicious":
            switch_off_sampling(model)
        return model

    @property
    def labels_given(self) -> bool:
        return self.labels == "given"

    def to_dict(self) -> dict[str, Any]:
        """The fields, plus the derived stream seeds (JSON-ready)."""
        s = self.streams
        return {**dataclasses.asdict(self), "client_seed": s.client, "attacker_seed": s.attacker}

    def __str__(self) -> str:
        server = ("honest-but-curious server (knows the architecture and the weights it sent)"
                  if self.server == "honest" else "malicious server (sends weights that switch PRECODE's sampling off)")
        if self.labels_given:
            labels = "labels given to the attacker"
        elif self.label_rule == "optimised":
            labels = "labels not given: optimised with the image"
        else:
            labels = f"labels inferred from the gradient (rule: {self.label_rule})"
        plural = "image" if int(self.batch_size) == 1 else "images"
        defense = ("no defense" if self.defense == "none"
                   else f"client defense {self.defense} (known to the server, its random draws not)")
        return (f"threat model: {server}; {labels}; client batches of {self.batch_size} {plural}; {defense}; "
                f"seed {self.seed}, client and attacker streams separate")


def papers_threat(attack: str, batch_size: int = 1, seed: int = 0) -> ThreatModel:
    """The threat model of an attack as its paper states it (chapters 2 and 3): DLG optimises the
    labels with the image and iDLG reads them off the gradient (``labels="inferred"``, by
    :func:`label_rule_of`); every other attack is given them. An honest server, no client defense.

    Raises:
        ValueError: a batch size below 1 (as :class:`ThreatModel`).
    """
    given = str(attack).lower() not in ("dlg", "idlg")
    return ThreatModel(labels="given" if given else "inferred", label_rule=label_rule_of(attack),
                       batch_size=batch_size, seed=seed)
