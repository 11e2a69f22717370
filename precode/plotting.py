"""Figures the chapters share.

* :func:`strip_plot`: one dot per victim, with the mean and its 95% interval;
* :func:`mean_ci_plot`: the mean of a metric and its 95% t interval against a parameter (a budget,
  a learning rate, a defense's accuracy);
* :func:`rate_plot`: a success rate (successes out of ``n``) with its Wilson 95% interval against a
  parameter;
* :func:`loss_curves`: an attack's loss per iteration, one line per victim; :func:`median_curve`:
  its median over the victims;
* :func:`training_curves`: trainings' loss and test accuracy per epoch, one line per training;
* :func:`bar_values`: one horizontal bar per label, its value written at its end (seconds,
  accuracies);
* :func:`value_grid`: a table of numbers over two parameters (a sweep), as a heat map with the
  values written in its squares;
* :data:`DEFENSE_STYLES`, :func:`defense_training` and :func:`privacy_utility`: the gradient
  defenses' families drawn alike (chapter 4): each family's colour, marker and parameter, its
  trainings per level against the undefended one, and its levels' attack SSIM against accuracy;
* :func:`image_grid`: rows of images (victims, then each attack's reconstructions), grey or colour,
  with a short note under each image (its SSIM, say);
* :func:`use_book_style`, :data:`FAMILY_COLOURS`, :data:`OKABE_ITO`, :data:`MIN_FONT_SIZE`: the book's
  look. Figures are read at the page's width (about 7 inches at 100 dpi in the HTML theme), so
  every text is at least 9 pt at that size; colours come from the Okabe-Ito palette, which readers
  with any common colour-vision deficiency tell apart; and each defense family has one colour in
  every figure of the book.

Used in chapters 2 to 10.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import matplotlib as mpl
import numpy as np
import torch
from matplotlib.colors import to_rgb
from matplotlib.ticker import MaxNLocator

from .errors import InputError
from .metrics import mean_ci95, wilson_interval

__all__ = [
    "strip_plot", "mean_ci_plot", "rate_plot", "loss_curves", "median_curve", "training_curves", "bar_values",
    "value_grid", "image_grid", "show_image", "SSIM_BOUNDS", "DefenseStyle", "DEFENSE_STYLES", "defense_training",
    "privacy_utility", "clip_interval", "use_book_style", "BOOK_STYLE", "FAMILY_COLOURS", "OKABE_ITO",
    "MIN_FONT_SIZE", "PAGE_INCHES",
]

MIN_FONT_SIZE = 9
"""The smallest text, in points, a figure of the book shows at the page's width."""

PAGE_INCHES = 7.0
"""The width of the page's text column in inches (at 100 dpi): a figure no wider is shown at its size."""

OKABE_ITO = {
    "blue": "#0072B2", "orange": "#E69F00", "bluish green": "#009E73", "vermillion": "#D55E00",
    "reddish purple": "#CC79A7", "sky blue": "#56B4E9", "yellow": "#F0E442", "black": "#000000",
}
"""Okabe and Ito's colour-blind-safe palette (Color Universal Design, 2008), in the order of the book's
colour cycle (``C0`` is blue, ``C1`` orange, ...)."""

FAMILY_COLOURS = {
    "none": OKABE_ITO["black"],
    "gaussian": OKABE_ITO["blue"],
    "laplacian": OKABE_ITO["sky blue"],
    "prune": OKABE_ITO["bluish green"],
    "dp": OKABE_ITO["orange"],
    "precode": OKABE_ITO["vermillion"],
    "precode+": OKABE_ITO["reddish purple"],
}
"""One colour per defense family in every figure of the book: the undefended model (``none``), the
gradient defenses of chapter 4 (``gaussian``, ``laplacian``, ``prune``, ``dp``), PRECODE wherever it
is placed (``precode``), and PRECODE combined with a gradient defense (``precode+``, chapter 7's
grid). Variants of one family differ by marker. Attacks and architectures use the cycle (``C0``,
``C1``, ...)."""

