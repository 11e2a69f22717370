"""precode.experiment.run_attack (and run_attack_cases): one experiment under a threat model, scored per victim."""
import numpy as np
import pytest
import torch

from precode import add_precode, build_model, load_data
from precode.experiment import run_attack, run_attack_cases
from precode.threat import ThreatModel


@pytest.fixture(scope="module")
def victims():
    return load_data("fashion-mnist", "test").first(4)


def test_analytic_batches_are_matched_back_to_their_victims(victims):
    model = build_model("mlp", victims.input_shape, victims.num_classes, seed=0)
    run = run_attack("analytic", model, victims, ThreatModel(labels="given", batch_size=2))
    # exact reconstructions, in the victims' order (the attack returns each batch in its own order)
    assert np.all(run.psnr >= 60) and np.allclose(run.ssim, 1.0, atol=1e-4)
    assert torch.allclose(run.images, victims.images, atol=1e-4)
    assert run.label_accuracy == 1.0 and run.success(0.5).all()
    assert "labels 1.00" in run.line("analytic")


def test_the_defense_uses_the_clients_stream_and_labels_follow_the_threat_model(victims):
    model = build_model("mlp", victims.input_shape, victims.num_classes, seed=0)
    noisy = [run_attack("analytic", model, victims, ThreatModel(seed=s), defense="gaussian:0.01").psnr
             for s in (0, 0, 1)]
    assert np.array_equal(noisy[0], noisy[1]) and not np.array_equal(noisy[0], noisy[2])
    assert noisy[0].max() < 60  # the noise reached what the server received
    given = run_attack("ig", model, victims, ThreatModel(labels="given"), iterations=2)
    assert torch.equal(given.result.labels.cpu(), victims.labels)


def test_a_malicious_server_switches_precode_off_and_bad_input_is_named(victims):
    model = add_precode(build_model("mlp", victims.input_shape, victims.num_classes, seed=0), seed=0)
    run = run_attack("ig", model, victims, ThreatModel(server="malicious", labels="given"), iterations=150)
    assert run.ssim.mean() > 0.5 and run.threat.server == "malicious"
    with pytest.raises(ValueError, match="multiple of 3"):
        run_attack("ig", model, victims, ThreatModel(batch_size=3))
    with pytest.raises(ValueError, match="unknown attack"):
        run_attack("nope", model, victims, ThreatModel())
    tiny = load_data("fashion-mnist", "test").first(2)
    tiny.images = tiny.images[:, :, :5, :5]
    small = build_model("mlp", (1, 5, 5), tiny.num_classes, seed=0)
    run = run_attack("analytic", small, tiny, ThreatModel(labels="given"))
    assert run.ssim is None
    with pytest.raises(ValueError, match="PSNR"):
        run.success(0.5)


def test_two_draws_agree_without_precode_and_differ_with_it(victims):
    from precode.experiment import draw_agreement

    plain = build_model("mlp", victims.input_shape, victims.num_classes, seed=0)
    layers, overall = draw_agreement(plain, victims)
    assert overall.shape == (4,) and np.allclose(overall, 1.0, atol=1e-5)
    assert set(layers) == {n for n, p in plain.named_parameters()}
    torch.manual_seed(0)
    pc = add_precode(build_model("mlp", victims.input_shape, victims.num_classes, seed=0), seed=0)
    layers, overall = draw_agreement(pc, victims)
    assert overall.max() < 0.99 and layers["precode.decoder.weight"].mean() < 0.99


def test_cases_attacked_together_equal_each_case_alone(victims):
    # Inverting Gradients treats every victim of every case as its own problem: batching the cases
    # shares the optimiser's loop only (on a deterministic model; a PRECODE replica draws its noise
    # for all problems at once). A defense's cosine is that of the shared gradient with the
    # undefended one (1 without a defense, lower under noise, and the same for the same seed).
    model = build_model("mlp", victims.input_shape, victims.num_classes, seed=0, width=64)
    threat = ThreatModel(labels="given", seed=2)
    defenses = [None, "gaussian:0.01", "prune:0.9"]
    together = run_attack_cases("ig", model, victims, threat, defenses, iterations=20)
    for defense, run in zip(defenses, together):
        alone = run_attack("ig", model, victims, threat, defense=defense, iterations=20)
        assert torch.allclose(run.images, alone.images, atol=1e-4), defense
        assert np.allclose(run.ssim, alone.ssim, atol=1e-4)
        assert np.array_equal(run.gradient_cosine, alone.gradient_cosine)
        assert run.result.loss_history.shape == (20, len(victims)) and run.result.restart_losses.shape == (1, 4)
    cosines = [run.gradient_cosine for run in together]
    assert np.all(cosines[0] == 1) and np.all(cosines[1] < 0.99) and np.all(cosines[2] < 1)
    with pytest.raises(ValueError, match="at least one defense"):
        run_attack_cases("ig", model, victims, threat, [])


def test_label_recovery_is_exact_for_single_images_and_bounded_by_repeats(victims):
    from precode.experiment import label_recovery

    model = build_model("lenet", victims.input_shape, victims.num_classes, seed=0)
    recovered, ceiling = label_recovery(model, victims, [1, 2, 4])
    assert recovered[0] == 1.0 and ceiling[0] == 1.0
    assert all(0 <= r <= c <= 1 for r, c in zip(recovered, ceiling))
