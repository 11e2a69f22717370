import math

import pytest
import torch
import torchvision
from torch import nn

from precode.bottleneck import VariationalBottleneck, add_precode, bottleneck_loss, bottlenecks, kl_divergence_bits
from precode.models import build_model
from precode.training import loss_fn


def test_reference_parameter_counts():
    vb = VariationalBottleneck(1024, size=256)
    assert sum(p.numel() for p in vb.encoder.parameters()) == 524_800
    assert sum(p.numel() for p in vb.decoder.parameters()) == 263_168


def test_kl_matches_hand_computation():
    mu = torch.tensor([[0.5, -1.0], [0.0, 2.0]])
    std = torch.tensor([[1.0, 0.5], [2.0, 1.0]])
    # per sample: sum_k -0.5 (1 + 2 ln s - mu^2 - s^2)
    s1 = -0.5 * (1 + 0 - 0.25 - 1) + -0.5 * (1 + 2 * math.log(0.5) - 1 - 0.25)
    s2 = -0.5 * (1 + 2 * math.log(2.0) - 0 - 4) + -0.5 * (1 + 0 - 4 - 1)
    expected = (s1 + s2) / 2 / math.log(2)
    assert kl_divergence_bits(mu, std).item() == pytest.approx(expected, rel=1e-6)
    # The KL of the prior itself is zero.
    assert kl_divergence_bits(torch.zeros(3, 4), torch.ones(3, 4)).item() == pytest.approx(0.0, abs=1e-7)


def test_forward_samples_and_stores_beta_kl():
    torch.manual_seed(0)
    vb = VariationalBottleneck(20, size=8, beta=0.5).train()
    x = torch.randn(4, 20)
    y1, y2 = vb(x), vb(x)
    assert y1.shape == x.shape
    assert not torch.allclose(y1, y2), "two train-mode passes must differ (fresh noise)"
    mu, std = vb.encode(x)
    assert vb.kl.item() == pytest.approx(0.5 * kl_divergence_bits(mu, std).item(), rel=1e-6)


def test_eval_modes():
    torch.manual_seed(0)
    x = torch.randn(3, 20)
    sample = VariationalBottleneck(20, size=8, eval_mode="sample").eval()
    assert not torch.allclose(sample(x), sample(x))
    mean = VariationalBottleneck(20, size=8, eval_mode="mean").eval()
    assert torch.allclose(mean(x), mean(x))
    mean.train()
    assert not torch.allclose(mean(x), mean(x)), "training always samples"


def test_noise_override_is_used():
    vb = VariationalBottleneck(6, size=3)
    x = torch.randn(2, 6)
    vb.noise = torch.zeros(2, 3)
    mu, _ = vb.encode(x)
    assert torch.allclose(vb(x), vb.decoder(mu))


@pytest.mark.parametrize("name", ["mlp", "cnn", "lenet"])
def test_add_precode_to_our_models(name):
    model = build_model(name, (1, 28, 28), 10, seed=0)
    add_precode(model)
    assert model.precode_before == "classifier"
    (vb,) = bottlenecks(model)
    x = torch.rand(5, 1, 28, 28)
    assert model(x).shape == (5, 10)
    assert torch.is_tensor(bottleneck_loss(model))
    loss = loss_fn(model, model(x), torch.zeros(5, dtype=torch.long))
    loss.backward()
    assert vb.encoder.weight.grad is not None and vb.encoder.weight.grad.abs().sum() > 0


def test_add_precode_mlp_is_the_reference_layout():
    model = add_precode(build_model("mlp", (3, 32, 32), 10))
    assert list(dict(model.named_children())) == ["flatten", "fc1", "relu1", "fc2", "relu2", "precode", "classifier"]


def test_add_precode_early_in_cnn_keeps_feature_map_shape():
    model = add_precode(build_model("cnn", (3, 32, 32), 10), before="block2")
    vb = model.precode
    assert vb.in_features == 32 * 16 * 16
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_add_precode_to_resnet18():
    model = torchvision.models.resnet18(num_classes=10)
    add_precode(model, before="fc", input_shape=(3, 32, 32))
    assert isinstance(model.fc.precode, VariationalBottleneck)
    assert model.fc.precode.in_features == 512
    model.train()
    out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10)
    loss_fn(model, out, torch.tensor([1, 2])).backward()


def test_unknown_layer_is_a_clear_error():
    model = build_model("mlp", (1, 28, 28), 10)
    with pytest.raises(ValueError, match=r"no such layer.*fc1"):
        add_precode(model, before="fc9")


def test_missing_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="input_shape"):
        add_precode(nn.Sequential(nn.Linear(4, 2)), before="0")


def test_bad_arguments():
    with pytest.raises(ValueError, match="eval_mode"):
        VariationalBottleneck(4, eval_mode="median")
    with pytest.raises(ValueError, match="size"):
        VariationalBottleneck(4, size=0)
    with pytest.raises(ValueError, match="features"):
        VariationalBottleneck(4, size=2)(torch.zeros(2, 5))


def test_sampling_std_reads_sigma_without_sampling_or_changing_the_model():
    from precode.attacks import layers_in_front
    from precode.bottleneck import sampling_std

    model = build_model("mlp", (1, 28, 28), 10, seed=0)
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert sampling_std(model, images) is None  # no bottleneck
    add_precode(model, seed=0)
    vb = model.precode
    with torch.no_grad():
        h = layers_in_front(model)(images)  # what enters the bottleneck
        expected = float(vb.encode(h)[1].mean())
    state = torch.random.get_rng_state()
    kl = vb.kl
    assert sampling_std(model, images) == pytest.approx(expected)
    assert torch.equal(torch.random.get_rng_state(), state) and vb.kl is kl  # nothing drawn, nothing stored
    with torch.no_grad():
        vb.encoder.bias[vb.size:] = -30.0  # what a malicious server sends: sigma near 0
        vb.encoder.weight[vb.size:] = 0.0
    assert sampling_std(model, images) < 1e-12