BOOK_STYLE = {
    # the HTML text column is about 7 inches at 100 dpi: a figure that wide is shown at its size
    "figure.figsize": (PAGE_INCHES, 4.0), "figure.dpi": 100, "savefig.dpi": 100,
    "font.size": 10, "axes.labelsize": 10, "axes.titlesize": 10, "figure.titlesize": 11,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 9, "legend.title_fontsize": 9,
    "axes.prop_cycle": mpl.cycler(color=list(OKABE_ITO.values())),
    "axes.spines.top": False, "axes.spines.right": False,
}
"""The matplotlib settings :func:`use_book_style` applies: text of :data:`MIN_FONT_SIZE` pt or more
at the page's width, the Okabe-Ito colour cycle, no top or right frame."""


def use_book_style() -> None:
    """Apply :data:`BOOK_STYLE` to matplotlib's defaults (``rcParams``).

    A figure no wider than 7 inches is shown at its size on the page, so its texts keep the sizes
    set here (9 pt or more); a wider one is scaled down, and its texts with it.

    Used by :func:`precode.notebook.setup_chapter`, so in every chapter.
    """
    mpl.rcParams.update(BOOK_STYLE)

SSIM_BOUNDS = (-1.0, 1.0)
"""The range SSIM can take; an interval drawn for it is clipped to this range."""


def clip_interval(mean: float, half: float, bounds: tuple[float, float] | None) -> tuple[float, float]:
    """``(low, high)`` of the interval ``mean +/- half``, clipped to ``bounds`` (``None``: unclipped).

    The interval always holds the mean itself: a mean a rounding error past the bound (SSIM
    1.0000001 for an exact reconstruction in float32) gets an interval of zero width on that side.

    Used by every figure that draws a mean with its interval for a bounded metric (SSIM).
    """
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = min(max(low, bounds[0]), mean), max(min(high, bounds[1]), mean)
    return low, high


def strip_plot(ax, groups: Mapping[str, Sequence[float]], ylabel: str = "", colours: Mapping[str, str] | None = None,
               *, bounds: tuple[float, float] | None = None, title: str | None = None, seed: int = 0,
               threshold: float | None = None, ylim: tuple[float, float] | None = None,
               interval: Callable[[np.ndarray], tuple[float, float, float]] | None = None,
               connect: str | None = None):
    """Draw one dot per value for each group (jittered), and its mean with the 95% t interval in black.

    Args:
        ax: the matplotlib axes to draw on.
        groups: ``{label: values}``, one column per label, in order.
        ylabel: the y axis' label.
        colours: ``{label: colour}``; the others get matplotlib's cycle (``C0``, ``C1``, ...), or
            their family's colour when the label is a family (:data:`FAMILY_COLOURS`).
        bounds: ``(low, high)`` the metric cannot leave (SSIM: :data:`SSIM_BOUNDS`); the interval
            (:func:`precode.metrics.mean_ci95`, symmetric) is drawn clipped to it. ``None``: unclipped.
        title: the axes' title.
        seed: the jitter's seed (the same figure every run).
        threshold: a value to mark with a dotted line (a success threshold), or ``None``.
        ylim: the y axis' limits, or ``None`` for matplotlib's.
        interval: ``values -> (mean, low, high)`` for another interval
            (:func:`precode.metrics.mean_bootstrap_ci`, say); ``None``: the t interval.
        connect: a colour for a faint line through the means (groups that are the levels of one
            parameter, a dose-response), or ``None``.

    Returns:
        ``ax``.

    Raises:
        ValueError: a group without values, or with NaN values.
    """
    rng = np.random.default_rng(seed)
    means = []
    for i, (name, values) in enumerate(groups.items()):
        v = np.asarray(values, dtype=float)
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=14, alpha=0.7,
                   color=(colours or {}).get(name, FAMILY_COLOURS.get(name, f"C{i % 10}")))
        if interval is None:
            mean, half = mean_ci95(v)
            low, high = clip_interval(mean, half, bounds)
        else:
            mean, low, high = interval(v)
        means.append(mean)
        ax.errorbar(i + 0.3, mean, yerr=[[mean - low], [high - mean]], fmt="_", color="k", ms=10, capsize=3)
    if connect is not None:
        ax.plot(np.arange(len(means)) + 0.3, means, "-", color=connect, alpha=0.5)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    _finish(ax, threshold, ylim)
    return ax


def _finish(ax, threshold: float | None, ylim: tuple[float, float] | None) -> None:
    if threshold is not None:
        ax.axhline(threshold, color="gray", lw=0.8, ls=":")
    if ylim is not None:
        ax.set_ylim(*ylim)


