"""Attacks that diverge: a non-finite objective or gradient stops the attack on that problem, and says so.

A gradient defense with a huge noise scale (``gaussian:1e20``) makes the shared gradient so large
that the attack's objective overflows in float32: DLG's squared distance is ``inf`` from the first
step and L-BFGS never moves; Inverting Gradients' cosine divides by an infinite norm and sits at
exactly 1 with a zero gradient. Either way the "reconstruction" is the untouched starting guess,
and scoring it as a reconstruction would report a defense's success that is an overflow.

:class:`Divergence` keeps, for an attack that optimises ``R`` restarts of ``N`` problems (victims)
at once, which problems have diverged: their objective or its gradient was not finite, or their
target cannot be compared at all (a cosine against a gradient whose squared norm overflows,
:attr:`precode.attacks.GradientMatcher.computable`). A diverged problem stops where it
was (:meth:`Divergence.hold`: its variables keep their last finite values; the others are left
bit for bit as they were, so a run without divergence gives the same numbers as before), its
final distance counts as infinite when the best restart is chosen, and a victim all of whose
restarts diverged is reported in :attr:`precode.attacks.AttackResult.diverged`.

Used by ``precode.attacks.ig`` and ``precode.attacks.adaptive`` (``ig-joint``); L-BFGS
(``precode.attacks.lbfgs``, DLG and iDLG) stops such a problem itself and reports its loss as
``inf``.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

__all__ = ["Divergence"]


class Divergence:
    """Which of ``(R, N)`` problems (restarts x victims) have diverged, for an attack's loop.

    In the loop: :meth:`checked` after computing the gradients (it marks the problems whose
    objective or gradient is not finite and returns the gradients with theirs set to zero), then
    :meth:`hold` after the optimiser's step (it puts the diverged problems' variables back where
    they were when they diverged). Variables and gradients are ``(R, N, ...)`` tensors (each holds
    every victim), or ``(R, N', ...)`` ones that together hold the ``N`` victims in order (Inverting
    Gradients' groups of learning rates).

    Args:
        restarts, victims: the problems' grid.
        device: where the attack runs.
        computable: ``(N,)``: whether each victim's objective can be computed at all (``None``: all).
    """

    def __init__(self, restarts: int, victims: int, device: torch.device, computable: torch.Tensor | None = None):
        self.mask = torch.zeros(restarts, victims, dtype=torch.bool, device=device)
        if computable is not None:
            self.mask |= ~computable.to(device)[None, :]
        self._held = torch.zeros_like(self.mask)  # the problems whose variables are held already
        self._frozen: list[torch.Tensor] = []
        self._before: list[torch.Tensor] = []

    @staticmethod
    def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return mask.reshape(*mask.shape, *([1] * (like.ndim - 2)))

    def _columns(self, tensors: Sequence[torch.Tensor]) -> list[slice]:
        """The victims each tensor holds: all of them each (``ig-joint``'s images and noise), or a share
        each, in order (Inverting Gradients' groups of learning rates)."""
        if all(t.shape[1] == self.mask.shape[1] for t in tensors):
            return [slice(None)] * len(tensors)
        edges = list(itertools.accumulate((t.shape[1] for t in tensors), initial=0))
        return [slice(a, b) for a, b in itertools.pairwise(edges)]

    def checked(self, objective: torch.Tensor, gradients: Sequence[torch.Tensor],
                variables: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Mark the problems whose ``objective`` ``(R, N)`` or gradient is not finite, remember the
        ``variables``' values before the step, and return the gradients with the diverged problems' set
        to 0 (the optimiser's state stays finite). Elementwise: the other problems' are left bit for bit."""
        self.mask |= ~torch.isfinite(objective.detach())
        columns = self._columns(gradients)
        for g, c in zip(gradients, columns):
            self.mask[:, c] |= ~torch.isfinite(g).flatten(2).all(-1)
        self._before = [v.detach().clone() for v in variables]
        zero = torch.zeros((), dtype=gradients[0].dtype, device=gradients[0].device)
        return [torch.where(self._expand(self.mask[:, c], g), zero, g) for g, c in zip(gradients, columns)]

    @torch.no_grad()
    def hold(self, variables: Sequence[torch.Tensor]) -> None:
        """After the optimiser's step: put each diverged problem's ``variables`` back to their values when
        it diverged (the last ones where its objective was evaluated)."""
        if not self._frozen:
            self._frozen = [b.clone() for b in self._before]
        newly = self.mask & ~self._held
        for i, (b, v, c) in enumerate(zip(self._before, variables, self._columns(variables))):
            self._frozen[i] = torch.where(self._expand(newly[:, c], v), b, self._frozen[i])
            v.copy_(torch.where(self._expand(self.mask[:, c], v), self._frozen[i], v))
        self._held = self.mask.clone()

    def all(self) -> bool:
        """Whether every problem diverged (nothing left to optimise; waits for the device)."""
        return bool(self.mask.all())

    def final(self, distances: torch.Tensor) -> torch.Tensor:
        """Final distances ``(R, N)`` with the diverged problems' set to ``inf`` (never the best restart)."""
        return torch.where(self.mask | ~torch.isfinite(distances), torch.full_like(distances, torch.inf), distances)

    def victims(self) -> torch.Tensor:
        """``(N,)`` on the CPU: the victims all of whose restarts diverged."""
        return self.mask.all(dim=0).cpu()
