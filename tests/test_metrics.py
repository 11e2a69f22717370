import math

import numpy as np
import pytest
import torch

from precode import metrics
from precode.metrics import PSNR_CAP_DB, identification_rate, label_accuracy, mean_ci95, mse, psnr, ssim


def test_known_values():
    a = torch.zeros(2, 1, 8, 8)
    b = torch.full((2, 1, 8, 8), 0.1)
    assert mse(b, a).tolist() == pytest.approx([0.01, 0.01])
    assert psnr(b, a).tolist() == pytest.approx([20.0, 20.0], rel=1e-5)
    assert psnr(a, a).tolist() == [PSNR_CAP_DB, PSNR_CAP_DB]


def test_reconstructions_are_clipped():
    a = torch.full((1, 1, 8, 8), 1.0)
    assert mse(torch.full((1, 1, 8, 8), 5.0), a).item() == 0.0


def test_ssim_grey_and_colour():
    torch.manual_seed(0)
    grey = torch.rand(3, 1, 28, 28)
    assert ssim(grey, grey).tolist() == pytest.approx([1.0] * 3)
    colour = torch.rand(2, 3, 32, 32)
    assert ssim(colour, colour).tolist() == pytest.approx([1.0, 1.0])
    noise = torch.rand(2, 3, 32, 32)
    assert ssim(noise, colour).abs().max() < 0.1
    from skimage.metrics import structural_similarity

    ref = structural_similarity(noise[0].numpy(), colour[0].numpy(), data_range=1.0, channel_axis=0)
    assert ssim(noise, colour)[0].item() == pytest.approx(ref, rel=1e-5)


def test_ssim_small_images_rejected():
    with pytest.raises(ValueError, match="7x7"):
        ssim(torch.rand(1, 1, 5, 5), torch.rand(1, 1, 5, 5))


