"""From victims to the paper's table: per-cell statistics, the comparison table and the figures.

Per cell (:func:`summarize_cell`), over its ``n`` victims:

* ``attack_success_rate``: the fraction of victims whose reconstruction has SSIM at least the
  grid's ``threshold`` (a documented parameter, 0.5 by default), with a Wilson 95% interval
  (``success_ci95_low``, ``success_ci95_high``): 0 successes out of 8 is compatible with a true
  rate up to about 32%;
* ``identification_rate``: the fraction of reconstructions whose nearest real image (MSE, among
  the victims and a pool of further test images) is their victim; no threshold;
* ``psnr_mean``, ``ssim_mean`` with the half-widths of their 95% confidence intervals
  (``psnr_ci95``, ``ssim_ci95``: Student's t, :func:`precode.metrics.mean_ci95`), and
  ``ssim_median``;
* ``labels``: ``given`` (the attacker is given the victims' labels) or ``inferred``;
  ``label_accuracy``: the share of victims whose label the attack used was right (1 when given);
  ``labels_inferable``: the share whose label iDLG's rule reads off the shared gradient, whether or
  not the attacker was given them (what the gradient gives away);
* whether the attacker, and not the defense, failed: ``evaluations`` (the mean over the victims of
  the matching-loss evaluations the attack spent; ``budget``: its allowance),
  ``distance_mean`` (where its matching distance ended), ``truth_distance_mean`` (the same
  distance at the true images) and ``below_truth``, the share of victims whose attack ended at or
  below its true image's distance: there the objective rates the reconstruction at least as well
  as the truth, so a failure is the defense's (the objective no longer singles out the victim),
  not the optimiser's (empty for the analytic attack, which has no objective);
* ``weights``: ``initial`` (the untrained model, as in the paper's evaluation) or ``trained`` (the
  model after the grid's training, whose ``test_accuracy`` the row reports); ``precode_sigma``: the
  mean sigma of PRECODE's sampling noise on the victims at the attacked weights (empty without
  PRECODE, :func:`precode.bottleneck.sampling_std`);
* ``test_accuracy`` of the model trained under the cell's defense (``test_accuracy_ci95``: the
  half-width of its 95% interval from the finite test set alone, not from training noise), with
  how it was trained (``training``: on the defense's releases, ``clients`` releases of
  ``release_images`` image(s) a step, the releases the attack reads; empty where the grid does not
  train the defense), on what (``train_data``, ``train_images``, ``epochs``, ``test_images``) and,
  for DP-SGD, ``epsilon`` (that of the releases: one Gaussian mechanism per image and epoch);
* ``seconds``: the attack's wall-clock time (as ``python -m precode attack`` reports it);
* ``diverged``: the victims on which the attack's objective overflowed (a defense's huge noise): they
  count as failures, and the PSNR and SSIM statistics are over the others (empty when none is left:
  the table says "diverged", never a score).

Figures (:func:`draw_figures`, also used by chapter 7): the privacy-utility scatter, the SSIM
distributions, the success rate against the threshold and the convergence curves.

Used by ``python -m precode evaluate`` and chapter 7.
"""
from __future__ import annotations

import html as html_lib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..attacks.dlg import dlg_budget
from ..attacks.matching import at_or_below
from ..files import atomic_write
from ..metrics import mean_ci95, wilson_interval
from ..plotting import FAMILY_COLOURS, MIN_FONT_SIZE, PAGE_INCHES, SSIM_BOUNDS, clip_interval
from .grid import split_defense
from .schema import SUMMARY_FIELDS
from .store import read_csv

__all__ = [
    "SUMMARY_FIELDS", "wilson_interval", "summarize_cell", "evaluation_budget", "at_or_below", "family",
    "comparison_table", "row_texts",
    "plot_privacy_utility", "plot_ssim_distributions", "plot_success_vs_threshold", "plot_convergence",
    "draw_figures",
]

_MARKERS = {"none": "*", "gaussian": "o", "laplacian": "s", "prune": "^", "dp": "D", "precode": "P",
            "precode-early": "X", "precode+partial": "p", "precode+": "h"}