def mean_ci_plot(ax, xs: Sequence[float], samples: Sequence[Sequence[float]], *, label: str | None = None,
                 colour: str | None = None, fmt: str = "o-", bounds: tuple[float, float] | None = None,
                 threshold: float | None = None, ylim: tuple[float, float] | None = None):
    """Draw the mean of each sample at its ``x``, with its 95% t interval (:func:`precode.metrics.mean_ci95`).

    Args:
        ax: the matplotlib axes to draw on.
        xs: one position per sample (a budget, a learning rate, an accuracy).
        samples: one sequence of values per ``x`` (the victims' SSIM, say).
        label, colour, fmt: the series' legend label, colour and matplotlib format.
        bounds: ``(low, high)`` the metric cannot leave; intervals are clipped to it.
        threshold, ylim: as in :func:`strip_plot`.

    Returns:
        ``ax``.

    Raises:
        ValueError: ``xs`` and ``samples`` of different lengths, or a sample without values or with NaN.
    """
    if len(xs) != len(samples):
        raise InputError(f"mean_ci_plot needs one sample per x: {len(xs)} x values, {len(samples)} samples")
    stats = [mean_ci95(v) for v in samples]
    means = np.array([m for m, _ in stats])
    lows, highs = np.array([clip_interval(m, h, bounds) for m, h in stats]).T
    ax.errorbar(xs, means, yerr=[means - lows, highs - means], fmt=fmt, color=colour, capsize=3, label=label)
    _finish(ax, threshold, ylim)
    return ax


def rate_plot(ax, xs: Sequence[float], successes: Sequence[int], n: int | Sequence[int], *, label: str | None = None,
              marker: str = "o", colour: str | None = None, ls: str = "-"):
    """Draw the success rate ``successes / n`` at each ``x``, with its Wilson 95% interval
    (:func:`precode.metrics.wilson_interval`, sound at 0 or ``n`` successes).

    Args:
        ax: the matplotlib axes to draw on.
        xs: one position per rate (a batch size, a number of clients per aggregate).
        successes: the count of successes at each ``x``.
        n: the number of trials, one for all or one per ``x``.
        label, marker, colour, ls: the series' legend label and style.

    Returns:
        ``ax``, with the y axis from -0.05 to 1.05.

    Raises:
        ValueError: ``xs`` and ``successes`` of different lengths, or ``n`` below 1.
    """
    ns = [int(n)] * len(xs) if np.isscalar(n) else [int(k) for k in n]
    if not len(xs) == len(successes) == len(ns):
        raise InputError(f"rate_plot needs one count per x: {len(xs)} x values, {len(successes)} counts, "
                         f"{len(ns)} trial numbers")
    rates = np.array([k / m for k, m in zip(successes, ns)])
    bounds = np.array([wilson_interval(int(k), m) for k, m in zip(successes, ns)])
    ax.errorbar(xs, rates, yerr=[rates - bounds[:, 0], bounds[:, 1] - rates], marker=marker, ls=ls, color=colour,
                capsize=3, label=label)
    ax.set_ylim(-0.05, 1.05)
    return ax


def loss_curves(ax, history, *, colour: str | None = None, label: str | None = None, log: bool = True):
    """Draw an attack's loss per iteration, one faint line per victim, and one legend entry.

    Args:
        ax: the matplotlib axes to draw on.
        history: ``(iterations, victims)``: :attr:`precode.attacks.AttackResult.loss_history`.
        colour, label: the lines' colour and their legend label.
        log: a logarithmic y axis.

    Returns:
        ``ax``.
    """
    values = torch.as_tensor(history).detach().cpu().numpy()
    if values.ndim != 2 or values.size == 0:
        raise InputError(f"a loss history is (iterations, victims), got shape {values.shape}")
    ax.plot(values, color=colour, alpha=0.35, lw=0.8)
    ax.plot([], [], color=colour, label=label)
    ax.set(xlabel="iteration", yscale="log" if log else "linear")
    return ax


def median_curve(ax, history, *, colour: str | None = None, label: str | None = None, log: bool = True):
    """Draw the median over the victims of an attack's loss per iteration (iterations counted from 1).

    Args:
        ax: the matplotlib axes to draw on.
        history: ``(iterations, victims)``, as for :func:`loss_curves`.
        colour, label: the line's colour and legend label.
        log: a logarithmic y axis.

    Returns:
        ``ax``.
    """
    values = torch.as_tensor(history).detach().cpu()
    if values.ndim != 2 or values.numel() == 0:
        raise InputError(f"a loss history is (iterations, victims), got shape {tuple(values.shape)}")
    ax.plot(np.arange(1, values.shape[0] + 1), values.median(1).values.numpy(), color=colour, label=label)
    ax.set(xlabel="iteration", yscale="log" if log else "linear")
    return ax


