import pytest
import torch

from precode.bottleneck import add_precode
from precode.federated import (
    Client,
    compute_shared_gradients,
    compute_victim_gradients,
    fedavg_round,
    fedsgd_round,
    split_among_clients,
    validate_gradients,
)
from precode.models import build_model
from precode.training import evaluate, loss_fn, train, training_loop


def test_train_history_and_learning(sample):
    data = sample.subset(300, seed=0)
    model = build_model("mlp", data.input_shape, data.num_classes, seed=0, width=64)
    _, before = evaluate(model, data)
    history = train(model, data, data, epochs=3, seed=0, progress=False)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert set(history[0]) >= {"train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds"}
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > before + 0.2


def test_train_is_reproducible(sample):
    data = sample.subset(128, seed=0)
    runs = []
    for _ in range(2):
        model = add_precode(build_model("mlp", data.input_shape, 10, seed=0, width=32), size=8, seed=0)
        runs.append(train(model, data, epochs=1, seed=5, progress=False)[0]["train_loss"])
    assert runs[0] == runs[1]


def _weights(model):
    return torch.cat([p.detach().double().flatten() for p in model.parameters()])


def test_train_keeps_its_numbers_and_leaves_the_callers_random_state(sample):
    # The numbers were recorded before train() stopped leaving the global RNG reseeded (at 58ba614):
    # PRECODE's noise comes from the global RNG, and drawing it from another state moves the
    # weights' sum by about 0.7, so equal numbers mean the same draws.
    data = sample.subset(128, seed=0)
    for caller_seed in (123, 7):
        model = add_precode(build_model("mlp", data.input_shape, 10, seed=0, width=32), size=8, seed=0)
        torch.manual_seed(caller_seed)
        state = torch.get_rng_state()
        history = train(model, data, epochs=1, seed=5, progress=False)
        assert torch.equal(torch.get_rng_state(), state), "train() changed the caller's global RNG"
        weights = _weights(model)
        assert float(weights.sum()) == pytest.approx(6.636309235656881, rel=1e-5)
        assert float(weights.square().sum()) == pytest.approx(43.019007246620106, rel=1e-5)
        assert history[0]["train_loss"] == pytest.approx(2.375059962272644, rel=1e-5)


@pytest.mark.parametrize("spec", ["none", "gaussian:0.01", "prune:0.9"])
def test_channels_last_training_gives_the_same_model(sample, monkeypatch, spec):
    # CNNs train with NHWC tensors on the CPU (faster convolutions); the model is the same as with
    # the ordinary layout, up to rounding, under a gradient defense too, and comes back contiguous
    from precode import training
    from precode.defenses import parse_defense

    data = sample.subset(96, seed=0)
    weights = []
    for channels_last in (True, False):
        monkeypatch.setattr(training, "_uses_channels_last", lambda model, flag=channels_last: flag)
        model = build_model("cnn", data.input_shape, 10, seed=0, widths=(4, 8))
        transform = None if spec == "none" else parse_defense(spec, seed=0)
        history = train(model, data, data, epochs=1, batch_size=32, seed=1, gradient_transform=transform,
                        progress=False)
        assert all(p.is_contiguous() for p in model.parameters())
        weights.append((_weights(model), history[-1]["train_loss"]))
    # Adam divides by the root of tiny second moments, so a rounding difference can reach 1e-5
    torch.testing.assert_close(weights[0][0], weights[1][0], rtol=1e-3, atol=1e-4)
    assert weights[0][1] == pytest.approx(weights[1][1], rel=1e-5)
    assert training._uses_channels_last(build_model("cnn", data.input_shape, 10)) is False  # still patched
    monkeypatch.undo()
    assert training._uses_channels_last(build_model("cnn", data.input_shape, 10))
    assert not training._uses_channels_last(build_model("mlp", data.input_shape, 10))


