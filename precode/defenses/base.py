"""What every defense is: a transform of the shared gradients that a client also trains under.

A :class:`Defense` acts in two places, so that chapters 4 and 5 can weigh privacy against cost with
one object:

* on the gradient a client shares (what the server, and so the attacker, sees): calling the
  defense on a dict ``parameter name -> gradient`` returns the defended dict, so it can be
  passed as ``defense=`` to :func:`precode.federated.compute_shared_gradients` and
  :func:`precode.federated.compute_victim_gradients`, or used through
  :meth:`Defense.shared_gradients`;
* during training (:meth:`Defense.train`), so that accuracy and convergence are measured under
  the same defense.

Random defenses draw from their own ``torch.Generator``, seeded when the defense is made, so a
sequence of calls is reproducible; :meth:`Defense.reseed` starts it again.

Used in chapters 4 and 5 (``book/04_defenses.ipynb``, ``book/05_defense_costs.ipynb``).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data import ImageData
from ..errors import InputError
from ..federated import compute_shared_gradients
from ..training import train

__all__ = ["Defense", "NoDefense", "TrainingResult", "SharedGradients"]

SharedGradients = dict[str, torch.Tensor]


@dataclasses.dataclass
class TrainingResult:
    """What training under a defense produced.

    Attributes:
        history: one dict per epoch with ``epoch, train_loss, train_accuracy, test_loss,
            test_accuracy, seconds`` (as :func:`precode.training.train` returns it; DP-SGD adds
            ``epsilon`` spent up to that epoch).
        epsilon: the privacy budget spent, at ``delta`` (DP-SGD only; ``None`` for the other
            defenses, ``math.inf`` for DP-SGD without noise).
        delta: the ``delta`` of ``epsilon`` (DP-SGD only).
    """

    history: list[dict]
    epsilon: float | None = None
    delta: float | None = None

    @property
    def test_accuracy(self) -> float | None:
        """Test accuracy after the last epoch (``None`` without test data)."""
        return self.history[-1]["test_accuracy"] if self.history else None

    @property
    def seconds(self) -> float:
        """Wall-clock seconds of the whole training, the per-epoch evaluation included."""
        return self.history[-1]["seconds"] if self.history else 0.0


class Defense:
    """A defense: transforms the gradients a client shares, and the client trains under it.

    Subclasses set :attr:`name`, return their knobs from :attr:`params` and implement
    :meth:`__call__`; DP-SGD also overrides :meth:`shared_gradients` and :meth:`train`.

    Args:
        seed: seeds the defense's own random generator (noise), so runs are reproducible.
    """

    name: str = "defense"

    def __init__(self, seed: int = 0):
        self.reseed(seed)

    # -- identity -----------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        """The defense's parameters, by name (units in the class docstring)."""
        return {}

    @property
    def spec(self) -> str:
        """The defense as a spec string that :func:`precode.defenses.parse_defense` reads back."""
        return self.name + (":" + ",".join(repr(v) for v in self.params.values()) if self.params else "")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    # -- randomness ---------------------------------------------------------------------------
    def reseed(self, seed: int) -> Defense:
        """Restart the defense's random generator from ``seed``; returns the defense itself."""
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        return self

    def with_seed(self, seed: int) -> Defense:
        """A copy of this defense with its own generator seeded from ``seed``."""
        clone = copy.copy(self)
        return clone.reseed(seed)

    # -- the shared gradient ------------------------------------------------------------------
    def __call__(self, grads: SharedGradients) -> SharedGradients:
        """Defend one client's shared gradients: ``{name: gradient}`` in, ``{name: gradient}`` out.

        The input is left unchanged; ``None`` gradients pass through.
        """
        raise NotImplementedError

    def shared_gradients(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> SharedGradients:
        """The defended gradients a client shares for the batch ``images, labels``.

        For gradient noise and pruning this is
        ``compute_shared_gradients(model, images, labels, defense=self)``; DP-SGD clips every
        sample's gradient before averaging (see :class:`~precode.defenses.DPSGD`).
        """
        return compute_shared_gradients(model, images, labels, defense=self)

    # -- training -----------------------------------------------------------------------------
    def train(
        self,
        model: nn.Module,
        train_data: ImageData | Dataset,
        test_data: ImageData | Dataset | None = None,
        epochs: int = 3,
        lr: float = 1e-3,
        batch_size: int = 64,
        seed: int = 0,
        progress: bool = True,
    ) -> TrainingResult:
        """Train ``model`` in place with Adam while this defense transforms every step's gradient.

        Uses :func:`precode.training.train` with ``gradient_transform`` set to a copy of this
        defense whose generator is seeded from ``seed`` (this defense's own generator is left as
        it is), so equal seeds give equal histories.
        """
        transform = None if isinstance(self, NoDefense) else self.with_seed(seed)
        history = train(model, train_data, test_data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                        gradient_transform=transform, progress=progress)
        return TrainingResult(history=history)


class NoDefense(Defense):
    """No defense: the client shares its gradients as they are (the baseline of chapter 4)."""

    name = "none"

    def __call__(self, grads: SharedGradients) -> SharedGradients:
        return dict(grads)


def _check_finite(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{what} must be a finite number, got {value}")
    return value