TRAINING_LABELS = {"train_loss": "training loss (cross-entropy + KL)", "test_accuracy": "test accuracy (%)"}


def training_curves(axes, histories: Mapping[str, Sequence[Mapping]],
                    keys: Sequence[str] = ("train_loss", "test_accuracy"), *,
                    styles: Mapping[str, str] | None = None, colours: Mapping[str, str] | None = None):
    """Draw each training's ``keys`` per epoch, one axes per key, one line per training.

    Args:
        axes: one matplotlib axes per key.
        histories: ``{label: history}``, a history being the per-epoch records of
            :func:`precode.training.train` (dicts with ``"epoch"`` and the keys).
        keys: the records' entries to draw; ``"test_accuracy"`` is drawn in percent.
        styles, colours: a line style (``"o-"``) and a colour per label (default: matplotlib's cycle).

    Returns:
        ``axes``.
    """
    axes = list(np.atleast_1d(axes))
    if len(axes) != len(keys):
        raise InputError(f"one axes per key: got {len(axes)} axes for the keys {list(keys)}")
    for label, history in histories.items():
        missing = [k for k in ("epoch", *keys) if history and k not in history[0]]
        if not history or missing:
            raise InputError(f"the history of {label!r} has no epochs or lacks {missing}; "
                             "give the records precode.training.train returns")
        epochs = [r["epoch"] for r in history]
        for ax, key in zip(axes, keys):
            scale = 100 if key == "test_accuracy" else 1
            colour = (colours or {}).get(label)  # none: the style's colour, else matplotlib's cycle
            ax.plot(epochs, [scale * r[key] for r in history], (styles or {}).get(label, "o-"), label=label,
                    **({} if colour is None else {"color": colour}))
    for ax, key in zip(axes, keys):
        ax.set(xlabel="epoch", ylabel=TRAINING_LABELS.get(key, key))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    return axes


def bar_values(ax, values: Mapping[str, float], *, colours: Mapping[str, str] | Sequence[str] | None = None,
               fmt: str = "{:.1f}", xlabel: str = "", log: bool = False, xlim: tuple[float, float] | None = None):
    """One horizontal bar per label, top to bottom in order, each with its value written at its end.

    Args:
        ax: the matplotlib axes.
        values: ``{label: value}``.
        colours: ``{label: colour}`` or one colour per bar in order; the others get matplotlib's cycle.
        fmt: the format of the written values.
        xlabel: the x axis' label.
        log: a logarithmic x axis (values spanning decades, such as seconds).
        xlim: the x axis' range, or ``None`` (matplotlib's).

    Raises:
        ValueError: no values, or a value that is not finite.

    Used in chapters 2 (the attacks' seconds) and 7 (the trained variants' accuracy).
    """
    labels = list(values)
    xs = np.asarray([float(values[k]) for k in labels])
    if not labels or not np.all(np.isfinite(xs)):
        raise InputError(f"bar_values needs finite values, got {dict(values)}")
    if colours is None or isinstance(colours, Mapping):
        chosen = [(colours or {}).get(k, f"C{i % 10}") for i, k in enumerate(labels)]
    else:
        chosen = list(colours)
    ax.barh(range(len(xs)), xs, color=chosen)
    ax.set_yticks(range(len(xs)), labels)
    ax.invert_yaxis()
    for i, x in enumerate(xs):
        ax.text(x, i, " " + fmt.format(x), va="center", fontsize=MIN_FONT_SIZE)
    if log:
        ax.set_xscale("log")
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.set_xlabel(xlabel)
    return ax


