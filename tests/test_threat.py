"""The threat model: validated fields, separate streams, the sentence every experiment prints."""
import json

import pytest
import torch

from precode.seeds import streams
from precode.threat import ThreatModel


def test_defaults_are_the_commands_threat_model():
    tm = ThreatModel()
    assert (tm.server, tm.labels, tm.label_rule, tm.batch_size, tm.defense, tm.seed) == (
        "honest", "inferred", "auto", 1, "none", 0)
    text = str(tm)
    assert "honest-but-curious" in text and "labels inferred from the gradient (rule: auto)" in text
    assert "client batches of 1 image;" in text and "; no defense;" in text


def test_the_sentence_names_every_field():
    text = str(ThreatModel(labels="given", batch_size=4, defense="gaussian:0.01", seed=7))
    assert "labels given to the attacker" in text and "rule" not in text
    assert "client batches of 4 images" in text and "client defense gaussian:0.01 (known to the server" in text
    assert "seed 7" in text


def test_streams_are_derived_separately_from_the_seed():
    tm = ThreatModel(seed=3)
    assert tm.streams == streams(3) and tm.streams.client != tm.streams.attacker
    data = tm.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert (data["client_seed"], data["attacker_seed"]) == (streams(3).client, streams(3).attacker)


@pytest.mark.parametrize("fields, message", [
    ({"server": "curious"}, "unknown server 'curious'"),
    ({"labels": "known"}, "unknown labels 'known'"),
    ({"label_rule": "magic"}, "unknown label rule 'magic'"),
    ({"batch_size": 0}, "batch size must be at least 1"),
    ({"seed": -1}, "non-negative"),
])
def test_bad_fields_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        ThreatModel(**fields)


def test_a_malicious_server_switches_precode_sampling_off_in_the_weights_it_sends():
    from precode.attacks import layers_in_front
    from precode.bottleneck import add_precode
    from precode.models import build_model

    honest, malicious = ThreatModel(), ThreatModel(server="malicious")
    assert "malicious server" in str(malicious) and "honest-but-curious" in str(honest)
    model = add_precode(build_model("mlp", (1, 28, 28), 10, seed=0), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert honest.weights_sent(model) is model
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    malicious.weights_sent(model)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        _mu, std = model.precode.encode(layers_in_front(model)(x))
    assert float(std.max()) < 1e-12  # the noise scale the clients now sample with
    with pytest.raises(ValueError, match="no PRECODE bottleneck"):
        malicious.weights_sent(build_model("mlp", (1, 28, 28), 10, seed=0))


def test_dlg_labels_are_neither_given_nor_read():
    text = str(ThreatModel(label_rule="optimised"))
    assert "labels not given: optimised with the image" in text


def test_only_dlg_optimises_its_labels():
    from precode.threat import label_rule_of

    assert label_rule_of("dlg") == label_rule_of("DLG") == "optimised"
    assert {label_rule_of(a) for a in ("idlg", "ig", "analytic", "ig-omit", "ig-joint")} == {"auto"}


def test_papers_threat_gives_the_labels_except_to_dlg_and_idlg():
    from precode.threat import papers_threat

    assert papers_threat("ig").labels == "given" and papers_threat("analytic", 4, seed=3).batch_size == 4
    assert (papers_threat("dlg").labels, papers_threat("dlg").label_rule) == ("inferred", "optimised")
    assert (papers_threat("idlg").labels, papers_threat("idlg").label_rule) == ("inferred", "auto")
    assert papers_threat("idlg", seed=5).seed == 5
    with pytest.raises(ValueError, match="batch size"):
        papers_threat("ig", 0)
