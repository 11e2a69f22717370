import math

import numpy as np
import pytest
import torch

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
