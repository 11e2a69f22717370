import pytest
import torch

from precode.models import MODEL_NAMES, build_model


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_shapes(name, shape):
    model = build_model(name, shape, 10)
    assert model(torch.rand(3, *shape)).shape == (3, 10)
    assert model.input_shape == shape


def test_reference_mlp_sizes():
    model = build_model("mlp", (3, 32, 32), 10)
    assert model.fc1.in_features == 3072 and model.fc1.out_features == 1024
    assert model.fc2.out_features == 1024 and model.classifier.in_features == 1024
    assert model.fc1.bias is not None


def test_lenet_is_dlgs():
    model = build_model("lenet", (3, 32, 32), 10, seed=1)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.stride[0], c.padding[0], c.kernel_size[0]) for c in convs] == [(2, 2, 5), (2, 2, 5), (1, 2, 5)]
    assert isinstance(model.act1, torch.nn.Sigmoid)
    for p in model.parameters():
        assert p.min() >= -0.5 and p.max() <= 0.5
    assert model.classifier.in_features == 12 * 8 * 8


def test_seed_gives_same_weights():
    a = build_model("cnn", (1, 28, 28), 10, seed=3)
    b = build_model("cnn", (1, 28, 28), 10, seed=3)
    c = build_model("cnn", (1, 28, 28), 10, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_cnn_widths_configurable():
    model = build_model("cnn", (3, 32, 32), 100, widths=(8, 16))
    assert model.classifier.in_features == 16 * 8 * 8 and model.classifier.out_features == 100


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("vgg", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="input_shape"):
        build_model("mlp", (28, 28), 10)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("mlp", (1, 28, 28), 1)
    with pytest.raises(ValueError, match="too small"):
        build_model("cnn", (1, 4, 4), 10, widths=(4, 4, 4))