FAMILY_STYLE = {  # colour (one per family, precode.plotting.FAMILY_COLOURS) and marker of each defense
    name: (FAMILY_COLOURS["precode+" if name.startswith("precode+") else name.split("-")[0]], marker)
    for name, marker in _MARKERS.items()
}
FAMILY_NAMES = {"none": "no defense", "gaussian": "Gaussian noise", "laplacian": "Laplacian noise",
                "prune": "pruning", "dp": "DP-SGD", "precode": "PRECODE", "precode-early": "PRECODE placed early",
                "precode+partial": "PRECODE + partial noise", "precode+": "PRECODE + gradient defense"}
ATTACK_TITLES = {"ig": "Inverting Gradients", "idlg": "iDLG", "analytic": "analytic", "dlg": "DLG",
                 "ig-omit": "ig-omit", "ig-joint": "ig-joint"}


def summarize_cell(key: Sequence[str], rows: list[dict[str, Any]], grid, seconds: float, training: dict[str, Any],
                   pool: int) -> dict[str, Any]:
    """One summary row from a cell's victim rows (see the module docstring for the columns).

    Args:
        key: ``(model, data, defense, attack, weights, labels)``.
        rows: the cell's victim rows (:func:`precode.evaluation.run_cells`).
        grid: the grid (threshold, budgets, seed, epochs).
        seconds: the attack's seconds.
        training: ``{"test_accuracy", "train_data", "train_images", "test_images", "epsilon"}`` and
            ``precode_sigma`` (optional).
        pool: the number of further real images searched by the identification rate.
    """
    n = len(rows)
    scored = [r for r in rows if r.get("status") != "diverged"]  # a diverged victim: a failure, with no score
    ssim = np.array([r["ssim"] for r in scored], dtype=float)
    psnr = np.array([r["psnr"] for r in scored], dtype=float)
    successes = int((ssim >= grid.threshold).sum())
    low, high = wilson_interval(successes, n)
    psnr_mean, psnr_ci = mean_ci95(psnr) if scored else (None, None)
    ssim_mean, ssim_ci = mean_ci95(ssim) if scored else (None, None)
    iterations, restarts = grid.budget(key[3])
    epsilon = training.get("epsilon")
    accuracy, n_test = training.get("test_accuracy"), training.get("test_images")
    accuracy_ci = None if accuracy is None or not n_test else 1.96 * math.sqrt(accuracy * (1 - accuracy) / n_test)
    inferable = [r.get("label_inferred") for r in rows]
    ended = [r.get("distance") for r in rows]
    truth = [r.get("truth_distance") for r in rows]
    measured = all(v is not None for v in ended + truth)
    return {
        "model": key[0], "data": key[1], "defense": key[2], "attack": key[3], "weights": key[4], "labels": key[5],
        "n": n, "threshold": grid.threshold,
        "attack_success_rate": successes / n, "success_ci95_low": low, "success_ci95_high": high,
        "identification_rate": float(np.mean([r["identified"] for r in rows])), "pool": pool,
        "psnr_mean": psnr_mean, "psnr_ci95": psnr_ci, "ssim_mean": ssim_mean, "ssim_ci95": ssim_ci,
        "ssim_median": float(np.median(ssim)) if scored else None,
        "label_accuracy": float(np.mean([r["label_pred"] == r["label"] for r in rows])),
        "labels_inferable": (None if None in inferable
                             else float(np.mean([g == r["label"] for g, r in zip(inferable, rows)]))),
        "evaluations": round(float(np.mean([r["evaluations"] for r in rows]))),
        "budget": evaluation_budget(grid, key[3]),
        "distance_mean": float(np.mean(ended)) if measured else None,
        "truth_distance_mean": float(np.mean(truth)) if measured else None,
        "below_truth": float(np.mean([at_or_below(e, t) for e, t in zip(ended, truth)])) if measured else None,
        "precode_sigma": training.get("precode_sigma"), "test_accuracy": accuracy, "test_accuracy_ci95": accuracy_ci,
        "training": training.get("training"), "release_images": 1, "clients": grid.batch_size,
        "train_data": training.get("train_data"),
        "train_images": training.get("train_images"), "epochs": grid.epochs,
        "test_images": training.get("test_images"),
        "epsilon": None if epsilon is None or not math.isfinite(epsilon) else epsilon,
        "iterations": iterations, "restarts": restarts, "seed": grid.seed, "seconds": seconds,
        "diverged": n - len(scored),
    }


