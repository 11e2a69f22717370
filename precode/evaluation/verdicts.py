"""The paper's claims, judged from one run's numbers: ``supported``, ``not supported`` or ``not tested at this scale``.

A defense *stops* an attack in a cell when no victim's reconstruction reaches the success threshold.
A stop is **credited** to the defense (:func:`credit`) only when the attacker did not simply fail:

* the attacker was given the labels (its best case), so a stop is not a label rule that the defense
  fooled (DP-SGD's noise costs the rule most labels: the inferred-label rows show it);
* it spent its whole evaluation budget (``evaluations`` at least ``budget``);
* for most victims (:data:`CREDIT_BELOW_TRUTH`) it ended at or below the matching distance its own
  objective gives the true image (``below_truth``): there the objective rates the reconstruction at
  least as well as the truth, so what stops the attack is that the objective no longer singles out
  the victim, not an optimiser that had not converged;
* the cell has at least :data:`VERDICT_VICTIMS` victims (0 of 32 still allows a true rate of up to
  about 11%, Wilson 95%).

Costs are test-accuracy differences of models trained on the defense's releases
(:mod:`precode.release`), so privacy and cost describe one system. A cost comparison at a training
budget where the undefended model is still learning (:func:`converged`) says what the defense costs
*at that budget*, not at convergence, which is what the paper claims: such a verdict is ``not tested
at this scale``.

Used by chapter 7 (and the tests).
"""
from __future__ import annotations

import html as html_lib
from collections.abc import Sequence
from typing import Any

from .report import _short, family

__all__ = ["VERDICT_VICTIMS", "CREDIT_BELOW_TRUTH", "CONVERGED_GAIN", "SUPPORTED", "NOT_SUPPORTED", "NOT_TESTED",
           "stops", "credit", "converged", "cheapest_stop", "claims", "credit_table", "OPTIMISATION_ATTACKS"]

VERDICT_VICTIMS = 32
"""The fewest victims a cell must have for a verdict to rest on it."""
CREDIT_BELOW_TRUTH = 0.5
"""The share of victims whose attack must end at or below the true image's matching distance for a stop to count."""
CONVERGED_GAIN = 0.01
"""A training has converged at its budget when its last epoch raised the test accuracy by less than this (1 point)."""
SUPPORTED, NOT_SUPPORTED, NOT_TESTED = "supported", "not supported", "not tested at this scale"
OPTIMISATION_ATTACKS = ("ig", "idlg", "dlg")
"""The attacks the paper's claim 1 is about: those that optimise an image to match the gradient."""


def stops(row: dict[str, Any]) -> bool:
    """Whether no victim of the cell was reconstructed (success rate 0)."""
    return row["attack_success_rate"] == 0


def credit(row: dict[str, Any], brief: bool = False) -> tuple[bool, str]:
    """Whether a cell's stop is credited to its defense, and why (or why not), in words (``brief``: in a
    few words, for a table whose other columns give the numbers)."""
    n = row["n"]

    def say(ok: bool, long: str, short: str) -> tuple[bool, str]:
        return ok, short if brief else long

    if not stops(row):
        succeeded = round(row["attack_success_rate"] * n)
        return say(False, f"the attack succeeds on {succeeded} of {n} victims", "the attack succeeds")
    if row.get("labels") != "given":
        return say(False, "the attacker inferred the labels; only a run with the labels given can credit the defense",
                   "labels inferred")
    if n < VERDICT_VICTIMS:
        return say(False, f"{n} victims, fewer than the {VERDICT_VICTIMS} a verdict needs",
                   f"fewer than {VERDICT_VICTIMS} victims")
    if row["attack"] == "analytic":
        return say(True, "the exact division fails", "the exact division fails")
    if row.get("evaluations") is None or row["evaluations"] < row["budget"]:
        return say(False, f"the attack spent {row.get('evaluations')} of its {row['budget']} evaluations",
                   "budget not spent")
    below = row.get("below_truth")
    if below is None or below < CREDIT_BELOW_TRUTH:
        return say(False, (f"the attack ended above the true images' matching distance for {1 - (below or 0):.0%} "
                           "of the victims: its optimiser, not the defense, may have failed"),
                   "ended above the truth: the optimiser may have failed")
    return say(True, (f"labels given, the whole budget spent, and for {below:.0%} of the victims the attack ended at "
                      "or below the true image's matching distance"), "the objective no longer singles out the victim")


def converged(history: Sequence[dict[str, Any]], gain: float = CONVERGED_GAIN) -> bool:
    """Whether a training's last epoch raised its test accuracy by less than ``gain`` (one epoch: no)."""
    if len(history) < 2:
        return False
    return history[-1]["test_accuracy"] - history[-2]["test_accuracy"] < gain


def cheapest_stop(summary: Sequence[dict[str, Any]], model: str, fam: str, attack: str = "ig") -> dict[str, Any] | None:
    """Of the levels of the defense family ``fam`` whose stop of ``attack`` on ``model`` (untrained,
    labels given) is credited, the one whose trained model is most accurate; ``None`` if none is
    credited, or none of those has an accuracy (not trained at this scale)."""
    rows = [r for r in summary if r["model"] == model and r["attack"] == attack and r["weights"] == "initial"
            and r.get("labels") == "given" and family(r["defense"]) == fam and credit(r)[0]
            and r["test_accuracy"] is not None]
    return max(rows, key=lambda r: r["test_accuracy"], default=None)


