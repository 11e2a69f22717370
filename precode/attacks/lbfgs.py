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

    Args:
        evaluate: maps variables ``(P, D)`` to the ``P`` losses; differentiable, and problem
            ``p``'s loss may depend on row ``p`` only.
        x0: starting points ``(P, D)``.
        iterations: ``LBFGS.step`` calls (DLG's "iterations").
        lr, max_iter, history_size, tolerance_grad, tolerance_change: as ``torch.optim.LBFGS``.
        min_progress: a problem whose loss falls by no more than this fraction in one
            iteration stops for good. With the default 0 only problems whose loss did not fall
            at all stop: their line search failed (they reached rounding noise or a dead end)
            and ``torch.optim.LBFGS`` would repeat the same failed step.
        on_iteration: called as ``on_iteration(i, losses)`` after each iteration.
        restart: ``None`` (a problem that stops stays stopped, as ``torch.optim.LBFGS``), or a
            function ``restart(k) -> (P, D)`` giving the ``k``-th set of fresh starting points
            (``k = 1, 2, ...``): a problem whose iteration made no progress (the same test as the
            stop) starts again from its row of a fresh set, with an empty history, and the best
            point any of its starts reached is returned. So every problem spends the whole
            budget of ``iterations`` on its own search instead of idling while the others finish
            (their evaluations are batched, so the idle rows cost the same time).
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
        (with ``budget``: as many rows as iterations were run) (on the CPU) and the evaluations of
        loss and gradient each problem used ``(P,)``, its start included: at most
        ``1 + iterations * max_iter * 5 // 4`` (with ``restart``: each start's first evaluation
        too). (``evaluate`` is called for all problems at once, whenever one needs it, so it may be
        called more often than any one problem counts.) With ``restart``, ``x`` and ``losses`` are
        the best any start reached and ``history`` the best so far after every iteration.
    """
    p_count, dim = x0.shape
    dtype, device = x0.dtype, x0.device
    max_eval = max_iter * 5 // 4

    def value_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.detach().requires_grad_(True)
        f = evaluate(x)
        (g,) = torch.autograd.grad(f.sum(), x)
        return f.detach(), g.detach()

    x = x0.detach().clone()
    f, g = value_and_grad(x)
    f = _diverged_inf(f, g)
    zeros = torch.zeros(p_count, dtype=dtype, device=device)
    s_hist = torch.zeros(history_size, p_count, dim, dtype=dtype, device=device)
    y_hist = torch.zeros_like(s_hist)
    rho = torch.zeros(history_size, p_count, dtype=dtype, device=device)
    rows = torch.arange(p_count, device=device)
    head = torch.zeros(p_count, dtype=torch.long, device=device)  # each problem's ring: next slot
    stored = torch.zeros(p_count, dtype=torch.long, device=device)  # and pairs held
    h_diag = torch.ones_like(zeros)
    d = torch.zeros_like(x)
    t = zeros.clone()
    prev_g = g.clone()
    started = torch.zeros(p_count, dtype=torch.bool, device=device)  # has made a first inner iteration
    if budget is not None and restart is None:
        raise ValueError("an evaluation budget needs restart: a problem that stalls must start again to spend it")
    rounds = iterations if budget is None else max(int(iterations), int(budget))
    history = torch.empty(rounds, p_count, dtype=dtype)
    stopped = ~torch.isfinite(f)  # diverged at the start: never moves
    solved = None if solved is None else solved.to(dtype=dtype, device=device)

    def finished() -> Tensor:  # with restart: diverged, solved, or out of budget
        done = ~torch.isfinite(f) | ~torch.isfinite(best_f)
        if solved is not None:
            done |= best_f <= solved
        if budget is not None:
            done |= spent >= budget
        return done

    spent = torch.ones(p_count, dtype=torch.long, device=device)  # the start's evaluation
    best_x, best_f = x.clone(), torch.where(torch.isfinite(f), f, torch.full_like(f, torch.inf))
    starts = 0

    for it in range(rounds):
        if restart is not None and it:
            stopped = finished()
            if bool(stopped.all()):
                history[it:] = best_f.cpu()
                if budget is not None:
                    history = history[:it]
                break
        if bool(stopped.all()):  # nothing left to do: the remaining iterations repeat the last loss
            history[it:] = f.cpu()
            if on_iteration is not None:
                for rest in range(it, iterations):
                    on_iteration(rest, f)
            break
        f_start = f.clone()
        running = ~stopped & (g.abs().amax(1) > tolerance_grad)  # problems that iterate in this step
        n_iter = torch.zeros(p_count, dtype=torch.long, device=device)
        evals = torch.ones(p_count, dtype=torch.long, device=device)
        while bool(running.any()):
            n_iter += running.long()
            # history update from the previous inner iteration (s = d * t, y = change of g)
            y = g - prev_g
            s = d * t[:, None]
            ys = (y * s).sum(1)
            keep = running & started & (ys > 1e-10)
            if bool(keep.any()):
                slot, who = head[keep], rows[keep]
                s_hist[slot, who], y_hist[slot, who], rho[slot, who] = s[keep], y[keep], 1 / ys[keep]
                h_diag = torch.where(keep, ys / (y * y).sum(1).clamp_min(1e-300), h_diag)
                head = torch.where(keep, (head + 1) % history_size, head)
                stored = torch.where(keep, (stored + 1).clamp(max=history_size), stored)
            # two-loop recursion over each problem's own history, newest first
            q = -g
            depth = int(stored.max())
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
            d = torch.where(running[:, None], torch.where(started[:, None], r, -g), d)
            prev_g = torch.where(running[:, None], g, prev_g)
            prev_f = f.clone()
            first = running & ~started
            t = torch.where(running, torch.where(first, lr * (1 / g.abs().sum(1)).clamp(max=1.0), lr), t)
            started |= running
            gtd = (g * d).sum(1)
            running &= gtd <= -tolerance_change
            if not bool(running.any()):
                break
            max_ls = max_eval - evals if budget is None else torch.minimum(max_eval - evals, budget - spent)
            t_ls, f_ls, g_ls, n_ls = _strong_wolfe(value_and_grad, x, t, d, f, g, gtd, running, tolerance_change,
                                                  max_ls=max_ls)
            t = torch.where(running, t_ls, t)
            x = torch.where(running[:, None], x + t[:, None] * d, x)
            f = torch.where(running, _diverged_inf(f_ls, g_ls), f)  # a non-finite gradient: diverged, stops
            g = torch.where(running[:, None], g_ls, g)
            running &= torch.isfinite(f)
            evals += n_ls
            spent += torch.where(running, n_ls, 0)
            running &= n_iter < max_iter
            running &= evals < max_eval
            if budget is not None:
                running &= spent < budget
            running &= g.abs().amax(1) > tolerance_grad
            running &= (d * t[:, None]).abs().amax(1) > tolerance_change
            running &= (f - prev_f).abs() >= tolerance_change
        stalled = ~(f < f_start - min_progress * f_start.abs())
        if restart is None:
            stopped |= stalled
            history[it] = f.cpu()
            if on_iteration is not None:
                on_iteration(it, f)
            continue
        better = f < best_f
        best_x, best_f = torch.where(better[:, None], x, best_x), torch.where(better, f, best_f)
        history[it] = best_f.cpu()
        if on_iteration is not None:
            on_iteration(it, best_f)
        stalled &= ~finished()
        if bool(stalled.any()) and (budget is not None or it + 1 < iterations):  # fresh starts for the stalled
            starts += 1
            fresh = restart(starts).to(dtype=dtype, device=device).reshape(p_count, dim)
            x = torch.where(stalled[:, None], fresh, x)
            f_fresh, g_fresh = value_and_grad(x)
            f, g = torch.where(stalled, f_fresh, f), torch.where(stalled[:, None], g_fresh, g)
            spent += stalled.long()
            head, stored = torch.where(stalled, 0, head), torch.where(stalled, 0, stored)
            started &= ~stalled
            h_diag = torch.where(stalled, 1.0, h_diag)
            d, t = torch.where(stalled[:, None], 0.0, d), torch.where(stalled, 0.0, t)
            prev_g = torch.where(stalled[:, None], g, prev_g)
            better = f < best_f
            best_x, best_f = torch.where(better[:, None], x, best_x), torch.where(better, f, best_f)
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


def _strong_wolfe(value_and_grad, x, t, d, f, g, gtd, active, tolerance_change, max_ls, c1=1e-4, c2=0.9):
    """Vectorised ``torch.optim.lbfgs._strong_wolfe`` for the problems in ``active``.

    ``max_ls`` is each problem's budget of further evaluations (as torch passes it). Returns
    the step ``t``, the loss and gradient there, and the evaluations used, per problem.
    """
    col = lambda v: v[:, None]  # noqa: E731
    d_norm = d.abs().amax(1)
    f_new, g_new = value_and_grad(x + col(torch.where(active, t, 0)) * d)
    gtd_new = (g_new * d).sum(1)
    n_evals = active.long()
    bracketing, zooming = active.clone(), torch.zeros_like(active)
    fresh_zoom = torch.zeros_like(active)  # zooming problems with an evaluation to process
    ls_iter = torch.zeros_like(n_evals)
    t_prev, f_prev, g_prev, gtd_prev = torch.zeros_like(t), f.clone(), g.clone(), gtd.clone()
    # the bracket: slots a and b, "low" is the one with the lower loss
    a_t, a_f, a_g, a_gtd = t_prev.clone(), f.clone(), g.clone(), gtd.clone()
    b_t, b_f, b_g, b_gtd = t.clone(), f_new.clone(), g_new.clone(), gtd_new.clone()
    low_a = torch.ones_like(active)
    insufficient = torch.zeros_like(active)
    out_t, out_f, out_g = t.clone(), f.clone(), g.clone()

    def finish(mask, tt, ff, gg):
        nonlocal out_t, out_f, out_g
        out_t, out_f = torch.where(mask, tt, out_t), torch.where(mask, ff, out_f)
        out_g = torch.where(col(mask), gg, out_g)

    while True:
        # -- bracketing phase: the newest evaluation at t -----------------------------------
        maxed = bracketing & (ls_iter >= max_ls)
        if bool(maxed.any()):  # torch: bracket [0, t], return its lower end
            zero_lower = (f <= f_new) | ~torch.isfinite(f_new)
            finish(maxed, torch.where(zero_lower, 0 * t, t), torch.where(zero_lower, f, f_new),
                   torch.where(col(zero_lower), g, g_new))
            bracketing &= ~maxed
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
            insufficient &= ~enter
        extend = bracketing & ~enter & ~wolfe
        bracketing = extend
        zooming |= enter
        if bool(extend.any()):
            t_next = _cubic_minimum(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, t + 0.01 * (t - t_prev), t * 10)
            t_prev, f_prev = torch.where(extend, t, t_prev), torch.where(extend, f_new, f_prev)
            g_prev, gtd_prev = torch.where(col(extend), g_new, g_prev), torch.where(extend, gtd_new, gtd_prev)
            t = torch.where(extend, t_next, t)

        # -- zoom phase: process the newest evaluation -----------------------------------------
        upd = fresh_zoom
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
            zooming_done = torch.zeros_like(active)
        # stop zooming: Wolfe satisfied, out of evaluations, or the bracket is tiny
        small = zooming & ((a_t - b_t).abs() * d_norm < tolerance_change)
        stop = zooming & (zooming_done | (ls_iter >= max_ls) | small)
        if bool(stop.any()):
            finish(stop, torch.where(low_a, a_t, b_t), torch.where(low_a, a_f, b_f),
                   torch.where(col(low_a), a_g, b_g))
            zooming &= ~stop
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
        fresh_zoom = zooming.clone()

        pending = bracketing | zooming
        if not bool(pending.any()):
            return out_t, out_f, out_g, n_evals
        f_eval, g_eval = value_and_grad(x + col(torch.where(pending, t, 0)) * d)
        f_new = torch.where(pending, f_eval, f_new)
        g_new = torch.where(col(pending), g_eval, g_new)
        gtd_new = (g_new * d).sum(1)
        n_evals += pending.long()
        ls_iter += pending.long()
