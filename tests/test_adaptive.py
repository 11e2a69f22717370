"""Chapters 8 and 9: attacks that know PRECODE (ig-omit, ig-joint; ig-mean, ig-eot, a malicious server) and the
partial-gaussian defense."""
import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from precode import attacks
from precode.attacks import layers_before_sampling
from precode.bottleneck import add_precode
from precode.defenses import PartialGaussianNoise, gradients_before_sampling, parse_defense
from precode.federated import compute_victim_gradients
from precode.models import build_model


def tiny(precode: bool = True, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(OrderedDict(
        flatten=nn.Flatten(), fc1=nn.Linear(16, 12), act=nn.Sigmoid(), classifier=nn.Linear(12, 3),
    ))
    model.input_shape = (1, 4, 4)
    if precode:
        add_precode(model, before="classifier", size=4, seed=seed)
    return model


def shared_of(model, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 4, 4, generator=g)
    labels = torch.arange(n) % 3
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return images, labels, compute_victim_gradients(model, images, labels)


# -- ig-omit ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("before, expected", [
    ("classifier", ["block1.conv.weight", "block1.conv.bias", "block2.conv.weight", "block2.conv.bias",
                    "block3.conv.weight", "block3.conv.bias", "precode.encoder.weight", "precode.encoder.bias"]),
    ("block2", ["block1.conv.weight", "block1.conv.bias", "precode.encoder.weight", "precode.encoder.bias"]),
])
def test_ig_omit_matches_the_layers_before_the_sampling_and_the_encoder(before, expected):
    model = add_precode(build_model("cnn", (3, 32, 32), 10, seed=0), before=before, seed=0)
    assert layers_before_sampling(model) == expected


def test_ig_omit_runs_inverting_gradients_on_those_layers(monkeypatch):
    model = tiny()
    seen = {}

    def fake(*args, layers=None, **kwargs):
        seen["layers"] = layers
        return attacks.AttackResult(torch.zeros(1, 1, 4, 4), torch.zeros(1).long(), torch.zeros(0, 1), 0.0)

    monkeypatch.setattr(attacks.adaptive, "inverting_gradients", fake)
    _, _, shared = shared_of(model, n=1)
    result = attacks.reconstruct("ig-omit", model, shared, input_shape=(1, 4, 4), progress=False)
    assert seen["layers"] == ["fc1.weight", "fc1.bias", "precode.encoder.weight", "precode.encoder.bias"]
    assert result.attack == "ig-omit"


@pytest.mark.parametrize("name", ["ig-omit", "ig-joint", "ig-mean", "ig-eot"])
def test_adaptive_attacks_refuse_a_model_without_precode(name):
    model = tiny(precode=False)
    _, _, shared = shared_of(model, n=1)
    with pytest.raises(ValueError, match="no PRECODE bottleneck"):
        attacks.reconstruct(name, model, shared, input_shape=(1, 4, 4), iterations=1, progress=False)


def test_ig_omit_beats_plain_ig_on_precode():
    model = tiny()
    images, labels, shared = shared_of(model, n=2)
    kw = dict(input_shape=(1, 4, 4), labels=labels, iterations=200, restarts=1, progress=False, tv=0.0)
    plain = attacks.reconstruct("ig", model, shared, **kw)
    omit = attacks.reconstruct("ig-omit", model, shared, **kw)
    err = lambda r: float((r.reconstructions - images).square().mean())  # noqa: E731
    assert err(omit) < err(plain)


# -- ig-joint --------------------------------------------------------------------------------------

def test_ig_joint_optimises_the_noise_to_a_lower_gradient_distance_than_ig():
    model = tiny()
    _, labels, shared = shared_of(model, n=2)
    kw = dict(input_shape=(1, 4, 4), labels=labels, iterations=100, restarts=1, progress=False, tv=0.0)
    plain = attacks.reconstruct("ig", model, shared, **kw)
    joint = attacks.reconstruct("ig-joint", model, shared, **kw)
    assert joint.attack == "ig-joint"
    assert float(joint.restart_losses.mean()) < float(plain.restart_losses.mean())


def test_ig_joint_same_seed_same_result():
    model = tiny()
    _, labels, shared = shared_of(model, n=2)
    kw = dict(input_shape=(1, 4, 4), labels=labels, iterations=5, progress=False, seed=4)
    a = attacks.reconstruct("ig-joint", model, shared, **kw)
    b = attacks.reconstruct("ig-joint", model, shared, **kw)
    assert torch.equal(a.reconstructions, b.reconstructions)


# -- ig-mean, ig-eot, the malicious server ---------------------------------------------------------