def evaluation_budget(grid, attack: str) -> int:
    """The evaluations of its matching loss an attack may spend on a victim in ``grid``: Inverting
    Gradients' steps times restarts; L-BFGS's 25 an iteration (torch's most), which DLG and iDLG
    spend in full (:func:`precode.attacks.dlg`); 0 for the analytic attack."""
    iterations, restarts = grid.budget(attack)
    if iterations is None:
        return 0
    if attack in ("dlg", "idlg"):
        return dlg_budget(iterations)
    return int(iterations) * int(restarts)


def family(defense: str) -> str:
    """The defense's family: ``none``, ``gaussian``, ``laplacian``, ``prune``, ``dp``, ``precode``;
    beyond the paper ``precode-early`` (``precode@LAYER``), ``precode+partial``
    (``precode+partial-gaussian:S``) and ``precode+`` (PRECODE with another gradient defense)."""
    at, spec = split_defense(defense)
    if at is None:
        return str(defense).split(":")[0]
    if spec != "none":
        return "precode+partial" if spec.startswith("partial-") else "precode+"
    return "precode" if at == "classifier" else "precode-early"


def row_texts(row: dict[str, Any]) -> dict[str, str]:
    """A summary row's numbers as the prose quotes them: ``rate`` (the success rate with its Wilson
    95% interval, ``"25% (7-59%)"``), ``ssim`` (the mean SSIM, two decimals), ``id`` (the
    identification rate) and ``acc`` (the trained model's test accuracy), both in whole percent.

    Used in chapter 8, which glues them for the grid's rows.
    """
    def pct(x: float) -> str:
        return f"{100 * x:.0f}%"

    low, high = (f"{100 * row[k]:.0f}" for k in ("success_ci95_low", "success_ci95_high"))
    return {"rate": f"{pct(row['attack_success_rate'])} ({low}-{high}%)", "ssim": f"{row['ssim_mean']:.2f}",
            "id": pct(row["identification_rate"]), "acc": pct(row["test_accuracy"])}


def _weights(row: dict[str, Any]) -> str:
    """A row's ``weights`` (``initial`` in runs stored before the column existed)."""
    return row.get("weights") or "initial"


def _label(defense: str, weights: str) -> str:
    """A cell's short defense label, marked ``(trained)`` for a trained model's cell."""
    return _short(defense) + ("" if weights == "initial" else f" ({weights})")


def _short(defense: str) -> str:
    at, spec = split_defense(defense)
    if at is not None:
        out = "PRECODE" if at == "classifier" else f"PRECODE@{at}"
        return out if spec == "none" else f"{out} + {_short(spec.replace('partial-gaussian', 'partial'))}"
    name, _, arg = str(defense).partition(":")
    if name == "dp":
        return "DP-SGD"
    try:
        return name if not arg else f"{name} {float(arg):g}"
    except ValueError:
        return str(defense)


