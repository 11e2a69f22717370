"""L-BFGS for many independent problems at once (one per victim), vectorised.

DLG and iDLG minimise with L-BFGS. A single L-BFGS over all victims' variables would couple
them (its curvature model and line search mix every variable), so this is ``P`` separate
L-BFGS runs stored side by side: every problem has its own history of steps and gradient
changes, its own step length from its own strong-Wolfe line search and its own stopping tests.
Only the evaluations are shared: every loss-and-gradient call evaluates all problems in one
batch. A problem follows the same path as when optimised alone.

The algorithm is a vectorised port of ``torch.optim.LBFGS`` with ``line_search_fn="strong_wolfe"``
(itself a port of Lua torch's ``lbfgs`` and ``lswolfe``): an *iteration* is one call of its
``step``: up to ``max_iter`` inner iterations, each a direction from the two-loop recursion
and a line search. Each problem gives the same iterates as ``torch.optim.LBFGS`` on it alone,
up to floating-point rounding (``tests/test_attacks.py`` checks this), except that the line
search never steps to a point whose loss is NaN or infinite (torch's can), and that a problem
whose loss or gradient is not finite where it stands (its objective overflowed: it diverged)
stops there with the loss ``inf`` (``precode.attacks.divergence``). Note that L-BFGS
amplifies rounding differences: over many iterations, a problem optimised in a batch and the
same problem optimised alone can end at different (equally good) solutions.

Used in chapter 2 (``book/02_attacks.ipynb``) through ``precode.attacks.dlg``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["batched_lbfgs"]

Tensor = torch.Tensor


_DONE, _DIRECTION, _SEARCH, _FRESH = 0, 1, 2, 3  # what a problem needs next


def batched_lbfgs(
    evaluate: Callable[[Tensor], Tensor],
    x0: Tensor,
    iterations: int,
    lr: float = 1.0,
    max_iter: int = 20,
    history_size: int = 100,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    min_progress: float = 0.0,
    on_iteration: Callable[[int, Tensor], None] | None = None,
    restart: Callable[[int], Tensor] | None = None,
    budget: int | None = None,
    solved: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Minimise ``P`` independent problems with L-BFGS and strong-Wolfe line searches.

    Every call of ``evaluate`` serves every problem that still searches: a problem whose line
    search or iteration ends while others go on starts its next one (or, with ``restart``, its
    fresh start) at once, instead of waiting for the slowest problem. So the number of calls is
    close to the evaluations the busiest problem spends, and an iteration is each problem's own.

    Args:
        evaluate: maps variables ``(P, D)`` to the ``P`` losses; differentiable, and problem
            ``p``'s loss may depend on row ``p`` only.
        x0: starting points ``(P, D)``.
        iterations: ``LBFGS.step`` calls per problem (DLG's "iterations").
        lr, max_iter, history_size, tolerance_grad, tolerance_change: as ``torch.optim.LBFGS``.
        min_progress: a problem whose loss falls by no more than this fraction in one
            iteration stops for good. With the default 0 only problems whose loss did not fall
            at all stop: their line search failed (they reached rounding noise or a dead end)
            and ``torch.optim.LBFGS`` would repeat the same failed step.
        on_iteration: called as ``on_iteration(i, losses)`` once every problem has finished its
            ``i``-th iteration (or stopped), with the ``P`` losses after it.
        restart: ``None`` (a problem that stops stays stopped, as ``torch.optim.LBFGS``), or a
            function ``restart(k) -> (P, D)`` giving the ``k``-th set of fresh starting points
            (``k = 1, 2, ...``): a problem whose iteration made no progress (the same test as the
            stop) starts again from its row of a fresh set, with an empty history, and the best
            point any of its starts reached is returned. So every problem spends the whole
            budget of ``iterations`` on its own search.
        budget: with ``restart``: the evaluations every problem spends, in place of ``iterations``:
            the iterations go on, with fresh starts for the problems that stall, until every
            problem has spent ``budget`` evaluations (a problem that has stops there; a line
            search never takes it past). So an attack on a stochastic or flat objective, whose
            line searches fail at once, still spends its budget searching (as many evaluations as
            Inverting Gradients' steps, for equal budgets).
        solved: with ``restart``, per problem ``(P,)``: a loss at or below which the problem is
            solved (the attacker's own test, from the shared gradient alone: a match to rounding
            noise): it stops there instead of starting again. A problem whose loss is not finite
            (it diverged: its objective overflowed) stops too and never starts again.

    Returns:
        ``(x, losses, history, evaluations)``: final variables ``(P, D)``, final losses ``(P,)``
        (``inf`` for a problem that diverged), the loss after every iteration ``(iterations, P)``
        (with ``budget``: as many rows as the problem with the most iterations ran; a problem that
        stopped earlier repeats its last loss) (on the CPU) and the evaluations of loss and
        gradient each problem used ``(P,)``, its start included: at most
        ``1 + iterations * max_iter * 5 // 4`` (with ``restart``: each start's first evaluation
        too). With ``restart``, ``x`` and ``losses`` are the best any start reached and
        ``history`` the best so far after every iteration.
    """
    p_count, dim = x0.shape
    dtype, device = x0.dtype, x0.device
    max_eval = max_iter * 5 // 4
    if budget is not None and restart is None:
        raise ValueError("an evaluation budget needs restart: a problem that stalls must start again to spend it")
    rounds = iterations if budget is None else max(int(iterations), int(budget))
    solved = None if solved is None else solved.to(dtype=dtype, device=device)

    def value_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.detach().requires_grad_(True)
        f = evaluate(x)
        (g,) = torch.autograd.grad(f.sum(), x)
        return f.detach(), g.detach()

    x = x0.detach().clone()
    f, g = value_and_grad(x)
    f = _diverged_inf(f, g)
    rows = torch.arange(p_count, device=device)
    # each problem's L-BFGS memory: a ring of its last history_size pairs (s, y)
    s_hist = torch.zeros(history_size, p_count, dim, dtype=dtype, device=device)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(history_size, p_count, dtype=dtype, device=device)
    head = torch.zeros(p_count, dtype=torch.long, device=device)  # the ring's next slot
    stored = torch.zeros(p_count, dtype=torch.long, device=device)  # and the pairs it holds
    h_diag = torch.ones(p_count, dtype=dtype, device=device)
    d, t = torch.zeros_like(x), torch.zeros(p_count, dtype=dtype, device=device)  # last direction and step
    gtd = torch.zeros_like(t)
    prev_g, prev_f = g.clone(), f.clone()
    started = torch.zeros(p_count, dtype=torch.bool, device=device)  # has made a first inner iteration
    # each problem's current iteration (one LBFGS.step): its loss at the start, inner iterations, evaluations
    f_start = f.clone()
    n_iter = torch.zeros(p_count, dtype=torch.long, device=device)
    evals = torch.ones_like(n_iter)
    steps = torch.zeros_like(n_iter)  # iterations finished
    spent = torch.ones_like(n_iter)  # evaluations, the start's included
    phase = torch.full((p_count,), _DIRECTION, dtype=torch.long, device=device)
    best_x, best_f = x.clone(), torch.where(torch.isfinite(f), f, torch.full_like(f, torch.inf))
    history = torch.empty(rounds, p_count, dtype=dtype, device=device)
    search = _LineSearch(p_count, dim, dtype, device, tolerance_change=tolerance_change)
    starts, reported = 0, 0

    def finished() -> Tensor:  # with restart: diverged, solved, or out of budget
        done = ~torch.isfinite(f) | ~torch.isfinite(best_f)
        if solved is not None:
            done |= best_f <= solved
        if budget is not None:
            done |= spent >= budget
        return done

    def begin(mask: Tensor) -> Tensor:
        """A new iteration for the problems in ``mask``; returns those that have nothing to do."""
        nonlocal f_start, n_iter, evals, phase
        f_start = torch.where(mask, f, f_start)
        n_iter, evals = torch.where(mask, 0, n_iter), torch.where(mask, 1, evals)
        moving = mask & torch.isfinite(f) & (g.abs().amax(1) > tolerance_grad)
        phase = torch.where(moving, _DIRECTION, phase)
        return mask & ~moving

    def end(mask: Tensor) -> Tensor:
        """The iteration of the problems in ``mask`` is over: stop, start again, or go on."""
        nonlocal steps, phase, best_x, best_f, starts, x, f, g, head, stored, started, h_diag, d, t, prev_g
        steps = steps + mask.long()
        index = (steps - 1).clamp(0, rounds - 1)
        stalled = mask & ~(f < f_start - min_progress * f_start.abs())
        if restart is None:
            history[index[mask], rows[mask]] = f[mask]
            done = mask & (stalled | (steps >= iterations))
            phase = torch.where(done, _DONE, phase)
            return begin(mask & ~done)
        better = mask & (f < best_f)
        best_x, best_f = torch.where(better[:, None], x, best_x), torch.where(better, f, best_f)
        history[index[mask], rows[mask]] = best_f[mask]
        done = mask & finished()
        if budget is None:
            done |= mask & (steps >= iterations)
        phase = torch.where(done, _DONE, phase)
        fresh = stalled & ~done
        if bool(fresh.any()):  # a fresh start, with an empty history: evaluated with the next call
            starts += 1
            point = restart(starts).to(dtype=dtype, device=device).reshape(p_count, dim)
            x = torch.where(fresh[:, None], point, x)
            head, stored = torch.where(fresh, 0, head), torch.where(fresh, 0, stored)
            started &= ~fresh
            h_diag = torch.where(fresh, 1.0, h_diag)
            d, t = torch.where(fresh[:, None], 0.0, d), torch.where(fresh, 0.0, t)
            phase = torch.where(fresh, _FRESH, phase)
        return begin(mask & ~done & ~fresh)

    def directions() -> Tensor:
        """Directions and first trial steps for the problems starting an inner iteration; returns
        those without a descent direction (their iteration ends)."""
        nonlocal n_iter, head, stored, h_diag, d, t, gtd, prev_g, prev_f, started, phase
        going = phase == _DIRECTION
        if not bool(going.any()):
            return going
        n_iter = n_iter + going.long()
        # history update from the previous inner iteration (s = d * t, y = change of g)
        y = g - prev_g
        s = d * t[:, None]
        ys = (y * s).sum(1)
        keep = going & started & (ys > 1e-10)
        if bool(keep.any()):
            slot, who = head[keep], rows[keep]
            s_hist[slot, who], y_hist[slot, who], rho[slot, who] = s[keep], y[keep], 1 / ys[keep]
            h_diag = torch.where(keep, ys / (y * y).sum(1).clamp_min(1e-300), h_diag)
            head = torch.where(keep, (head + 1) % history_size, head)
            stored = torch.where(keep, (stored + 1).clamp(max=history_size), stored)
        # two-loop recursion over each problem's own history, newest first
        q = -g
        depth = int(stored[going].max())
        ages = torch.arange(depth, device=device)[:, None]
        slots = (head[None, :] - 1 - ages) % history_size  # (depth, P)
        s_k, y_k = s_hist[slots, rows], y_hist[slots, rows]
        rho_k = torch.where(ages < stored[None, :], rho[slots, rows], 0)
        alphas = []
        for k in range(depth):
            a = rho_k[k] * (s_k[k] * q).sum(1)
            q = q - a[:, None] * y_k[k]
            alphas.append(a)
        r = q * h_diag[:, None]
        for k in reversed(range(depth)):
            b = rho_k[k] * (y_k[k] * r).sum(1)
            r = r + (alphas[k] - b)[:, None] * s_k[k]
        d = torch.where(going[:, None], torch.where(started[:, None], r, -g), d)
        prev_g = torch.where(going[:, None], g, prev_g)
        prev_f = torch.where(going, f, prev_f)
        first = going & ~started
        t = torch.where(going, torch.where(first, lr * (1 / g.abs().sum(1)).clamp(max=1.0), lr), t)
        started |= going
        gtd = torch.where(going, (g * d).sum(1), gtd)
        descent = going & (gtd <= -tolerance_change)
        max_ls = max_eval - evals if budget is None else torch.minimum(max_eval - evals, budget - spent)
        search.enter(descent, t, f, g, gtd, d, max_ls)
        phase = torch.where(descent, _SEARCH, phase)
        return going & ~descent

    def report(final: bool = False) -> None:
        """History rows that every problem has reached (all of them at the end), and their callback."""
        nonlocal reported
        done = phase == _DONE
        if bool(done.all()) and not final:
            return  # the final report knows how many rows there are
        last = f if restart is None else best_f
        reach = max(int(steps.max()), 1) if budget is not None else rounds
        while reported < (reach if final else rounds):
            if bool((~done & (steps <= reported)).any()):
                return
            behind = done & (steps <= reported)
            history[reported] = torch.where(behind, last, history[reported])
            if on_iteration is not None:
                on_iteration(reported, history[reported])
            reported += 1

    ending = begin(torch.ones(p_count, dtype=torch.bool, device=device))
    while True:
        while True:  # iterations that end, and directions for the problems that go on
            while bool(ending.any()):
                ending = end(ending)
            ending = directions()
            if not bool(ending.any()):
                break
        report()
        searching, fresh = phase == _SEARCH, phase == _FRESH
        if not bool((searching | fresh).any()):
            break
        f_eval, g_eval = value_and_grad(torch.where(searching[:, None], x + search.t[:, None] * d, x))
        ending = torch.zeros_like(searching)
        if bool(fresh.any()):
            f = torch.where(fresh, _diverged_inf(f_eval, g_eval), f)
            g = torch.where(fresh[:, None], g_eval, g)
            prev_g = torch.where(fresh[:, None], g, prev_g)
            spent = spent + fresh.long()
            better = fresh & (f < best_f)
            best_x, best_f = torch.where(better[:, None], x, best_x), torch.where(better, f, best_f)
            ending |= begin(fresh)
        if bool(searching.any()):
            over = search.step(searching, f_eval, g_eval, d, f, g, gtd)
            if bool(over.any()):
                t = torch.where(over, search.out_t, t)
                x = torch.where(over[:, None], x + t[:, None] * d, x)
                f = torch.where(over, _diverged_inf(search.out_f, search.out_g), f)  # not finite: diverged
                g = torch.where(over[:, None], search.out_g, g)
                ok = over & torch.isfinite(f)
                evals = evals + torch.where(over, search.n_evals, 0)
                spent = spent + torch.where(ok, search.n_evals, 0)
                go_on = ok & (n_iter < max_iter) & (evals < max_eval)
                if budget is not None:
                    go_on &= spent < budget
                go_on &= g.abs().amax(1) > tolerance_grad
                go_on &= (d * t[:, None]).abs().amax(1) > tolerance_change
                go_on &= (f - prev_f).abs() >= tolerance_change
                phase = torch.where(go_on, _DIRECTION, phase)
                ending |= over & ~go_on
    report(final=True)
    history = history[: max(reported, 1)].cpu()
    if restart is not None:
        return best_x, best_f, history, spent.cpu()
    return x, f, history, spent.cpu()


