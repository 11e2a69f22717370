"""precode.evaluation.verdicts: when a stop counts for the defense, and the paper's claims from a run's rows;
and the attacks' own record of what they spent and where the truth lies under their objective."""
import pytest
import torch

from precode import build_model, compute_victim_gradients, load_data
from precode.attacks import reconstruct
from precode.bottleneck import add_precode
from precode.evaluation import verdicts


def cell(defense="precode", attack="ig", model="mlp", success=0.0, n=32, labels="given", evaluations=200,
         budget=200, below=0.8, accuracy=0.8, weights="initial"):
    return {"model": model, "data": "d", "defense": defense, "attack": attack, "weights": weights, "labels": labels,
            "n": n, "attack_success_rate": success, "success_ci95_low": 0.0, "success_ci95_high": 0.1,
            "evaluations": evaluations, "budget": budget, "below_truth": below, "distance_mean": 0.9,
            "truth_distance_mean": 0.95, "test_accuracy": accuracy, "test_accuracy_ci95": 0.008}


@pytest.mark.parametrize("changes, credited, reason", [
    ({}, True, "labels given, the whole budget spent"),
    ({"success": 1 / 32}, False, "succeeds on 1 of 32"),
    ({"labels": "inferred"}, False, "inferred the labels"),
    ({"n": 8}, False, "fewer than the 32"),
    ({"evaluations": 52}, False, "spent 52 of its 200"),
    ({"below": 0.2}, False, "its optimiser, not the defense, may have failed"),
    ({"attack": "analytic", "evaluations": 0, "budget": 0, "below": None}, True, "exact division fails"),
])
def test_a_stop_counts_for_the_defense_only_when_the_attacker_did_not_fail(changes, credited, reason):
    ok, why = verdicts.credit(cell(**changes))
    assert ok is credited and reason in why
    brief_ok, brief = verdicts.credit(cell(**changes), brief=True)  # a table's few words, the same verdict
    assert brief_ok is credited and len(brief) <= min(len(why), 60)


def history(model, defense, accuracies):
    return [{"model": model, "defense": defense, "epoch": e + 1, "test_accuracy": a} for e, a in enumerate(accuracies)]


def test_the_papers_claims_from_a_runs_rows():
    summary = [cell("none", success=1.0, accuracy=0.80), cell("precode", accuracy=0.78),
               cell("precode", "idlg", accuracy=0.78), cell("gaussian:0.01", success=1.0, accuracy=0.80),
               cell("gaussian:0.1", accuracy=0.74), cell("prune:0.99", success=0.4, accuracy=None),
               cell("dp:clip=1.0,noise=1.0", accuracy=0.31)]
    converged = history("mlp", "none", [0.795, 0.80]) + history("mlp", "precode", [0.77, 0.78])
    claims = verdicts.claims(summary, converged)
    assert claims[1]["verdict"] == verdicts.SUPPORTED
    assert claims[2]["verdict"] == verdicts.NOT_SUPPORTED and claims[2]["costs"]["mlp"] == pytest.approx(2.0)
    assert claims[3]["verdict"] == verdicts.SUPPORTED
    assert claims[3]["costs"]["mlp", "gaussian"] == pytest.approx(6.0)
    assert claims[3]["costs"]["mlp", "prune"] is None  # no level stops the attack
    # a training still learning: the cost comparisons are not tested at this scale
    learning = history("mlp", "none", [0.76, 0.80])
    assert verdicts.claims(summary, learning)[2]["verdict"] == verdicts.NOT_TESTED
    assert verdicts.claims(summary, learning)[3]["verdict"] == verdicts.NOT_TESTED
    # a stop that costs no more than the test set's interval contradicts claim 3
    cheap = [*summary[:-1], cell("dp:clip=1.0,noise=1.0", accuracy=0.797)]
    assert verdicts.claims(cheap, converged)[3]["verdict"] == verdicts.NOT_SUPPORTED
    # PRECODE reconstructing one victim contradicts claim 1; one uncredited stop leaves it untested
    assert verdicts.claims([*summary, cell("precode", "dlg", success=1 / 32)], converged)[1]["verdict"] == \
        verdicts.NOT_SUPPORTED
    assert verdicts.claims([*summary, cell("precode", "dlg", evaluations=10)], converged)[1]["verdict"] == \
        verdicts.NOT_TESTED
    table = verdicts.credit_table(summary, html=False)
    assert ("| mlp | PRECODE | ig | given | 0 of 32 | 200 (200) | 80% (0.9 / 0.95) "
            "| yes: the objective no longer singles out the victim |") in table
    assert "gaussian 0.01" not in table  # it does not stop the attack


def test_attacks_report_their_distance_at_the_truth_and_spend_their_budget():
    data = load_data("fashion-mnist-sample", "test").first(3)
    model = build_model("mlp", data.input_shape, data.num_classes, seed=0)
    shared = compute_victim_gradients(model, data.images, data.labels)
    ig = reconstruct("ig", model, shared, data.input_shape, labels=data.labels, iterations=5, probe=data.images,
                     progress=False)
    assert ig.truth_distance.abs().max() < 1e-5  # the true image's gradient is the shared one
    assert torch.equal(ig.victim_evaluations(), torch.full((3,), 5)) and ig.distance.shape == (3,)
    assert reconstruct("ig", model, shared, data.input_shape, iterations=2, progress=False).truth_distance is None
    # iDLG on PRECODE: its objective changes with every draw of the noise, so line searches fail at once;
    # stalled victims start again from fresh points until each has spent the whole budget of 25 an iteration
    add_precode(model, seed=0)
    shared = compute_victim_gradients(model, data.images, data.labels)
    idlg = reconstruct("idlg", model, shared, data.input_shape, labels=data.labels, iterations=2, probe=data.images,
                       progress=False)
    assert idlg.victim_evaluations().min() >= 50 and idlg.victim_evaluations().max() <= 51
    assert idlg.truth_distance.min() > 0
    stops = reconstruct("idlg", model, shared, data.input_shape, labels=data.labels, iterations=2, progress=False,
                        restart_stalled=False)
    assert stops.victim_evaluations().max() < 50  # torch's L-BFGS gives up: what iDLG used to report
    analytic = reconstruct("analytic", model, shared, data.input_shape, probe=data.images, progress=False)
    assert analytic.truth_distance is None and analytic.distance is None
