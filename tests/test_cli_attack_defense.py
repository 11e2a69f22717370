"""`python -m precode attack --defense SPEC` and `--precode-at LAYER`."""
import json

import pytest
import torch

from precode.defenses import parse_defense
from precode.federated import compute_shared_gradients, compute_victim_gradients
from precode.models import build_model


@pytest.fixture
def run(cli):
    """``python -m precode attack ARGS`` in this process (the ``cli`` fixture)."""
    return lambda *args: cli("attack", *args)


def test_defense_changes_what_the_server_sees_and_is_recorded(run):
    common = ["--attack", "analytic", "--model", "mlp", "--data", "fashion-mnist-sample", "--images", "2",
              "--json", "-"]
    plain = json.loads(run(*common).stdout)
    noisy = run(*common, "--defense", "gaussian:0.1")
    assert noisy.returncode == 0, noisy.stderr
    noisy = json.loads(noisy.stdout)
    assert noisy["config"]["defense"] == "gaussian:0.1" and plain["config"]["defense"] == "none"
    threat = noisy["config"]["threat_model"]  # what the server knows, recorded with the results
    assert (threat["server"], threat["labels"], threat["batch_size"], threat["defense"]) == (
        "honest", "inferred", 1, "gaussian:0.1")
    assert (threat["client_seed"], threat["attacker_seed"]) == (noisy["config"]["client_seed"],
                                                               noisy["config"]["attacker_seed"])
    assert min(r["psnr"] for r in plain["results"]) >= 60
    assert max(r["psnr"] for r in noisy["results"]) < 40, "noise of 0.1 must spoil the exact analytic recovery"


def test_invalid_defense_is_one_line(run):
    out = run("--attack", "ig", "--model", "mlp", "--data", "photos", "--images", "1", "--defense", "prune:1.5")
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and "prune" in out.stderr and "Traceback" not in out.stderr


def test_precode_at_places_the_bottleneck_and_bad_layers_fail_clearly(run):
    ok = run("--attack", "ig", "--model", "cnn", "--data", "photos", "--images", "1", "--iterations", "2",
             "--precode-at", "block2", "--json", "-")
    assert ok.returncode == 0, ok.stderr
    config = json.loads(ok.stdout)["config"]
    assert config["precode"] is True and config["precode_at"] == "block2"
    assert config["threat_model"]["defense"] == "precode@block2"
    assert "threat model: honest-but-curious server" in ok.stderr  # the table goes to stderr with --json -
    bad = run("--attack", "ig", "--model", "cnn", "--data", "photos", "--images", "1", "--precode-at", "block9")
    assert bad.returncode != 0 and "block9" in bad.stderr and "Traceback" not in bad.stderr


def test_victim_gradients_use_a_defenses_own_batch_gradient():
    model = build_model("mlp", (1, 8, 8), 10, seed=0, width=16)
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    dp = parse_defense("dp:clip=0.01,noise=0")
    stacked = compute_victim_gradients(model, x, y, batch_size=2, defense=dp)
    expected = dp.shared_gradients(model, x[2:], y[2:])
    assert torch.allclose(stacked["fc1.weight"][1], expected["fc1.weight"])
    # Per-sample clipping differs from clipping the batch gradient as if it were one sample.
    as_one = dp(compute_shared_gradients(model, x[2:], y[2:]))
    assert not torch.allclose(stacked["fc1.weight"][1], as_one["fc1.weight"])