def claims(summary: Sequence[dict[str, Any]], training: Sequence[dict[str, Any]],
           families: Sequence[str] = ("gaussian", "prune", "dp")) -> dict[int, dict[str, Any]]:
    """The verdict on each of the paper's claims, with what it rests on.

    1. PRECODE stops the optimisation attacks (success 0%): supported when every model's PRECODE
       cell of every optimisation attack (:data:`OPTIMISATION_ATTACKS`, labels given, untrained) is a
       credited stop; not supported when any of them reconstructs a victim; not tested otherwise.
    2. PRECODE costs almost nothing in accuracy: on every model, its accuracy within the undefended
       model's test-set interval. Not tested at this scale when a model's undefended training has not
       converged at its budget (:func:`converged`).
    3. Noise, pruning (and DP-SGD) protect only at a cost: on every model, the cheapest credited stop
       of every family costs more than the test-set interval; not supported when one costs no more;
       not tested at this scale when a training has not converged or no family has a measured stop.

    Returns:
        ``{claim: {"verdict": ..., "why": [sentences], ...}}``: claim 1 with ``cells`` (the PRECODE
        rows), claims 2 and 3 with ``costs`` (``{model: points}`` and ``{(model, family): points or
        None}``).
    """
    initial = [r for r in summary if r["weights"] == "initial" and r.get("labels") == "given"]
    models = list(dict.fromkeys(r["model"] for r in initial))

    def row(model, defense, attack="ig"):
        return next((r for r in initial if (r["model"], r["defense"], r["attack"]) == (model, defense, attack)), None)

    def history(model, defense):
        return sorted((h for h in training if (h["model"], h["defense"]) == (model, defense)), key=lambda h: h["epoch"])

    out: dict[int, dict[str, Any]] = {}
    cells = [r for r in initial if r["defense"] == "precode" and r["attack"] in OPTIMISATION_ATTACKS]
    credits = [(r, *credit(r)) for r in cells]
    if any(not stops(r) for r in cells):
        verdict = NOT_SUPPORTED
    elif cells and all(ok for _, ok, _ in credits):
        verdict = SUPPORTED
    else:
        verdict = NOT_TESTED
    out[1] = {"verdict": verdict, "cells": cells,
              "why": [f"{r['model']} {r['attack']}: {why}" for r, _, why in credits]}

    stalled = [m for m in models if not converged(history(m, "none"))]
    costs = {}
    for m in models:
        none, precode = row(m, "none"), row(m, "precode")
        if none and precode and none["test_accuracy"] is not None and precode["test_accuracy"] is not None:
            costs[m] = 100 * (none["test_accuracy"] - precode["test_accuracy"])
    within = all(abs(c) <= 100 * row(m, "none")["test_accuracy_ci95"] for m, c in costs.items())
    out[2] = {"verdict": NOT_TESTED if stalled or not costs else (SUPPORTED if within else NOT_SUPPORTED),
              "costs": costs, "why": [f"{m}: the undefended training still gained over a point in its last epoch"
                                      for m in stalled]}

    family_costs: dict[tuple[str, str], float | None] = {}
    for m in models:
        reference = row(m, "none")
        for fam in families:
            best = cheapest_stop(summary, m, fam)
            family_costs[m, fam] = None if best is None else 100 * (reference["test_accuracy"] - best["test_accuracy"])
    measured = {k: c for k, c in family_costs.items() if c is not None}
    cheap = [k for k, c in measured.items() if c <= 100 * row(k[0], "none")["test_accuracy_ci95"]]
    if cheap:
        verdict = NOT_SUPPORTED
    elif stalled or not measured:
        verdict = NOT_TESTED
    else:
        verdict = SUPPORTED
    out[3] = {"verdict": verdict, "costs": family_costs,
              "why": [f"{m} {fam}: a credited stop within the test-set interval" for m, fam in cheap]
              + out[2]["why"]}
    return out


def credit_table(summary: Sequence[dict[str, Any]], html: bool = True) -> str:
    """Every untrained cell that stops its attack, and whether the stop is credited to the defense: the
    labels, the evaluations spent of the budget, the share of victims whose attack ended at or below
    the true image's matching distance (with the mean distances), and :func:`credit`'s reason.

    Used in chapter 7.
    """
    head = ["model", "defense", "attack", "labels", "success", "evaluations (budget)",
            "ended at or below the truth (mean distance: attack / truth)", "credited to the defense?"]
    body = []
    for r in summary:
        if r["weights"] != "initial" or not stops(r):
            continue
        ok, why = credit(r, brief=True)
        distances = ("-" if r.get("below_truth") is None else
                     f"{100 * r['below_truth']:.0f}% ({r['distance_mean']:.3g} / {r['truth_distance_mean']:.3g})")
        spent = "-" if not r.get("budget") else f"{r['evaluations']} ({r['budget']})"
        body.append([r["model"], _short(r["defense"]), r["attack"], r.get("labels") or "", f"0 of {r['n']}", spent,
                     distances, ("yes: " if ok else "no: ") + why])
    if not html:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])

    def row(values, tag):
        return "<tr>" + "".join(f"<{tag}>{html_lib.escape(str(v))}</{tag}>" for v in values) + "</tr>"

    return ("<table>\n<thead>" + row(head, "th") + "</thead>\n<tbody>\n" + "\n".join(row(r, "td") for r in body)
            + "\n</tbody>\n</table>")