def test_the_training_loop_skips_empty_batches_and_adds_the_callers_entries(sample):
    # DP-SGD's Poisson sampling can draw an empty batch: it is counted (on_empty_batch), not trained on.
    model = build_model("mlp", sample.input_shape, 10, seed=0, width=16)
    x, y = sample.images[:8], sample.labels[:8]
    batches = [(x[:4], y[:4]), (x[:0], y[:0]), (x[4:], y[4:])]
    empty, steps = [], []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    history = training_loop(model, batches, optimizer, lambda logits, labels: loss_fn(model, logits, labels), 2,
                            test=lambda: (0.5, 0.25), on_empty_batch=lambda: empty.append(1),
                            gradient_transform=lambda g: steps.append(1) or g, epoch_extra=lambda: {"epsilon": 1.0})
    assert len(empty) == 2 and len(steps) == 4  # two epochs: one empty and two real batches each
    assert [h["epoch"] for h in history] == [1, 2] and history[1]["train_loss"] < history[0]["train_loss"]
    assert history[0]["test_accuracy"] == 0.25 and history[0]["epsilon"] == 1.0 and list(history[0])[-1] == "epsilon"
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        training_loop(model, batches, optimizer, lambda logits, labels: logits.sum() * float("nan"), 1)


def test_train_bad_arguments(sample):
    model = build_model("mlp", sample.input_shape, 10, width=8)
    with pytest.raises(ValueError, match="epochs"):
        train(model, sample, epochs=0)


def test_shared_gradient_is_the_loss_gradient_including_kl():
    torch.manual_seed(0)
    model = add_precode(build_model("mlp", (1, 8, 8), 10, width=16), size=4, beta=1.0)
    x, y = torch.rand(3, 1, 8, 8), torch.tensor([1, 2, 3])
    torch.manual_seed(1)
    shared = compute_shared_gradients(model, x, y)
    torch.manual_seed(1)
    loss_fn(model, model(x), y).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(shared[name], p.grad), name
    assert list(shared) == [n for n, _ in model.named_parameters()]


def test_victim_gradients_stack_in_order():
    model = build_model("lenet", (1, 8, 8), 10, seed=0)
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    stacked = compute_victim_gradients(model, x, y, batch_size=2)
    second = compute_shared_gradients(model, x[2:], y[2:])
    assert stacked["classifier.weight"].shape == (2, 10, 12 * 2 * 2)
    assert torch.allclose(stacked["conv1.weight"][1], second["conv1.weight"])
    assert validate_gradients(model, stacked, stacked=True) == 2
    with pytest.raises(ValueError, match="multiple"):
        compute_victim_gradients(model, x[:3], y[:3], batch_size=2)


def test_validate_gradients_errors():
    model = build_model("mlp", (1, 8, 8), 10, width=4)
    good = compute_shared_gradients(model, torch.rand(1, 1, 8, 8), torch.tensor([0]))
    assert validate_gradients(model, good) == 1
    with pytest.raises(ValueError, match="missing"):
        validate_gradients(model, {k: v for k, v in good.items() if k != "fc1.bias"})
    with pytest.raises(ValueError, match="shape"):
        validate_gradients(model, {**good, "fc1.bias": torch.zeros(5)})
    with pytest.raises(ValueError, match="NaN"):
        validate_gradients(model, {**good, "fc1.bias": torch.full((4,), float("nan"))})


def test_fedsgd_and_fedavg_learn(sample):
    data = sample.subset(400, seed=0)
    clients = split_among_clients(data, 4, batch_size=32)
    assert sum(len(c) for c in clients) == 400
    model = build_model("mlp", data.input_shape, 10, seed=0, width=32)
    loss0, _ = evaluate(model, data)
    for _ in range(15):
        fedsgd_round(model, clients, lr=0.5)
    loss1, _ = evaluate(model, data)
    assert loss1 < loss0
    fedavg_round(model, clients, local_epochs=1, lr=1e-2)
    loss2, acc2 = evaluate(model, data)
    assert loss2 < loss1 and acc2 > 0.35


def test_client_errors():
    with pytest.raises(ValueError, match="at least one image"):
        Client(torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one client"):
        fedsgd_round(build_model("mlp", (1, 4, 4), 2), [])
