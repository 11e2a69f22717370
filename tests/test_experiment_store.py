"""precode.experiment_store: an experiment run again with the same configuration is read, any change recomputes."""
import numpy as np
import pytest
import torch

from precode import add_precode, build_model, experiment, load_data
from precode.experiment import run_attack, run_attack_cases
from precode.experiment_store import active_store, model_fingerprint, use_store
from precode.threat import ThreatModel


@pytest.fixture(scope="module")
def victims():
    return load_data("fashion-mnist-sample", "test").first(2)


@pytest.fixture
def store(tmp_path):
    previous = active_store()
    yield use_store(tmp_path / "experiments")
    use_store(None if previous is None else previous.folder)


@pytest.fixture
def computed(monkeypatch):
    """Counts the experiments that were computed (not read from the store)."""
    calls = []
    real = experiment._run_cases

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(experiment, "_run_cases", counting)
    return calls


def _mlp(victims, seed=0):
    return build_model("mlp", victims.input_shape, victims.num_classes, seed=seed, width=32)


def test_a_repeated_experiment_is_read_with_every_number(victims, store, computed):
    threat = ThreatModel(labels="given", seed=0)
    first = run_attack("ig", _mlp(victims), victims, threat, defense="gaussian:0.01", iterations=5)
    again = run_attack("ig", _mlp(victims), victims, threat, defense="gaussian:0.01", iterations=5)
    assert computed == ["ig"] and len(store) == 1
    for field in ("mse", "psnr", "ssim", "gradient_cosine"):
        assert np.array_equal(getattr(first, field), getattr(again, field)), field
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert torch.equal(first.result.loss_history, again.result.loss_history)
    assert again.result.evaluations == first.result.evaluations == 5 and again.result.attack == "ig"
    assert again.label_accuracy == first.label_accuracy and again.threat is threat


def test_any_change_of_the_configuration_recomputes(victims, store, computed):
    base = dict(attack="ig", victims=victims, threat=ThreatModel(labels="given"), defense="none", iterations=3)

    def run(model=None, **changes):
        options = {**base, **changes}
        return run_attack(options.pop("attack"), model if model is not None else _mlp(victims),
                          options.pop("victims"), options.pop("threat"), **options)

    run()
    run()
    assert len(computed) == 1
    moved = _mlp(victims)
    with torch.no_grad():
        moved.fc1.weight[0, 0] += 1e-6  # one weight
    changes = [dict(model=moved), dict(iterations=4), dict(defense="gaussian:0.01"), dict(attack="dlg"),
               dict(threat=ThreatModel(labels="given", seed=1)), dict(threat=ThreatModel(labels="inferred")),
               dict(threat=ThreatModel(labels="given", batch_size=2)), dict(victims=victims.first(1)), dict(lr=0.2)]
    for change in changes:
        run(**change)
    assert len(computed) == 1 + len(changes) and len(store) == len(computed)
    trained_mode = _mlp(victims).eval()  # a module setting, not a weight
    assert model_fingerprint(trained_mode) != model_fingerprint(_mlp(victims))


def test_batched_cases_are_one_entry_and_a_defense_object_is_never_stored(victims, store, computed):
    from precode.defenses import parse_defense

    threat = ThreatModel(labels="given")
    runs = run_attack_cases("ig", _mlp(victims), victims, threat, ["none", "prune:0.5"], iterations=3)
    again = run_attack_cases("ig", _mlp(victims), victims, threat, ["none", "prune:0.5"], iterations=3)
    assert len(computed) == 1 and [np.array_equal(a.psnr, b.psnr) for a, b in zip(runs, again)] == [True, True]
    run_attack("ig", _mlp(victims), victims, threat, defense=parse_defense("prune:0.5"), iterations=3)
    run_attack("ig", _mlp(victims), victims, threat, defense=parse_defense("prune:0.5"), iterations=3)
    assert len(computed) == 3 and len(store) == 1


def test_a_malicious_server_changes_its_model_when_read_too(victims, store, computed):
    threat = ThreatModel(server="malicious", labels="given")
    models = [add_precode(_mlp(victims), seed=0) for _ in range(2)]
    runs = [run_attack("ig", m, victims, threat, iterations=3) for m in models]
    assert len(computed) == 1
    assert torch.equal(models[0].precode.encoder.bias, models[1].precode.encoder.bias)  # both switched off
    assert not torch.equal(models[1].precode.encoder.bias, add_precode(_mlp(victims), seed=0).precode.encoder.bias)
    assert runs[1].threat is threat and np.array_equal(runs[0].psnr, runs[1].psnr)


def test_no_store_unless_one_is_turned_on(victims, tmp_path, computed):
    assert active_store() is None  # the tests and the command line compute every experiment
    for _ in range(2):
        run_attack("ig", _mlp(victims), victims, ThreatModel(labels="given"), iterations=2)
    assert len(computed) == 2 and not any(tmp_path.iterdir())


def test_a_default_budget_is_the_same_entry_as_the_budget_it_stands_for(victims, store, computed):
    from precode.attacks import resolved_budget
    from precode.profiles import get_profile

    threat = ThreatModel(labels="given")
    run_attack("analytic", _mlp(victims), victims, threat)
    run_attack("analytic", _mlp(victims), victims, threat, iterations=7)  # the analytic attack has no loop
    assert len(computed) == 1
    profile = get_profile()
    assert resolved_budget("ig") == (profile.ig_iterations, profile.ig_restarts)
    assert resolved_budget("idlg", restarts=2) == (profile.dlg_iterations, 2)
    assert resolved_budget("analytic", 5, 5) == (None, None)