def test_shape_mismatch_and_nan():
    with pytest.raises(ValueError, match="same shape"):
        mse(torch.rand(2, 1, 8, 8), torch.rand(3, 1, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        psnr(torch.full((1, 1, 8, 8), float("nan")), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="N = 0"):
        mse(torch.rand(0, 1, 8, 8), torch.rand(0, 1, 8, 8))


def test_label_accuracy():
    assert label_accuracy([1, 2, 3, 4], torch.tensor([1, 2, 0, 4])) == 0.75
    with pytest.raises(ValueError):
        label_accuracy([1], [1, 2])


def test_identification_rate():
    torch.manual_seed(0)
    victims = torch.rand(4, 1, 8, 8)
    pool = torch.rand(20, 1, 8, 8)
    assert identification_rate(victims + 0.01, victims, pool) == 1.0
    # Reconstructions that look like other images are not identified.
    assert identification_rate(pool[:4], victims, pool) == 0.0
    # Swapping two reconstructions loses exactly those two.
    swapped = victims[[1, 0, 2, 3]]
    assert identification_rate(swapped, victims) == 0.5


def test_mean_ci95():
    m, h = mean_ci95([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5
    assert h == pytest.approx(3.182446 * math.sqrt(5 / 3) / 2, rel=1e-6)  # t(0.975, 3), not the normal 1.96
    assert mean_ci95(np.arange(8.0))[1] == pytest.approx(2.364624 * np.arange(8.0).std(ddof=1) / math.sqrt(8), rel=1e-6)
    assert mean_ci95([3.0]) == (3.0, 0.0)
    with pytest.raises(ValueError):
        mean_ci95([])


def test_bootstrap_interval_stays_in_the_metrics_range_and_is_seeded():
    from precode.metrics import mean_bootstrap_ci

    values = [1.0] * 7 + [0.6]  # piled up at SSIM's bound: the t interval crosses 1
    m, low, high = mean_bootstrap_ci(values)
    assert m == pytest.approx(0.95) and 0.6 <= low < m < high <= 1.0
    assert mean_bootstrap_ci(values) == (m, low, high)
    with pytest.raises(ValueError, match="finite"):
        mean_bootstrap_ci([0.5, float("nan")])


def test_strip_plot_clips_the_interval_to_the_metrics_range():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from precode.plotting import SSIM_BOUNDS, strip_plot

    values = [1.0] * 7 + [0.2]  # piled up at SSIM's bound: the t interval crosses 1
    m, h = mean_ci95(values)
    assert m + h > 1
    fig, ax = plt.subplots()
    strip_plot(ax, {"clipped": values}, "SSIM", bounds=SSIM_BOUNDS, title="t")
    strip_plot(ax, {"free": values}, "SSIM")
    (clipped, free) = [c for c in ax.containers]  # the two error bars, in order
    top = lambda bar: float(bar.lines[2][0].get_segments()[0][:, 1].max())  # noqa: E731
    assert top(clipped) == 1.0 and top(free) == pytest.approx(m + h)
    assert ax.get_title() == "t"
    plt.close(fig)
    with pytest.raises(ValueError, match="no values"):
        strip_plot(ax, {"empty": []})



def test_image_grid_draws_grey_and_colour_rows_with_notes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from precode.plotting import image_grid

    grey, colour = torch.rand(3, 1, 8, 8), torch.rand(2, 3, 8, 8)
    fig = image_grid({"grey": grey, "colour": colour}, notes={"grey": ["a", "b", "c"]}, columns=["x", "y", "z"],
                     title="t")
    axes = fig.axes
    assert len(axes) == 6 and not axes[5].axison  # the shorter row's last cell stays empty
    assert axes[0].get_images()[0].get_array().shape == (8, 8)  # grey: one channel
    assert axes[3].get_images()[0].get_array().shape == (8, 8, 3)  # colour
    assert [t.get_text() for t in axes[1].texts] == ["b"] and axes[2].get_title() == "z"
    assert axes[0].get_ylabel() == "grey" and fig._suptitle.get_text() == "t"
    plt.close(fig)
    with pytest.raises(ValueError, match="one text per image"):
        image_grid({"grey": grey}, notes={"grey": ["a"]})
    with pytest.raises(ValueError, match="at least one row"):
        image_grid({})
    with pytest.raises(ValueError, match=r"\(1 or 3, H, W\)"):
        image_grid({"bad": torch.rand(1, 2, 8, 8)})
    plt.close("all")

# -- scoring batches and gradient agreement ------------------------------------------------------

def test_match_to_victims_undoes_a_shuffle_within_each_batch_only():
    g = torch.Generator().manual_seed(0)
    victims = torch.rand(6, 1, 8, 8, generator=g)
    shuffled = victims[torch.tensor([1, 0, 2, 5, 3, 4])] + 0.01 * torch.rand(6, 1, 8, 8, generator=g)
    order = metrics.match_to_victims(shuffled.clamp(0, 1), victims, batch_size=3)
    assert order.tolist() == [1, 0, 2, 4, 5, 3]
    assert torch.allclose(shuffled[order].clamp(0, 1), victims, atol=0.02)
    assert metrics.match_to_victims(shuffled, victims, batch_size=1).tolist() == list(range(6))
    assert sorted(metrics.match_to_victims(shuffled, victims).tolist()) == list(range(6))  # one batch of 6
    with pytest.raises(ValueError, match="batches of 4"):
        metrics.match_to_victims(shuffled, victims, batch_size=4)
    with pytest.raises(ValueError, match="NaN"):
        metrics.match_to_victims(torch.full_like(victims, float("nan")), victims, batch_size=3)


def test_labels_of_a_batch_count_as_a_multiset():
    predicted, true = torch.tensor([1, 1, 3, 2]), torch.tensor([1, 2, 2, 3])
    assert metrics.match_labels(predicted, true, 2).tolist() == [1, 1, 2, 3]
    assert metrics.batch_label_recovery(predicted, true, 2) == 0.75
    assert metrics.batch_label_recovery(predicted, true, 1) == 0.25
    assert metrics.distinct_label_fraction(torch.tensor([1, 1, 2, 3]), 2) == 0.75
    assert metrics.distinct_label_fraction(torch.tensor([1, 1, 2, 3]), 4) == 0.75
    with pytest.raises(ValueError, match="3 predicted labels for 4"):
        metrics.match_labels(predicted[:3], true, 2)


def test_gradient_agreement_measures():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(3, 4, 5, generator=g), "b": torch.randn(3, 4, generator=g)}
    minus = {k: -v for k, v in a.items()}
    assert torch.allclose(metrics.gradient_cosine(a, a), torch.ones(3))
    assert torch.allclose(metrics.gradient_cosine(a, minus), -torch.ones(3))
    half = {"w": a["w"], "b": -a["b"]}  # agrees on w only
    cos = metrics.layer_cosines(a, half)
    assert torch.allclose(cos["w"], torch.ones(3)) and torch.allclose(cos["b"], -torch.ones(3))
    share = metrics.norm_share(a, ["w"]) + metrics.norm_share(a, ["b"])
    assert torch.allclose(share, torch.ones(3))
    with pytest.raises(ValueError, match="different parameters"):
        metrics.gradient_cosine(a, {"w": a["w"]})
    with pytest.raises(ValueError, match="unknown parameter"):
        metrics.norm_share(a, ["x"])


def test_wilson_interval_lives_in_metrics_and_evaluation_reexports_it():
    from precode import evaluation

    assert evaluation.wilson_interval is metrics.wilson_interval
    low, high = metrics.wilson_interval(0, 32)
    assert low == 0.0 and 0.09 < high < 0.12  # 0 of 32 is compatible with rates up to about 11%
    with pytest.raises(ValueError, match="0 to n successes: got 9 of 8"):
        metrics.wilson_interval(9, 8)


def test_mean_ci_rate_and_loss_plots_draw_what_they_are_given():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from precode.plotting import SSIM_BOUNDS, loss_curves, mean_ci_plot, median_curve, rate_plot, strip_plot

    _, ax = plt.subplots()
    samples = [[0.1, 0.2, 0.3], [1.0, 1.0, 0.4]]
    mean_ci_plot(ax, [10, 100], samples, bounds=SSIM_BOUNDS, threshold=0.5, ylim=(0, 1.05), label="a")
    bar = ax.containers[0]
    ys = bar.lines[0].get_ydata()
    assert list(ys) == pytest.approx([0.2, 0.8])
    tops = bar.lines[2][0].get_segments()
    assert max(seg[:, 1].max() for seg in tops) == 1.0  # the second interval is clipped at SSIM's bound
    assert ax.get_ylim() == (0, 1.05) and ax.lines[-1].get_ydata()[0] == 0.5  # the threshold line
    with pytest.raises(ValueError, match="one sample per x"):
        mean_ci_plot(ax, [1, 2, 3], samples)

    _, ax2 = plt.subplots()
    rate_plot(ax2, [1, 2], [0, 8], 8, label="r")
    bar = ax2.containers[0]
    assert list(bar.lines[0].get_ydata()) == [0.0, 1.0]
    low0, high0 = metrics.wilson_interval(0, 8)
    seg = bar.lines[2][0].get_segments()[0]
    assert seg[:, 1].min() == pytest.approx(low0) and seg[:, 1].max() == pytest.approx(high0)
    with pytest.raises(ValueError, match="one count per x"):
        rate_plot(ax2, [1, 2], [1], 8)

    loss_curves(ax2, torch.rand(5, 3), colour="C1", label="loss")
    assert ax2.get_yscale() == "log" and len(ax2.lines) >= 4  # 3 victims and one legend entry
    with pytest.raises(ValueError, match="iterations, victims"):
        loss_curves(ax2, torch.rand(5))
    _, ax4 = plt.subplots()
    median_curve(ax4, torch.tensor([[1.0, 2.0, 9.0], [0.5, 0.1, 0.2]]), label="median")
    assert list(ax4.lines[0].get_xdata()) == [1, 2] and list(ax4.lines[0].get_ydata()) == pytest.approx([2.0, 0.2])
    with pytest.raises(ValueError, match="iterations, victims"):
        median_curve(ax4, torch.rand(5))

    _, ax3 = plt.subplots()
    strip_plot(ax3, {"boot": [0.1, 0.5, 0.9]}, interval=lambda v: (0.5, 0.2, 0.7))
    seg = ax3.containers[0].lines[2][0].get_segments()[0]
    assert seg[:, 1].min() == pytest.approx(0.2) and seg[:, 1].max() == pytest.approx(0.7)
    plt.close("all")


def test_training_curves_and_value_grid_draw_what_they_are_given():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from precode.plotting import training_curves, value_grid

    history = [{"epoch": 1, "train_loss": 2.0, "test_accuracy": 0.5},
               {"epoch": 2, "train_loss": 1.0, "test_accuracy": 0.75}]
    _, axes = plt.subplots(1, 2)
    training_curves(axes, {"a": history, "b": history[:1]}, styles={"a": "s--"})
    assert list(axes[0].lines[0].get_ydata()) == [2.0, 1.0]
    assert list(axes[1].lines[0].get_ydata()) == [50.0, 75.0]  # accuracy in percent
    assert axes[0].lines[0].get_linestyle() == "--" and list(axes[1].lines[1].get_xdata()) == [1]
    assert axes[1].get_ylabel() == "test accuracy (%)"
    with pytest.raises(ValueError, match="one axes per key"):
        training_curves(axes[:1], {"a": history})
    with pytest.raises(ValueError, match="lacks \\['test_accuracy'\\]"):
        training_curves(axes, {"a": [{"epoch": 1, "train_loss": 1.0}]})

    _, ax = plt.subplots()
    value_grid(ax, [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], [1e-4, 1e-3], [16, 64, 256], fmt="{:.1f}")
    assert [t.get_text() for t in ax.texts] == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.0001", "0.001"]
    with pytest.raises(ValueError, match="must be \\(rows, columns\\) = \\(3, 2\\)"):
        value_grid(ax, [[0.1, 0.2]], [1e-4, 1e-3], [16, 64, 256])
    plt.close("all")


def test_gradient_cosines_are_those_of_float64_and_zero_for_a_zero_gradient():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(4, 1000, 800, generator=g) * 1e-3, "b": torch.randn(4, 1000, generator=g)}
    b = {k: v + 0.5 * v.std() * torch.randn(v.shape, generator=g) for k, v in a.items()}
    b["w"][3] = 0  # a zero weight gradient: its layer's cosine is 0, as cosine_similarity has it
    a["b"][2] *= 1e-7  # tiny but not zero (norm about 3e-6): its cosine is still computed
    b["b"][2] = a["b"][2] * 2
    flat = [torch.cat([d[k].flatten(1) for k in ("w", "b")], 1).double() for d in (a, b)]
    want = torch.nn.functional.cosine_similarity(*flat, dim=1)
    assert torch.allclose(metrics.gradient_cosine(a, b).double(), want, atol=1e-6, rtol=0)
    layer = metrics.layer_cosines(a, b)
    assert float(layer["w"][3]) == 0 and float(layer["b"][2]) == pytest.approx(1, abs=1e-6)
    want_w = torch.nn.functional.cosine_similarity(a["w"].flatten(1).double(), b["w"].flatten(1).double(), dim=1)
    assert torch.allclose(layer["w"].double(), want_w, atol=1e-6, rtol=0)


def test_bar_values_and_the_connected_strip_plot_draw_their_values():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from precode.plotting import bar_values, strip_plot

    _, ax = plt.subplots()
    bar_values(ax, {"slow": 120.0, "fast": 0.5}, colours=["0.5", "C1"], log=True, xlabel="seconds")
    widths = [p.get_width() for p in ax.patches]
    assert widths == [120.0, 0.5] and ax.get_xscale() == "log" and ax.get_xlabel() == "seconds"
    assert [t.get_text() for t in ax.texts] == [" 120.0", " 0.5"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["slow", "fast"]
    with pytest.raises(ValueError, match="finite"):
        bar_values(ax, {"broken": float("nan")})
    with pytest.raises(ValueError, match="finite"):
        bar_values(ax, {})

    _, ax2 = plt.subplots()
    strip_plot(ax2, {"none": [1.0, 0.8], "0.1": [0.2, 0.4]}, connect="C3")
    line = ax2.lines[-1]  # through the means, at the error bars' positions
    assert list(line.get_ydata()) == pytest.approx([0.9, 0.3]) and list(line.get_xdata()) == pytest.approx([0.3, 1.3])
    plt.close("all")


def test_the_defense_figures_draw_every_level_and_the_undefended_reference():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from precode.defenses import TrainingResult
    from precode.plotting import DEFENSE_STYLES, defense_training, privacy_utility

    def result(acc):  # two epochs, ending at accuracy acc
        return TrainingResult(history=[{"epoch": e, "test_accuracy": acc - 0.1 * (2 - e)} for e in (1, 2)])

    _fig, (top, bottom) = plt.subplots(2)
    defense_training((top, bottom), result(0.8), {"0.1": result(0.7), "1": result(0.5)}, DEFENSE_STYLES["dp"])
    assert len(top.get_lines()) == 3  # the reference and two levels
    assert list(bottom.lines[0].get_ydata()) == pytest.approx([80, 70, 50])  # final accuracy against the level
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["none", "0.1", "1"]
    with pytest.raises(ValueError, match="at least one"):
        defense_training((top, bottom), result(0.8), {}, DEFENSE_STYLES["dp"])

    _, ax = plt.subplots()
    series = {"pruning": (DEFENSE_STYLES["prune"], [0.8, 0.7], [[0.99, 0.98], [0.2, 0.3]], ["0.5", "0.99"])}
    privacy_utility(ax, series, {"no defense": (0.81, [1.0, 1.0], True)})
    texts = [t.get_text() for t in ax.texts]
    assert "0.99" in texts  # a level away from the star is named at its point ...
    assert "on the black star: pruning 0.5" in texts  # ... one on the star is named with the others there
    means = ax.containers[0].lines[0].get_ydata()
    assert list(means) == pytest.approx([0.985, 0.25])
    with pytest.raises(ValueError, match="reference"):
        privacy_utility(ax, series, {})
    plt.close("all")


_TEXT_SIZES = ("font.size", "axes.labelsize", "axes.titlesize", "figure.titlesize", "xtick.labelsize",
               "ytick.labelsize", "legend.fontsize", "legend.title_fontsize")


def _points(size) -> float:
    from matplotlib.font_manager import FontProperties

    return FontProperties(size=size).get_size_in_points()  # resolves "small" against font.size


def test_the_book_style_writes_every_text_at_nine_points_or_more():
    import matplotlib

    from precode.plotting import BOOK_STYLE, MIN_FONT_SIZE, use_book_style

    with matplotlib.rc_context():
        use_book_style()
        rc = matplotlib.rcParams
        small = {k: rc[k] for k in _TEXT_SIZES if _points(rc[k]) < MIN_FONT_SIZE}
        assert MIN_FONT_SIZE >= 9 and not small, small
        assert rc["figure.dpi"] == rc["savefig.dpi"] == 100 and rc["figure.figsize"][0] <= 7
        assert rc["axes.prop_cycle"].by_key()["color"][:3] == ["#0072B2", "#E69F00", "#009E73"]  # Okabe-Ito
    assert set(BOOK_STYLE) >= set(_TEXT_SIZES)


def test_the_shared_figures_have_no_text_below_nine_points():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PathCollection
    from matplotlib.text import Text

    from precode.plotting import (
        DEFENSE_STYLES,
        FAMILY_COLOURS,
        MIN_FONT_SIZE,
        SSIM_BOUNDS,
        bar_values,
        image_grid,
        privacy_utility,
        strip_plot,
        use_book_style,
    )

    def smallest(fig):
        fig.canvas.draw()
        return min(t.get_fontsize() for t in fig.findobj(Text) if t.get_text() and t.get_visible())

    with matplotlib.rc_context():
        use_book_style()
        fig, axes = plt.subplots(1, 3)
        series = {"pruning": (DEFENSE_STYLES["prune"], [0.8, 0.7], [[0.99, 0.98], [0.2, 0.3]], ["0.5", "0.99"])}
        privacy_utility(axes[0], series, {"no defense": (0.81, [1.0, 1.0], True)})
        axes[0].legend()
        strip_plot(axes[1], {"none": [1.0, 0.8], "precode": [0.1, 0.2]}, "SSIM", bounds=SSIM_BOUNDS, title="t")
        bar_values(axes[2], {"slow": 120.0, "fast": 0.5}, xlabel="seconds", log=True)
        fig.suptitle("figure")
        assert smallest(fig) >= MIN_FONT_SIZE
        # a family's points take the family's colour, wherever they are drawn
        dots = [c for c in axes[1].collections if isinstance(c, PathCollection)]  # one scatter per group
        assert matplotlib.colors.same_color(dots[1].get_facecolor()[0][:3], FAMILY_COLOURS["precode"])
        assert DEFENSE_STYLES["prune"].colour == FAMILY_COLOURS["prune"]
        grid = image_grid({"victims": torch.rand(2, 1, 8, 8)}, notes={"victims": ["a", "b"]}, columns=["1", "2"],
                          title="t")
        assert smallest(grid) >= MIN_FONT_SIZE
    plt.close("all")