def value_grid(ax, values, columns: Sequence, rows: Sequence, *, fmt: str = "{:.2f}", xlabel: str = "",
               ylabel: str = "", title: str = ""):
    """Draw a ``(rows, columns)`` table of numbers as a heat map, each value written in its square.

    Args:
        ax: the matplotlib axes.
        values: ``(len(rows), len(columns))`` numbers (a sweep over two parameters).
        columns, rows: the parameters' values, the labels of the columns and rows.
        fmt: how each value is written.

    Returns:
        ``ax``.
    """
    values = np.asarray(values, dtype=float)
    if values.shape != (len(rows), len(columns)):
        raise InputError(f"values must be (rows, columns) = ({len(rows)}, {len(columns)}), got {values.shape}")
    ax.imshow(values, cmap="viridis")
    ax.set_xticks(range(len(columns)), [f"{c:g}" if isinstance(c, float) else str(c) for c in columns])
    ax.set_yticks(range(len(rows)), [f"{r:g}" if isinstance(r, float) else str(r) for r in rows])
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title)
    for (r, c), v in np.ndenumerate(values):
        ax.text(c, r, fmt.format(v), ha="center", va="center", color="w", fontsize=MIN_FONT_SIZE)
    return ax


def show_image(ax, image) -> None:
    """Draw one image ``(C, H, W)`` with pixels in ``[0, 1]`` (clipped): grey for one channel, colour for
    three; no ticks, no frame."""
    image = torch.as_tensor(image).detach().float().cpu().clamp(0, 1)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise InputError(f"an image is (1 or 3, H, W), got shape {tuple(image.shape)}")
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def image_grid(rows: Mapping[str, Sequence], *, notes: Mapping[str, Sequence[str]] | None = None,
               columns: Sequence[str] | None = None, title: str | None = None, size: float = 1.05,
               label_size: int = MIN_FONT_SIZE):
    """A figure of images: one row per entry of ``rows``, its label on the left, one image per column.

    Args:
        rows: ``{label: images}``: a tensor ``(N, C, H, W)`` or a sequence of ``(C, H, W)`` images
            with pixels in ``[0, 1]``; a shorter row leaves its last cells empty.
        notes: ``{label: texts}``: one short text per image of that row, written under it.
        columns: one title per column, above the first row.
        title: the figure's title.
        size: inches per image.
        label_size: font size of the row labels, notes and column titles (points; at least 9 reads
            on the page).

    Returns:
        The matplotlib figure (the caller shows or saves it).

    Raises:
        ValueError: no rows, an empty row, or notes that do not fit their row.
    """
    import matplotlib.pyplot as plt

    if not rows or any(len(images) == 0 for images in rows.values()):
        raise InputError("image_grid needs at least one row, and every row at least one image")
    for label, texts in (notes or {}).items():
        if label not in rows or len(texts) != len(rows[label]):
            raise InputError(f"notes for {label!r} need one text per image of that row")
    n_cols = max(len(images) for images in rows.values())
    gap = 0.12 if notes else 0.0
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(size * n_cols + 0.8, (size + gap) * len(rows) + 0.4),
                             squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= len(images):
                ax.axis("off")
                continue
            show_image(ax, images[c])
            if notes and label in notes:
                ax.text(0.5, -0.04, notes[label][c], transform=ax.transAxes, ha="center", va="top",
                        fontsize=label_size)
        axes[r, 0].set_ylabel(label, fontsize=label_size, rotation=0, ha="right", va="center")
    for c, name in enumerate(columns or []):
        axes[0, c].set_title(name, fontsize=label_size + 1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig



@dataclasses.dataclass(frozen=True)
class DefenseStyle:
    """How a family of gradient defenses is drawn and named (chapter 4's figures).

    Attributes:
        title: the family in words (``"Gaussian noise"``).
        short: a short name for an image grid's row (``"Gaussian"``).
        parameter: its strength parameter, for an axis (``"std $\\sigma$"``).
        symbol: the parameter's symbol (``"\u03c3"``, sigma).
        colour, marker: the family's colour (:data:`FAMILY_COLOURS`) and matplotlib marker; its levels
            are drawn in shades of the colour, lighter for weaker levels.
        label_side: where :func:`privacy_utility` writes a level next to its point (``"left"`` or ``"right"``).
    """

    title: str
    short: str
    parameter: str
    symbol: str
    colour: str
    marker: str
    label_side: str = "right"


DEFENSE_STYLES = {
    "gaussian": DefenseStyle("Gaussian noise", "Gaussian", "std $\\sigma$", "\u03c3", FAMILY_COLOURS["gaussian"], "o"),
    "laplacian": DefenseStyle("Laplacian noise", "Laplacian", "scale $b$", "b", FAMILY_COLOURS["laplacian"], "s"),
    "prune": DefenseStyle("pruning", "pruning", "fraction $p$", "p", FAMILY_COLOURS["prune"], "^", label_side="left"),
    "dp": DefenseStyle("DP-SGD", "DP-SGD", "noise multiplier $z$", "z", FAMILY_COLOURS["dp"], "D"),
}
"""The gradient defenses' families (:func:`precode.defenses.defense_spec`) as chapter 4 draws them."""


def defense_training(axes, reference, trained: Mapping[str, object], style: DefenseStyle):
    """One family's trainings: test accuracy per epoch (top axes) and the final accuracy against the
    level (bottom axes), the undefended training in black.

    Args:
        axes: ``(top, bottom)`` matplotlib axes.
        reference: the undefended :class:`~precode.defenses.TrainingResult` (``history``, ``test_accuracy``).
        trained: ``{level's label: TrainingResult}``, weakest first.
        style: the family's :class:`DefenseStyle`.

    Returns:
        ``axes``.
    """
    top, bottom = axes
    if not trained:
        raise InputError("defense_training needs at least one trained level")
    histories = {"no defense": reference.history, **{label: r.history for label, r in trained.items()}}
    styles = dict.fromkeys(histories, style.marker + "-") | {"no defense": "k.--"}
    colours = {label: _shade(style.colour, 0.4 + 0.6 * (i + 1) / len(trained)) for i, label in enumerate(trained)}
    training_curves([top], histories, ["test_accuracy"], styles=styles, colours=colours)
    top.legend(title=style.parameter, loc="lower right")
    acc = [100 * reference.test_accuracy] + [100 * r.test_accuracy for r in trained.values()]
    bottom.plot(range(len(acc)), acc, "-", color=style.colour, alpha=0.5)
    for x, a in enumerate(acc):
        bottom.plot(x, a, style.marker, color="black" if x == 0 else style.colour)
    bottom.set_xticks(range(len(acc)), ["none", *trained])
    bottom.set_xlabel(style.parameter)
    return axes


def _shade(colour: str, strength: float) -> tuple[float, float, float]:
    """``colour`` mixed with white: ``strength`` 1 is the colour itself, 0 is white."""
    return tuple(1 - strength * (1 - c) for c in to_rgb(colour))


def privacy_utility(ax, series: Mapping[str, tuple], references: Mapping[str, tuple], *, crowd: float = 0.95):
    """Each defense level at (test accuracy after training, the attack's mean SSIM with its 95% interval).

    Args:
        ax: the matplotlib axes.
        series: ``{legend label: (style, accuracies, SSIM samples, level labels)}``, one per family:
            its :class:`DefenseStyle`, and per level the accuracy, the victims' SSIM and the level's name.
        references: ``{legend label: (accuracy, SSIM samples, filled)}``: the undefended trainings,
            drawn as black stars (``filled=False``: a white star); the first is where the levels
            too close to it to be told apart are named together.
        crowd: levels whose mean SSIM is at least this are named together at the first reference
            (they sit on it) instead of next to their points.

    Returns:
        ``ax``.
    """
    if not references:
        raise InputError("privacy_utility needs at least one undefended reference")
    crowded = []
    for label, (style, xs, samples, levels) in series.items():
        mean_ci_plot(ax, xs, samples, fmt=style.marker, colour=style.colour, bounds=SSIM_BOUNDS, label=label)
        left = style.label_side == "left"
        for x, values, level in zip(xs, samples, levels):
            m = mean_ci95(values)[0]
            if m >= crowd:
                crowded.append(f"{style.title} {level}")
            else:
                ax.annotate(level, (x, m), textcoords="offset points", xytext=(-6 if left else 6, 3),
                            fontsize=MIN_FONT_SIZE, ha="right" if left else "left", color=style.colour)
    x0, samples0, _filled = next(iter(references.values()))
    if crowded:
        ax.annotate("on the black star: " + ", ".join(crowded), (x0, mean_ci95(samples0)[0]),
                    xytext=(x0 - 0.05, 1.13), ha="right", va="center", fontsize=MIN_FONT_SIZE,
                    arrowprops={"arrowstyle": "->", "color": "0.4"})
    for label, (x, samples, filled) in references.items():
        m, h = mean_ci95(samples)
        ax.errorbar(x, m, yerr=h, fmt="*", color="black", markersize=12, label=label,
                    **({} if filled else {"markerfacecolor": "white"}))
    return ax