def test_ig_mean_attacks_the_replica_with_z_equal_to_mu():
    # A client whose bottleneck used z = mu (eval_mode "mean") shares exactly what ig-mean's replica
    # computes, so ig-mean reaches a near-zero distance; plain ig's replica samples and cannot.
    model = tiny()
    model.precode.eval_mode = "mean"
    model.eval()
    _images, labels, shared = shared_of(model, n=2)
    model.train()
    kw = dict(input_shape=(1, 4, 4), labels=labels, iterations=300, restarts=1, progress=False, tv=0.0)
    mean = attacks.reconstruct("ig-mean", model, shared, **kw)
    plain = attacks.reconstruct("ig", model, shared, **kw)
    assert mean.attack == "ig-mean" and mean.evaluations == 300
    assert float(mean.restart_losses.max()) < 1e-3 < float(plain.restart_losses.min())


def test_ig_eot_averages_the_distance_over_fresh_noise_draws():
    model = tiny()
    _, labels, shared = shared_of(model, n=2)
    targets, _ = attacks.prepare_gradients(model, shared)
    matcher = attacks.GradientMatcher(model, targets, 1, (1, 4, 4))
    x = torch.rand(1, 2, 1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = labels.view(1, 2, 1)

    def spread(draws):
        eot = attacks.adaptive._ExpectedDistance(matcher, draws)
        torch.manual_seed(0)
        return torch.stack([eot.distances(x, y) for _ in range(20)]).std(0)

    assert bool((spread(16) < 0.5 * spread(1)).all())  # the mean of 16 draws varies about 4x less


def test_ig_eot_counts_its_evaluations_and_equals_ig_without_noise():
    model = tiny()
    attacks.switch_off_sampling(model)  # no randomness left: every draw gives the same distance
    _, labels, shared = shared_of(model, n=2)
    kw = dict(input_shape=(1, 4, 4), labels=labels, iterations=20, restarts=1, progress=False, seed=3)
    eot = attacks.reconstruct("ig-eot", model, shared, draws=3, **kw)
    plain = attacks.reconstruct("ig", model, shared, **kw)
    assert eot.attack == "ig-eot" and eot.evaluations == 60 and plain.evaluations == 20
    assert torch.allclose(eot.reconstructions, plain.reconstructions, atol=1e-5)
    with pytest.raises(ValueError, match="draws must be at least 1"):
        attacks.reconstruct("ig-eot", model, shared, draws=0, **kw)


def test_the_malicious_servers_weights_let_plain_ig_through_precode():
    model = tiny()
    std = attacks.switch_off_sampling(model)
    assert 0 < std < 1e-12
    assert torch.all(model.precode.encoder.weight[4:] == 0) and torch.all(model.precode.encoder.bias[4:] == -30)
    _images, labels, shared = shared_of(model, n=2)
    result = attacks.reconstruct("ig", model, shared, input_shape=(1, 4, 4), labels=labels, iterations=300,
                                 restarts=1, progress=False, tv=0.0)
    assert float(result.restart_losses.max()) < 1e-3
    with pytest.raises(ValueError, match="finite negative"):
        attacks.switch_off_sampling(model, sigma_bias=1.0)


def test_cli_malicious_server_needs_precode_and_is_recorded(capsys):
    from precode.cli import main

    base = ["attack", "--attack", "ig", "--model", "mlp", "--data", "fashion-mnist-sample", "--images", "2",
            "--iterations", "2"]
    assert main(base + ["--server", "malicious"]) == 2
    assert "add --precode" in capsys.readouterr().err
    assert main(base + ["--server", "evil", "--precode"]) == 2
    assert "unknown server 'evil'" in capsys.readouterr().err
    assert main(base + ["--server", "malicious", "--precode", "--json", "-"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["server"] == "malicious" and out["config"]["threat_model"]["server"] == "malicious"


# -- partial-gaussian ------------------------------------------------------------------------------

def test_partial_gaussian_perturbs_only_the_gradients_before_the_sampling():
    model = tiny()
    grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    out = PartialGaussianNoise(0.1, seed=0)(grads)
    noisy = {n for n, g in out.items() if g.abs().sum() > 0}
    assert noisy == {"fc1.weight", "fc1.bias", "precode.encoder.weight", "precode.encoder.bias"}
    assert all(torch.equal(grads[n], torch.zeros_like(grads[n])) for n in grads)  # input unchanged
    std = torch.cat([out[n].flatten() for n in noisy]).std()
    assert 0.08 < float(std) < 0.12


def test_partial_gaussian_spec_and_seed():
    d = parse_defense("partial-gaussian:0.01", seed=3)
    assert isinstance(d, PartialGaussianNoise) and d.std == 0.01 and d.spec == "partial-gaussian:0.01"
    grads = {n: torch.zeros_like(p) for n, p in tiny().named_parameters()}
    a = parse_defense("partial-gaussian:0.01", seed=3)(grads)
    b = parse_defense("partial-gaussian:0.01", seed=3)(grads)
    assert all(torch.equal(a[n], b[n]) for n in grads)


@pytest.mark.parametrize("spec", ["partial-gaussian", "partial-gaussian:", "partial-gaussian:-1",
                                  "partial-gaussian:x", "partial-gaussian:nan"])
def test_partial_gaussian_bad_specs(spec):
    with pytest.raises(ValueError, match="invalid defense"):
        parse_defense(spec)


def test_partial_gaussian_needs_a_precode_model():
    grads = {n: torch.zeros_like(p) for n, p in tiny(precode=False).named_parameters()}
    with pytest.raises(ValueError, match="no PRECODE bottleneck"):
        PartialGaussianNoise(0.1)(grads)
    assert gradients_before_sampling(["a.w", "precode.encoder.w", "precode.decoder.w", "c.w"]) == [
        "a.w", "precode.encoder.w"]


# -- command line ----------------------------------------------------------------------------------

def test_cli_ig_omit_with_partial_gaussian_json(capsys):
    from precode.cli import main

    args = ["attack", "--attack", "ig-omit", "--model", "mlp", "--precode", "--data", "fashion-mnist-sample",
            "--images", "2", "--iterations", "2", "--defense", "partial-gaussian:0.001", "--json", "-"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["attack"] == "ig-omit" and len(out["results"]) == 2


def test_cli_ig_joint_refuses_a_plain_model(capsys):
    from precode.cli import main

    code = main(["attack", "--attack", "ig-joint", "--model", "mlp", "--data", "fashion-mnist-sample",
                 "--images", "1", "--iterations", "1"])
    assert code != 0
    assert "no PRECODE bottleneck" in capsys.readouterr().err


# -- the encoder leak ------------------------------------------------------------------------------

def test_encoder_leak_reads_the_bottlenecks_input_exactly_and_inverts_the_front():
    model = tiny()
    images, _labels, shared = shared_of(model, n=3)
    result = attacks.reconstruct("encoder-leak", model, shared, (1, 4, 4), iterations=300, lr=0.05, seed=1,
                                 progress=False)
    recon, features = result.reconstructions, result.features
    assert result.attack == "encoder-leak" and result.evaluations == 300
    assert result.loss_history.shape == (300, 3) and result.restart_losses.shape == (1, 3)
    assert torch.all(result.loss_history[-1] < result.loss_history[0])
    front = nn.Sequential(model.flatten, model.fc1, model.act)
    assert list(attacks.layers_in_front(model)) == list(front)  # the same modules
    with torch.no_grad():
        truth = front(images)
    # the division is exact whatever the bottleneck's noise did to the error signal
    assert torch.allclose(features, truth, rtol=1e-4, atol=1e-6)
    assert recon.shape == images.shape and 0 <= recon.min() and recon.max() <= 1
    with torch.no_grad():
        start = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
        before = (front(start) - truth).square().sum(1) / truth.square().sum(1)
        after = (front(recon) - truth).square().sum(1) / truth.square().sum(1)
    assert torch.all(after < 0.1 * before)  # the inversion made progress on every victim


def test_encoder_leak_needs_a_bottleneck_and_its_gradients():
    plain = tiny(precode=False)
    with pytest.raises(ValueError, match="no PRECODE bottleneck"):
        attacks.encoder_leak(plain, shared_of(plain)[2], (1, 4, 4))
    model = tiny()
    _images, _labels, shared = shared_of(model)
    del shared["precode.encoder.bias"]
    with pytest.raises(ValueError, match=r"precode\.encoder\.bias"):
        attacks.encoder_leak(model, shared, (1, 4, 4))
    with pytest.raises(ValueError, match="batch size 1"):
        attacks.reconstruct("encoder-leak", model, shared_of(model)[2], (1, 4, 4), batch_size=2)


def test_the_encoder_leak_is_an_experiment_like_every_attack():
    # run_attack: the clients' gradients, the attacker's stream, matched and scored images
    from precode.data import ImageData
    from precode.experiment import run_attack
    from precode.threat import ThreatModel

    model = tiny()
    images, labels, shared = shared_of(model, n=3)
    victims = ImageData(images, labels, ["a", "b", "c"], "tiny", "random")
    threat = ThreatModel(labels="inferred", seed=4)
    run = run_attack("encoder-leak", model, victims, threat, iterations=50)
    direct = attacks.encoder_leak(model, shared, (1, 4, 4), iterations=50, seed=threat.streams.attacker,
                                  progress=False)
    assert torch.allclose(run.result.features, direct.features, rtol=1e-4, atol=1e-6)
    assert torch.allclose(run.images, direct.reconstructions, atol=1e-5)
    assert run.label_accuracy == 1.0 and run.mse.shape == (3,)
