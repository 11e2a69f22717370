"""precode.release: a defended release, and trainings made of nothing but releases (one system)."""
import math

import pytest
import torch

from precode import build_model, compute_victim_gradients, load_data
from precode.defenses import GaussianNoise, LaplacianNoise, dp_epsilon, prune_gradients
from precode.release import Release, _mean_of_releases, _PrunedReleases, release_epsilon, train_on_releases


def test_a_release_names_its_mechanism_its_images_and_the_clients_a_step():
    release = Release("gaussian:1e-1")
    assert release.defense == "gaussian:0.1" and (release.images, release.clients) == (1, 64)
    assert "gradient of 1 image under gaussian:0.1" in str(release) and "64 such releases" in str(release)
    with pytest.raises(ValueError, match="invalid defense"):
        Release("gaussian:-1")
    with pytest.raises(ValueError, match="at least 1 image"):
        Release("none", images=0)


@pytest.mark.parametrize("mechanism, variance", [
    (GaussianNoise(0.1), 0.1 ** 2 / 64),   # K draws of N(0, s^2), averaged: N(0, s^2 / K)
    (LaplacianNoise(0.1), 2 * 0.1 ** 2 / 64),  # a Laplace(b) has variance 2 b^2
])
def test_the_mean_of_k_noisy_releases_has_the_noise_of_k_releases(mechanism, variance):
    transform = _mean_of_releases(mechanism, 64, seed=0)
    noise = transform({"w": torch.zeros(200_000)})["w"]
    assert noise.var().item() == pytest.approx(variance, rel=0.02)
    assert abs(noise.mean().item()) < 5 * math.sqrt(variance / 200_000)
    if isinstance(mechanism, LaplacianNoise):  # a mean of 64 Laplacians is nearly Gaussian: kurtosis 3 + 3/64
        kurtosis = ((noise - noise.mean()) ** 4).mean() / noise.var() ** 2
        assert kurtosis.item() == pytest.approx(3 + 3 / 64, abs=0.1)
    assert _mean_of_releases(GaussianNoise(0.0), 64, 0)({"w": torch.ones(3)})["w"].equal(torch.ones(3))


def test_pruned_releases_average_every_images_own_pruned_gradient():
    data = load_data("fashion-mnist-sample", "test").first(6)
    model = build_model("mlp", data.input_shape, data.num_classes, seed=0)
    for b in (1, 2):
        model.zero_grad(set_to_none=True)
        _PrunedReleases(0.9, b)(model, data.images, data.labels)
        shared = compute_victim_gradients(model, data.images, data.labels, batch_size=b)  # one per release
        releases = len(data) // b
        for name, p in model.named_parameters():
            want = sum(prune_gradients({name: shared[name][i]}, 0.9)[name] for i in range(releases)) / releases
            # the two paths compute the gradients differently (per-sample vs per-release), so with more than
            # one thread their rounding differs and an entry at the pruning threshold can land on either side
            off = ~torch.isclose(p.grad, want, atol=1e-6, rtol=1e-4)
            assert off.float().mean() <= 1e-3, (b, name, int(off.sum()))


def test_dp_releases_train_with_k_clients_noise_and_report_the_releases_epsilon(monkeypatch):
    from precode import release as release_module

    seen = {}
    real = release_module.train_dp

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(release_module, "train_dp", spy)
    data = load_data("fashion-mnist-sample", "train").first(32)
    model = build_model("mlp", data.input_shape, data.num_classes, seed=0)
    result = train_on_releases(model, data, release=Release("dp:clip=1,noise=0.5", clients=16), epochs=2)
    # the mean of 16 releases, each with N(0, (zC)^2): DP-SGD on fixed batches of 16 with multiplier z * sqrt(16)
    assert seen["noise_multiplier"] == pytest.approx(0.5 * 4) and seen["poisson_sampling"] is False
    assert seen["batch_size"] == 16
    # each image is in one release an epoch, each a Gaussian mechanism of multiplier z
    assert result.epsilon == pytest.approx(dp_epsilon(0.5, 1.0, 2)) == release_epsilon("dp:clip=1,noise=0.5", 2)
    assert [h["epsilon"] for h in result.history] == pytest.approx([dp_epsilon(0.5, 1.0, e) for e in (1, 2)])
    assert release_epsilon("gaussian:0.1", 2) is None and release_epsilon("dp:clip=1,noise=0", 1) == math.inf


def test_releases_without_noise_train_as_ordinary_batches():
    from precode.training import train

    data = load_data("fashion-mnist-sample", "train").first(64)
    a = build_model("mlp", data.input_shape, data.num_classes, seed=0)
    b = build_model("mlp", data.input_shape, data.num_classes, seed=0)
    history = train_on_releases(a, data, data, release=Release("none", clients=16), epochs=1).history
    assert history[0]["test_accuracy"] == train(b, data, data, epochs=1, batch_size=16, seed=0,
                                                progress=False)[0]["test_accuracy"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