def comparison_table(summary: list[dict[str, Any]], attacks: Sequence[str] | None = None, html: bool = False) -> str:
    """The paper's comparison as a table: a row per model and defense, the attacks side by side.

    Each attack column shows the attack success rate with its Wilson 95% interval, the mean SSIM
    and the labels: ``given`` (the attacker knew them) or ``inferred``, with the share of victims
    whose label iDLG's rule reads off the shared gradient (a defense that "works" because the
    labels came out wrong shows here); the last column is the test accuracy of the model trained on
    the defense's releases (``-``: not trained at this scale). A trained model's cells (``weights``
    = ``trained``) and the cells with the labels inferred are rows of their own, marked.

    Args:
        summary: rows of ``summary.csv``.
        attacks: the attack columns, in order (default: every attack in ``summary``).
        html: an HTML table (for a rendered page) instead of Markdown.

    Used in chapter 7.
    """
    if not summary:
        return "(no results)"
    attacks = list(attacks) if attacks is not None else list(dict.fromkeys(r["attack"] for r in summary))

    def group(r):
        return r["model"], r["data"], r["defense"], _weights(r), r.get("labels") or "inferred"

    cells = {(*group(r), r["attack"]): r for r in summary}
    groups = list(dict.fromkeys(group(r) for r in summary))
    settings = list(dict.fromkeys((r["model"], r["data"]) for r in summary))
    groups.sort(key=lambda g: (settings.index(g[:2]), g[3] != "initial"))  # a model's trained rows after its others
    head = ["model (victims)", "defense"] + [
        f"{ATTACK_TITLES.get(a, a)}: success (95% CI), mean SSIM, labels" for a in attacks] + ["test accuracy"]
    body = []
    for model, data, defense, weights, labels in groups:
        mark = "" if labels == "given" else f", labels {labels}"
        out = [f"{model} ({data})", _label(defense, weights) + mark]
        accuracy = None
        for a in attacks:
            r = cells.get((model, data, defense, weights, labels, a))
            if r is None:
                out.append("-")
                continue
            accuracy = r["test_accuracy"]
            if r["ssim_mean"] is None:  # every victim diverged: the defense overflowed the attack, nothing to score
                out.append(f"diverged on all {r['n']} victims, {_labels_text(r)}")
                continue
            lost = f", {r['diverged']} diverged" if r.get("diverged") else ""
            out.append(f"{100 * r['attack_success_rate']:.0f}% ({100 * r['success_ci95_low']:.0f}-"
                       f"{100 * r['success_ci95_high']:.0f}%), {r['ssim_mean']:.2f}, {_labels_text(r)}{lost}")
        out.append("-" if accuracy is None else f"{100 * accuracy:.1f}%")
        body.append(out)
    sizes = sorted({r["n"] for r in summary})
    victims = f"{sizes[0]} victims per cell" if len(sizes) == 1 else f"{sizes[0]} to {sizes[-1]} victims per cell"
    note = (f"Success: SSIM >= {summary[0]['threshold']:g}; {victims}; Wilson 95% intervals; labels: given to "
            "the attacker or inferred by it, and the share of victims whose label the gradient gives away (iDLG's "
            "rule); test accuracy: trained on the defense's releases (-: not trained at this scale); -: not run "
            "(the analytic attack needs a first fully connected layer, iDLG runs on the MLP only).")
    if html:
        def row(values, tag):
            return "<tr>" + "".join(f"<{tag}>{html_lib.escape(str(v))}</{tag}>" for v in values) + "</tr>"

        return ("<table>\n<thead>" + row(head, "th") + "</thead>\n<tbody>\n"
                + "\n".join(row(r, "td") for r in body) + "\n</tbody>\n</table>\n<p><small>"
                + html_lib.escape(note) + "</small></p>")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines + ["", note])


def _labels_text(row: dict[str, Any]) -> str:
    """``given, 9% in the gradient`` / ``inferred, 9% right``: how the attacker had its labels."""
    labels = row.get("labels") or "inferred"
    share = row.get("labels_inferable")
    if labels == "given":
        return "given" if share in (None, "") else f"given ({100 * float(share):.0f}% in the gradient)"
    right = row.get("label_accuracy")
    return "inferred" if right in (None, "") else f"inferred, {100 * float(right):.0f}% right"


# -- figures ---------------------------------------------------------------------------------

def _plt():
    import matplotlib.pyplot as plt

    return plt


def _settings(summary):
    return list(dict.fromkeys((r["model"], r["data"]) for r in summary))