def _diverged_inf(f: Tensor, g: Tensor) -> Tensor:
    """The losses ``f`` with ``inf`` for the problems whose loss or gradient is not finite (diverged)."""
    return torch.where(torch.isfinite(f) & torch.isfinite(g).all(1), f, torch.full_like(f, torch.inf))


def _cubic_minimum(x1: Tensor, f1: Tensor, g1: Tensor, x2: Tensor, f2: Tensor, g2: Tensor,
                   lo: Tensor | None = None, hi: Tensor | None = None) -> Tensor:
    """Minimiser of the cubic through two points with slopes, clipped to ``[lo, hi]`` (torch's rule)."""
    if lo is None:
        lo, hi = torch.minimum(x1, x2), torch.maximum(x1, x2)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    d2 = d2_square.clamp_min(0).sqrt()
    right = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    left = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    pos = torch.minimum(torch.maximum(torch.where(x1 <= x2, right, left), lo), hi)
    mid = (lo + hi) / 2
    return torch.where((d2_square >= 0) & torch.isfinite(pos), pos, mid)


class _LineSearch:
    """Vectorised ``torch.optim.lbfgs._strong_wolfe``, one evaluation at a time, for ``P`` problems that
    enter and leave it independently.

    :meth:`enter` starts a search for some problems (first trial step ``t``); the caller evaluates
    every searching problem at ``x + t d`` and hands the results to :meth:`step`, which takes each
    problem's search one evaluation further (bracketing, then zooming, as torch) and returns the
    problems whose search is over: their step ``out_t``, the loss and gradient there ``out_f``,
    ``out_g``, and the evaluations they used ``n_evals``. ``max_ls`` is each problem's budget of
    further evaluations (as torch passes it).
    """

    def __init__(self, p_count: int, dim: int, dtype: torch.dtype, device: torch.device,
                 c1: float = 1e-4, c2: float = 0.9, tolerance_change: float = 1e-9):
        scalar = lambda: torch.zeros(p_count, dtype=dtype, device=device)  # noqa: E731
        vector = lambda: torch.zeros(p_count, dim, dtype=dtype, device=device)  # noqa: E731
        flag = lambda: torch.zeros(p_count, dtype=torch.bool, device=device)  # noqa: E731
        count = lambda: torch.zeros(p_count, dtype=torch.long, device=device)  # noqa: E731
        self.c1, self.c2, self.tolerance_change = c1, c2, tolerance_change
        self.t, self.d_norm, self.max_ls = scalar(), scalar(), count()
        self.f_new, self.g_new, self.gtd_new = scalar(), vector(), scalar()  # the newest evaluation
        self.t_prev, self.f_prev, self.g_prev, self.gtd_prev = scalar(), scalar(), vector(), scalar()
        # the bracket: slots a and b, "low" is the one with the lower loss
        self.a_t, self.a_f, self.a_g, self.a_gtd = scalar(), scalar(), vector(), scalar()
        self.b_t, self.b_f, self.b_g, self.b_gtd = scalar(), scalar(), vector(), scalar()
        self.low_a, self.insufficient = flag(), flag()
        self.bracketing, self.zooming, self.fresh_zoom, self.first = flag(), flag(), flag(), flag()
        self.ls_iter, self.n_evals = count(), count()
        self.out_t, self.out_f, self.out_g = scalar(), scalar(), vector()

    def enter(self, mask: Tensor, t: Tensor, f: Tensor, g: Tensor, gtd: Tensor, d: Tensor, max_ls: Tensor) -> None:
        """Start a search along ``d`` from the loss ``f`` (gradient ``g``, slope ``gtd``) for ``mask``."""
        col = mask[:, None]
        self.t = torch.where(mask, t, self.t)
        self.d_norm = torch.where(mask, d.abs().amax(1), self.d_norm)
        self.max_ls = torch.where(mask, max_ls, self.max_ls)
        self.t_prev = torch.where(mask, 0.0, self.t_prev)
        self.f_prev, self.g_prev = torch.where(mask, f, self.f_prev), torch.where(col, g, self.g_prev)
        self.gtd_prev = torch.where(mask, gtd, self.gtd_prev)
        self.low_a = self.low_a | mask
        self.insufficient = self.insufficient & ~mask
        self.bracketing, self.first = self.bracketing | mask, self.first | mask
        self.zooming, self.fresh_zoom = self.zooming & ~mask, self.fresh_zoom & ~mask
        self.ls_iter, self.n_evals = torch.where(mask, 0, self.ls_iter), torch.where(mask, 0, self.n_evals)
        self.out_t, self.out_f = torch.where(mask, t, self.out_t), torch.where(mask, f, self.out_f)
        self.out_g = torch.where(col, g, self.out_g)

    def step(self, mask: Tensor, f_eval: Tensor, g_eval: Tensor, d: Tensor, f: Tensor, g: Tensor,
             gtd: Tensor) -> Tensor:
        """Take in the evaluation at ``x + t d`` of the searching problems ``mask``, whose searches
        started from the loss ``f``, gradient ``g`` and slope ``gtd`` (the caller's, unchanged while
        a problem searches); returns the problems whose search is over."""
        col = lambda v: v[:, None]  # noqa: E731
        c1, c2 = self.c1, self.c2
        f_new = self.f_new = torch.where(mask, f_eval, self.f_new)
        g_new = self.g_new = torch.where(col(mask), g_eval, self.g_new)
        gtd_new = self.gtd_new = torch.where(mask, (g_new * d).sum(1), self.gtd_new)
        self.n_evals = self.n_evals + mask.long()
        self.ls_iter = self.ls_iter + (mask & ~self.first).long()
        self.first = self.first & ~mask
        t, ls_iter, max_ls = self.t, self.ls_iter, self.max_ls
        bracketing, zooming = self.bracketing, self.zooming
        t_prev, f_prev, g_prev, gtd_prev = self.t_prev, self.f_prev, self.g_prev, self.gtd_prev
        a_t, a_f, a_g, a_gtd = self.a_t, self.a_f, self.a_g, self.a_gtd
        b_t, b_f, b_g, b_gtd = self.b_t, self.b_f, self.b_g, self.b_gtd
        low_a, insufficient = self.low_a, self.insufficient

        def finish(done, tt, ff, gg):
            self.out_t, self.out_f = torch.where(done, tt, self.out_t), torch.where(done, ff, self.out_f)
            self.out_g = torch.where(col(done), gg, self.out_g)

        # -- bracketing phase: the newest evaluation at t -----------------------------------
        maxed = bracketing & (ls_iter >= max_ls)
        if bool(maxed.any()):  # torch: bracket [0, t], return its lower end
            zero_lower = (f <= f_new) | ~torch.isfinite(f_new)
            finish(maxed, torch.where(zero_lower, 0 * t, t), torch.where(zero_lower, f, f_new),
                   torch.where(col(zero_lower), g, g_new))
            bracketing = bracketing & ~maxed
        armijo_fail = bracketing & ((f_new > f + c1 * t * gtd) | ((ls_iter > 1) & (f_new >= f_prev))
                                    | ~torch.isfinite(f_new))
        wolfe = bracketing & ~armijo_fail & (gtd_new.abs() <= -c2 * gtd)
        uphill = bracketing & ~armijo_fail & ~wolfe & (gtd_new >= 0)
        finish(wolfe, t, f_new, g_new)
        enter = armijo_fail | uphill
        if bool(enter.any()):
            a_t, a_f = torch.where(enter, t_prev, a_t), torch.where(enter, f_prev, a_f)
            a_g, a_gtd = torch.where(col(enter), g_prev, a_g), torch.where(enter, gtd_prev, a_gtd)
            b_t, b_f = torch.where(enter, t, b_t), torch.where(enter, f_new, b_f)
            b_g, b_gtd = torch.where(col(enter), g_new, b_g), torch.where(enter, gtd_new, b_gtd)
            low_a = torch.where(enter, (a_f <= b_f) | ~torch.isfinite(b_f), low_a)
            insufficient = insufficient & ~enter
        extend = bracketing & ~enter & ~wolfe
        bracketing = extend
        zooming = zooming | enter
        if bool(extend.any()):
            t_next = _cubic_minimum(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, t + 0.01 * (t - t_prev), t * 10)
            t_prev, f_prev = torch.where(extend, t, t_prev), torch.where(extend, f_new, f_prev)
            g_prev, gtd_prev = torch.where(col(extend), g_new, g_prev), torch.where(extend, gtd_new, gtd_prev)
            t = torch.where(extend, t_next, t)

        # -- zoom phase: process the newest evaluation -----------------------------------------
        upd = self.fresh_zoom
        if bool(upd.any()):
            low_t, low_f = torch.where(low_a, a_t, b_t), torch.where(low_a, a_f, b_f)
            high_t = torch.where(low_a, b_t, a_t)
            low_g, low_gtd = torch.where(col(low_a), a_g, b_g), torch.where(low_a, a_gtd, b_gtd)
            worse = upd & ((f_new > f + c1 * t * gtd) | (f_new >= low_f) | ~torch.isfinite(f_new))
            better = upd & ~worse
            done_w = better & (gtd_new.abs() <= -c2 * gtd)
            swap = better & ~done_w & (gtd_new * (high_t - low_t) >= 0)  # old low becomes high
            # new point into the high slot (worse) or the low slot (better); old low into high (swap)
            into_a = (worse & ~low_a) | (better & low_a)
            into_b = (worse & low_a) | (better & ~low_a)
            low_into_a, low_into_b = swap & ~low_a, swap & low_a
            a_t = torch.where(into_a, t, torch.where(low_into_a, low_t, a_t))
            a_f = torch.where(into_a, f_new, torch.where(low_into_a, low_f, a_f))
            a_g = torch.where(col(into_a), g_new, torch.where(col(low_into_a), low_g, a_g))
            a_gtd = torch.where(into_a, gtd_new, torch.where(low_into_a, low_gtd, a_gtd))
            b_t = torch.where(into_b, t, torch.where(low_into_b, low_t, b_t))
            b_f = torch.where(into_b, f_new, torch.where(low_into_b, low_f, b_f))
            b_g = torch.where(col(into_b), g_new, torch.where(col(low_into_b), low_g, b_g))
            b_gtd = torch.where(into_b, gtd_new, torch.where(low_into_b, low_gtd, b_gtd))
            low_a = torch.where(worse, (a_f <= b_f) | ~torch.isfinite(b_f), low_a)
            zooming_done = done_w
        else:
            zooming_done = torch.zeros_like(mask)
        # stop zooming: Wolfe satisfied, out of evaluations, or the bracket is tiny
        small = zooming & ((a_t - b_t).abs() * self.d_norm < self.tolerance_change)
        stop = zooming & (zooming_done | (ls_iter >= max_ls) | small)
        if bool(stop.any()):
            finish(stop, torch.where(low_a, a_t, b_t), torch.where(low_a, a_f, b_f),
                   torch.where(col(low_a), a_g, b_g))
            zooming = zooming & ~stop
        if bool(zooming.any()):
            lo, hi = torch.minimum(a_t, b_t), torch.maximum(a_t, b_t)
            t_zoom = _cubic_minimum(a_t, a_f, a_gtd, b_t, b_f, b_gtd)
            eps = 0.1 * (hi - lo)
            near = torch.minimum(hi - t_zoom, t_zoom - lo) < eps
            move = near & (insufficient | (t_zoom >= hi) | (t_zoom <= lo))
            nearer_hi = (t_zoom - hi).abs() < (t_zoom - lo).abs()
            t_zoom = torch.where(move, torch.where(nearer_hi, hi - eps, lo + eps), t_zoom)
            insufficient = torch.where(zooming, near & ~move, insufficient)
            t = torch.where(zooming, t_zoom, t)
        self.fresh_zoom = zooming.clone()
        self.t, self.bracketing, self.zooming = t, bracketing, zooming
        self.t_prev, self.f_prev, self.g_prev, self.gtd_prev = t_prev, f_prev, g_prev, gtd_prev
        self.a_t, self.a_f, self.a_g, self.a_gtd = a_t, a_f, a_g, a_gtd
        self.b_t, self.b_f, self.b_g, self.b_gtd = b_t, b_f, b_g, b_gtd
        self.low_a, self.insufficient = low_a, insufficient
        return mask & ~(bracketing | zooming)