def plot_privacy_utility(summary: list[dict[str, Any]], attack: str = "ig", metric: str = "attack_success_rate"):
    """Privacy against utility of one release: per model, each defense at (test accuracy of the model
    trained on its releases, attack success or mean SSIM on one release), with 95% intervals.

    Args:
        summary: rows of ``summary.csv``; the untrained models' cells with the labels given are drawn
            (the paper's evaluation, the attacker's best case); rows without an accuracy (not trained
            at this scale) are left out.
        attack: whose success is plotted (Inverting Gradients, the paper's attack, by default).
        metric: ``attack_success_rate`` (with its Wilson interval) or ``ssim_mean`` (with its CI).

    Returns:
        The matplotlib figure (one panel per model, sized for the page: labels of 9 points). Used in
        chapter 7.
    """
    plt = _plt()
    summary = [r for r in summary if _weights(r) == "initial" and (r.get("labels") or "given") == "given"]
    settings = _settings([r for r in summary if r["attack"] == attack])
    n = max(1, len(settings))  # one panel per model, stacked: the page is 7 inches wide
    fig, axes = plt.subplots(n, 1, figsize=(PAGE_INCHES, 3.6 * n + 0.5), squeeze=False)
    handles = {}
    for ax, (model, data) in zip(axes[:, 0], settings):
        rows = [r for r in summary if (r["model"], r["data"], r["attack"]) == (model, data, attack)]
        for r in rows:
            if r["test_accuracy"] is None or r[metric] is None:  # None: every victim diverged
                continue
            fam = family(r["defense"])
            colour, marker = FAMILY_STYLE.get(fam, ("0.5", "o"))
            x, y = 100 * r["test_accuracy"], r[metric]
            if metric == "attack_success_rate":
                err = [[y - r["success_ci95_low"]], [r["success_ci95_high"] - y]]
            else:  # the mean SSIM's interval, kept inside SSIM's range
                low, high = clip_interval(y, r["ssim_ci95"], SSIM_BOUNDS)
                err = [[y - low], [high - y]]
            handles[fam] = ax.errorbar(x, y, yerr=err, fmt=marker, color=colour, capsize=3,
                                       markersize=11 if fam in ("none", "precode") else 8, alpha=0.9)
            if fam not in ("none", "precode"):
                sep = "@" if fam == "precode-early" else ":"
                level = "z=" + r["defense"].rpartition("=")[2] if fam == "dp" else r["defense"].rpartition(sep)[2]
                ax.annotate(level, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9, color=colour)
        ax.set_xlabel("test accuracy (%), trained on the releases")
        ax.set_title(f"{model.upper()} on {data}", fontsize=10)
        ax.set_ylim(-0.05, 1.05)
        ax.tick_params(labelsize=9)
        ax.grid(alpha=0.3)
        ax.set_ylabel(f"{ATTACK_TITLES.get(attack, attack)}: " + (
            "success rate" if metric == "attack_success_rate" else "mean SSIM"), fontsize=10)
    if handles:
        fig.legend(list(handles.values()), [FAMILY_NAMES.get(f, f) for f in handles], loc="lower center",
                   ncol=min(4, len(handles)), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.9 / (3.6 * n + 0.5), 1, 1))
    return fig


def plot_ssim_distributions(results: list[dict[str, Any]], summary: list[dict[str, Any]], threshold: float):
    """Every victim's SSIM per defense (dots), the mean with its 95% CI, and the success threshold.

    One panel per model and attack; a trained model's cells are columns of their own, marked
    "(trained)". Returns the figure. Used in chapter 7.
    """
    plt = _plt()
    panels = list(dict.fromkeys((r["model"], r["data"], r["attack"]) for r in summary))
    defenses = list(dict.fromkeys((r["defense"], _weights(r)) for r in summary))
    cols = min(2, len(panels))  # two panels side by side fill the page's 7 inches
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(PAGE_INCHES, 3.6 * rows_n + 0.4), squeeze=False, sharey=True)
    rng = np.random.default_rng(0)
    for ax, (model, data, attack) in zip(axes.flat, panels):
        for x, (defense, weights) in enumerate(defenses):
            values = np.array([r["ssim"] for r in results if (r["model"], r["data"], r["attack"], r["defense"],
                                                              _weights(r)) == (model, data, attack, defense, weights)],
                              dtype=float)
            values = values[~np.isnan(values)]  # a diverged victim has no SSIM
            if len(values) == 0:
                continue
            colour, marker = FAMILY_STYLE.get(family(defense), ("0.5", "o"))
            ax.scatter(x + rng.uniform(-0.15, 0.15, len(values)), values, s=8, color="0.6", zorder=1)
            m, h = mean_ci95(values)
            low, high = clip_interval(m, h, SSIM_BOUNDS)  # the t interval, kept inside SSIM's range
            ax.errorbar(x, m, yerr=[[m - low], [high - m]], fmt=marker, color=colour, capsize=3, markersize=6,
                        zorder=3)
        ax.axhline(threshold, color="red", lw=0.8, ls="--", zorder=0)
        ax.set_xticks(range(len(defenses)), [_label(d, w) for d, w in defenses], rotation=60, ha="right",
                      fontsize=MIN_FONT_SIZE)
        ax.set_title(f"{ATTACK_TITLES.get(attack, attack)}, {model} on {data}", fontsize=9)
        ax.set_ylim(-0.15, 1.05)
    for ax in axes[:, 0]:
        ax.set_ylabel("SSIM per victim")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"SSIM per victim (grey), mean and 95% CI (markers);\nred: success threshold {threshold:g}",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_success_vs_threshold(results: list[dict[str, Any]], attack: str = "ig"):
    """Attack success rate as a function of the SSIM threshold, per defense (one panel per model).

    Shows whether a conclusion depends on the threshold (the untrained models' cells). Returns the
    figure. Used in chapter 7.
    """
    plt = _plt()
    results = [r for r in results if _weights(r) == "initial"]
    settings = list(dict.fromkeys((r["model"], r["data"]) for r in results if r["attack"] == attack))
    thresholds = np.linspace(0, 1, 101)
    n = max(1, len(settings))  # one panel per model, stacked: the page is 7 inches wide
    fig, axes = plt.subplots(n, 1, figsize=(PAGE_INCHES, 3.4 * n), squeeze=False)
    for ax, (model, data) in zip(axes[:, 0], settings):
        defenses = list(dict.fromkeys(r["defense"] for r in results if (r["model"], r["data"]) == (model, data)))
        for defense in defenses:
            values = np.array([r["ssim"] for r in results  # a diverged victim (no SSIM, NaN) is a failure
                               if (r["model"], r["data"], r["attack"], r["defense"]) == (model, data, attack, defense)],
                              dtype=float)
            if len(values) == 0:
                continue
            fam = family(defense)
            colour, _ = FAMILY_STYLE.get(fam, ("0.5", "o"))
            level = defense.partition(":")[2]
            style = {"0.001": ":", "0.5": ":", "0.01": "--", "0.9": "--"}.get(level, "-")
            ax.plot(thresholds, [(values >= t).mean() for t in thresholds], style, color=colour, lw=1.3,
                    label=_short(defense))
        ax.set_xlabel("SSIM threshold")
        ax.set_ylabel("attack success rate")
        ax.set_title(f"{ATTACK_TITLES.get(attack, attack)}, {model} on {data}", fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def plot_convergence(training: list[dict[str, Any]]):
    """Test accuracy after every epoch of training under each defense (one panel per model).

    Returns the figure. Used in chapter 7.
    """
    plt = _plt()
    models = list(dict.fromkeys((r["model"], r["train_data"]) for r in training))
    n = max(1, len(models))  # one panel per model, stacked: the page is 7 inches wide
    fig, axes = plt.subplots(n, 1, figsize=(PAGE_INCHES, 3.2 * n), squeeze=False)
    for ax, (model, data) in zip(axes[:, 0], models):
        defenses = list(dict.fromkeys(r["defense"] for r in training if (r["model"], r["train_data"]) == (model, data)))
        for defense in defenses:
            hist = [r for r in training if (r["model"], r["train_data"], r["defense"]) == (model, data, defense)]
            fam = family(defense)
            colour, marker = FAMILY_STYLE.get(fam, ("0.5", "o"))
            level = defense.partition(":")[2]
            style = {"0.001": ":", "0.5": ":", "0.01": "--", "0.9": "--"}.get(level, "-")
            ax.plot([h["epoch"] for h in hist], [h["test_accuracy"] for h in hist], style,
                    marker=marker, markersize=4, color=colour, label=_short(defense),
                    lw=2.2 if fam in ("none", "precode") else 1.2)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(f"{model} trained on {data}", fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def draw_figures(folder: str | Path) -> list[Path]:
    """Draw every figure from the CSV files in ``folder`` into ``folder/figures/*.png``.

    Returns the paths written.
    """
    import matplotlib.pyplot as plt

    folder = Path(folder)
    summary = read_csv(folder / "summary.csv")
    results = read_csv(folder / "results.csv")
    training = read_csv(folder / "training.csv")
    (folder / "figures").mkdir(exist_ok=True)
    written = []
    if not summary:
        return written
    threshold = float(summary[0]["threshold"])
    figures = {"ssim_distributions": plot_ssim_distributions(results, summary, threshold)}
    for attack in dict.fromkeys(r["attack"] for r in summary):
        figures[f"privacy_utility_{attack}"] = plot_privacy_utility(summary, attack)
        figures[f"success_vs_threshold_{attack}"] = plot_success_vs_threshold(results, attack)
    if training:
        figures["convergence"] = plot_convergence(training)
    for name, fig in figures.items():
        path = folder / "figures" / f"{name}.png"
        with atomic_write(path, "wb") as f:  # a kill leaves the old figure or the new one
            fig.savefig(f, dpi=110, format="png")
        plt.close(fig)
        written.append(path)
    return written
