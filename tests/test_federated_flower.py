"""Chapter 10: FedAvg in Flower, the curious server, the weight-update attacks and the command line.

Everything but the last two tests runs without Ray: the Flower apps are called directly with
messages built here, as the simulation engine would deliver them.
"""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from precode.attacks.base import prepare_gradients
from precode.attacks.matching import GradientMatcher
from precode.attacks.updates import (
    UpdateMatcher,
    analytic_update_attack,
    gradient_from_update,
    inverting_updates,
    weight_update,
)
from precode.bottleneck import add_precode
from precode.federated import Client, compute_shared_gradients, fedsgd_round
from precode.fl import CuriousServer, client_update, derive_seed
from precode.fl.experiment import (
    FederationConfig,
    aggregate_error,
    aggregate_sweep,
    attack_first_round,
    image_outcome,
    outcome_by_defense,
    score,
)
from precode.metrics import psnr, ssim
from precode.models import build_model


def needs_ray():
    pytest.importorskip("flwr", reason="chapter 10 needs flwr[simulation] (Python 3.11+)")
    pytest.importorskip("ray", reason="Flower's simulation engine needs ray (flwr[simulation])")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_mlp(width=64, precode=False, seed=0):
    model = build_model("mlp", (1, 28, 28), 10, seed=seed, width=width)
    return add_precode(model, size=16, seed=seed) if precode else model


def updates_of(model, images, labels, **kwargs):
    """Each image's client update (one client per image), stacked."""
    sent = model.state_dict()
    ups = [weight_update(sent, client_update(model, images[i:i + 1], labels[i:i + 1], seed=i, **kwargs), model)
           for i in range(len(images))]
    return {n: torch.stack([u[n] for u in ups]) for n in ups[0]}


# -- the client's update and the analytic attack ------------------------------------------------


def test_one_local_step_is_minus_lr_times_the_shared_gradient(sample):
    model = small_mlp()
    x, y = sample.images[:3], sample.labels[:3]
    new = client_update(model, x, y, local_steps=1, lr=0.05)
    g = compute_shared_gradients(model, x, y)
    for name, p in model.named_parameters():
        torch.testing.assert_close(new[name] - p.detach(), -0.05 * g[name], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("local_steps", [1, 3, 5])
@pytest.mark.parametrize("precode", [False, True])
def test_analytic_recovery_from_a_fedavg_update_is_exact_for_any_E(sample, local_steps, precode):
    model = small_mlp(precode=precode)
    x, y = sample.images[:4], sample.labels[:4]
    updates = updates_of(model, x, y, local_steps=local_steps, lr=0.1)
    result = analytic_update_attack(model, updates, (1, 28, 28), client_lr=0.1, local_steps=local_steps)
    assert float(psnr(result.reconstructions, x).min()) > 100
    assert torch.equal(result.labels, y)


def test_flower_client_app_trains_and_the_curious_server_recovers_exactly(sample, flower_identity):
    """The ClientApp's train function, called as Flower calls it; the server divides its update."""
    from flwr.app import (
        ArrayRecord,
        ConfigRecord,
        Context,
        Message,
        MessageType,
        RecordDict,
    )

    from precode.fl.flower import make_client_app, train_config

    config = FederationConfig(data="fashion-mnist-sample", clients=2, rounds=1, local_steps=3, attack="analytic")
    train = config.train_data()
    model = config.build_model(train.input_shape, train.num_classes)
    sent = model.state_dict()
    record = ConfigRecord({**train_config(config), "server-round": 1})
    content = RecordDict({"arrays": ArrayRecord(sent), "config": record})
    msg = Message(content=content, dst_node_id=7, message_type=MessageType.TRAIN)
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 1, "num-partitions": 2}, state=RecordDict(),
                      run_config={})
    reply = make_client_app(config)(msg, context)
    assert reply.content["metrics"]["num-examples"] == 1 and reply.content["metrics"]["partition-id"] == 1
    received = reply.content["arrays"].to_torch_state_dict()
    expected = client_update(model, train.images[1:2], train.labels[1:2], local_steps=3, lr=config.lr,
                             seed=derive_seed(config.seed, "client", 1, 1))
    for k in expected:
        assert torch.equal(received[k], expected[k])
    server = CuriousServer(model, train.input_shape, attack="analytic", batch_size=1, local_steps=3, lr=config.lr)
    server.remember(1, sent)
    (record,) = server.attack_updates(1, [1], [received])
    (scores,) = score(config, record)
    assert scores["psnr"] > 100 and scores["label_accuracy"] == 1.0


def test_analytic_attack_on_batches_and_aggregates_mixes(sample):
    """B > 1: only images that are alone on some units come back exactly; the rest are mixtures."""
    model = small_mlp(width=256)
    x, y = sample.images[:8], sample.labels[:8]
    sent = model.state_dict()
    update = weight_update(sent, client_update(model, x, y, local_steps=2, lr=0.1), model)
    result = analytic_update_attack(model, update, (1, 28, 28), batch_size=8, client_lr=0.1, local_steps=2)
    from precode.metrics import match_to_victims

    best = psnr(result.reconstructions[match_to_victims(result.reconstructions, x)], x)
    assert best.max() > 60  # some images survive exactly
    assert best.min() < 60  # but not all


# -- Inverting Gradients on updates --------------------------------------------------------------


def test_update_matcher_equals_the_gradient_matcher_for_one_step(sample):
    model = small_mlp()
    x, y = sample.images[:3], sample.labels[:3]
    targets, _ = prepare_gradients(model, gradient_from_update(updates_of(model, x, y, lr=0.1), 0.1))
    dummy = torch.rand(2, 3, 1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = y.reshape(1, 3, 1).expand(2, 3, 1)
    ours = UpdateMatcher(model, targets, 1, (1, 28, 28), local_steps=1, lr=0.1).distances(dummy, labels)
    theirs = GradientMatcher(model, targets, 1, (1, 28, 28)).distances(dummy, labels)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("clients", [1, 3])
@pytest.mark.parametrize("local_steps", [1, 3])
def test_update_matcher_replays_the_clients_local_steps_exactly(sample, clients, local_steps):
    """The true images give distance 0: the replica trains as the client did (E steps, K clients averaged)."""
    model = small_mlp()
    x, y = sample.images[:clients], sample.labels[:clients]
    updates = updates_of(model, x, y, local_steps=local_steps, lr=0.1)
    mean = {n: u.mean(0, keepdim=True) for n, u in updates.items()}
    targets, _ = prepare_gradients(model, gradient_from_update(mean, 0.1))
    matcher = UpdateMatcher(model, targets, 1, (1, 28, 28), local_steps=local_steps, lr=0.1, clients=clients)
    truth = matcher.distances(x.reshape(1, 1, clients, 1, 28, 28), y.reshape(1, 1, clients))
    others = sample.images[10:10 + clients].reshape(1, 1, clients, 1, 28, 28)
    other = matcher.distances(others, y.reshape(1, 1, clients))
    assert float(truth.abs().max()) < 1e-5
    assert float(other.min()) > 0.01


def test_inverting_updates_reconstructs_and_is_seeded(sample):
    model = small_mlp()
    x, y = sample.images[:2], sample.labels[:2]
    updates = updates_of(model, x, y, local_steps=3, lr=0.1)
    a = inverting_updates(model, updates, (1, 28, 28), client_lr=0.1, local_steps=3, iterations=150, progress=False)
    b = inverting_updates(model, updates, (1, 28, 28), client_lr=0.1, local_steps=3, iterations=150, progress=False)
    assert torch.equal(a.reconstructions, b.reconstructions)
    assert float(ssim(a.reconstructions, x).mean()) > 0.8
    assert torch.equal(a.labels, y)


# -- the curious strategy and FedAvg -------------------------------------------------------------


@pytest.fixture
def flower_identity():
    """Flower's process identity, set as the simulation engine sets it, so messages can be built here."""
    pytest.importorskip("flwr", reason="chapter 10 needs flwr[simulation] (Python 3.11+)")
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def _replies(model, images, labels, lr, local_steps=1):
    from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict

    out = []
    for i in range(len(images)):
        instruction = Message(content=RecordDict({"arrays": ArrayRecord(model.state_dict())}), dst_node_id=100 + i,
                              message_type=MessageType.TRAIN)
        new = client_update(model, images[i:i + 1], labels[i:i + 1], local_steps=local_steps, lr=lr, seed=i)
        metrics = MetricRecord({"num-examples": 1, "partition-id": i})
        content = RecordDict({"arrays": ArrayRecord(new), "metrics": metrics})
        out.append(Message(content=content, reply_to=instruction))
    return out


def test_curious_strategy_aggregates_exactly_as_fedavg_and_attacks_every_reply(sample, flower_identity):
    from flwr.app import ArrayRecord
    from flwr.serverapp.strategy import FedAvg

    from precode.fl.flower import CuriousFedAvg

    model = small_mlp()
    x, y = sample.images[:4], sample.labels[:4]
    replies = _replies(model, x, y, lr=0.1, local_steps=2)
    server = CuriousServer(model, (1, 28, 28), attack="analytic", batch_size=1, local_steps=2, lr=0.1)
    strategy = CuriousFedAvg(server)
    server.remember(1, ArrayRecord(model.state_dict()).to_torch_state_dict())
    shuffled = [replies[i] for i in (2, 0, 3, 1)]
    ours, _ = strategy.aggregate_train(1, shuffled)
    plain, _ = FedAvg().aggregate_train(1, replies)  # the same replies, in partition order
    any_order, _ = FedAvg().aggregate_train(1, shuffled)
    for k in plain:
        assert np.array_equal(ours[k].numpy(), plain[k].numpy())
        np.testing.assert_allclose(ours[k].numpy(), any_order[k].numpy(), rtol=1e-6, atol=1e-9)
    assert [r.clients for r in server.reconstructions] == [(0,), (1,), (2,), (3,)]
    assert float(psnr(torch.cat([r.images for r in server.reconstructions]), x).min()) > 100


def test_the_reference_fedsgd_round_equals_one_flower_round_of_one_step(sample, flower_identity):
    """precode.federated.fedsgd_round (the reference) = FedAvg in Flower with E = 1 and equal batches."""
    from flwr.serverapp.strategy import FedAvg

    model = small_mlp()
    x, y = sample.images[:6], sample.labels[:6]
    flower, _ = FedAvg().aggregate_train(1, _replies(model, x, y, lr=0.5))
    reference = small_mlp()
    clients = [Client(x[i:i + 1], y[i:i + 1], batch_size=1, seed=i) for i in range(6)]
    fedsgd_round(reference, clients, lr=0.5)
    for name, p in reference.named_parameters():
        np.testing.assert_allclose(flower[name].numpy(), p.detach().numpy(), rtol=1e-5, atol=1e-7)


# -- random streams -------------------------------------------------------------------------------


def test_client_and_attacker_draw_from_separate_reproducible_streams(sample):
    seeds = {derive_seed(0, s, 1, c) for s in ("client", "attacker") for c in range(10)}
    assert len(seeds) == 20  # no two streams share a seed
    assert derive_seed(0, "client", 1, 2) == derive_seed(0, "client", 1, 2)
    assert derive_seed(0, "attacker", 1) != derive_seed(0, "client", 1) != derive_seed(1, "client", 1)
    with pytest.raises(ValueError, match="unknown random stream"):
        derive_seed(0, "server")
    model = small_mlp(precode=True)
    x, y = sample.images[:1], sample.labels[:1]
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = client_update(model, x, y, local_steps=2, defense="gaussian:0.01", seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's generator is left alone
    b = client_update(model, x, y, local_steps=2, defense="gaussian:0.01", seed=5)
    c = client_update(model, x, y, local_steps=2, defense="gaussian:0.01", seed=6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc1.weight"], c["fc1.weight"])


def test_dp_client_update_clips_and_adds_noise(sample):
    model = small_mlp()
    x, y = sample.images[:2], sample.labels[:2]
    sent = model.state_dict()
    noiseless = weight_update(sent, client_update(model, x, y, lr=1.0, defense="dp:clip=0.01,noise=0"), model)
    norm = torch.cat([u.flatten() for u in noiseless.values()]).norm()
    assert float(norm) <= 0.01 + 1e-6  # mean of two clipped per-sample gradients, lr 1
    noisy = weight_update(sent, client_update(model, x, y, lr=1.0, defense="dp:clip=0.01,noise=1"), model)
    assert float(torch.cat([u.flatten() for u in noisy.values()]).norm()) > 10 * float(norm)


# -- the command line -----------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--clients", "many"], "invalid int value"),
    (["--clients", "1"], "clients must be at least 2"),
    (["--attack", "dlg"], "unknown attack"),
    (["--defense", "gaussian:x"], "invalid defense"),
    (["--model", "cnn"], "first layer"),
    (["--clients", "5000", "--rounds", "3"], "training images"),
])
def test_federate_user_errors_are_one_line_and_exit_2(argv, message, capsys):
    from precode.cli import main

    base = {"--model": "mlp", "--data": "fashion-mnist-sample", "--clients": "2", "--rounds": "1",
            "--local-steps": "1", "--batch-size": "1"}
    args = dict(base)
    for k, v in zip(argv[::2], argv[1::2]):
        args[k] = v
    flat = ["federate"] + [s for kv in args.items() for s in kv]
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(flat))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


def test_federate_command_in_flowers_simulation_engine(capfd):
    """End to end with Ray: 3 clients, 2 rounds, E = 2; stdout holds only the JSON."""
    needs_ray()
    from precode.cli import main

    status = main(["federate", "--model", "mlp", "--data", "fashion-mnist-sample", "--clients", "3", "--rounds", "2",
                   "--local-steps", "2", "--batch-size", "1", "--attack", "analytic", "--json", "-"])
    out = capfd.readouterr().out
    assert status == 0
    payload = json.loads(out)
    assert set(payload) == {"config", "rounds", "summary"}
    assert [r["round"] for r in payload["rounds"]] == [1, 2]
    for r in payload["rounds"]:
        assert 0 <= r["test_accuracy"] <= 1
        assert [c["client"] for c in r["clients"]] == [0, 1, 2]
        for c in r["clients"]:
            assert set(c) == {"client", "mse", "psnr", "ssim", "label_accuracy"}
            assert c["psnr"] > 60 and c["label_accuracy"] == 1.0


def test_secure_aggregation_runs_and_the_server_sees_only_the_aggregate():
    """SecAgg+ in the simulation: one reconstruction per round, of the mean of all clients' updates."""
    needs_ray()
    from precode.fl.simulation import run_federation

    config = FederationConfig(data="fashion-mnist-sample", clients=3, rounds=1, attack="analytic", secagg=True)
    report = run_federation(config)
    (record,) = report.reconstructions
    assert record.clients == (0, 1, 2) and record.labels_given and len(record.images) == 3
    assert set(report.test_accuracy) == {0, 1}
    assert [c["client"] for c in report.scores[1]] == [0, 1, 2]
    quantisation, update_size = aggregate_error(config, report)
    assert 0 < quantisation < 0.1 * update_size  # the aggregate is the mean, up to SecAgg+'s quantisation


def test_attack_outcome_reports_progress_and_matches_at_the_truths_distance():
    from precode.fl.experiment import attack_outcome

    scores = [{"ssim": 0.9, "label_accuracy": 1.0}, {"ssim": 0.1, "label_accuracy": 0.0}]
    records = [SimpleNamespace(distance=0.1, initial_distance=1.0, server_round=1, clients=[0]),
               SimpleNamespace(distance=0.5, initial_distance=1.0, server_round=2, clients=[1])]
    floors = {1: torch.tensor([0.2, 9.0]), 2: torch.tensor([9.0, 0.3])}
    out = attack_outcome(scores, records, floors)
    assert list(out["ssim"]) == [0.9, 0.1] and out["labels"] == 0.5
    assert out["progress"] == pytest.approx(0.3) and out["below"] == 0.5  # client 1 ends above its truth
    assert "below" not in attack_outcome(scores, records)
    with pytest.raises(ValueError, match="at least one client"):
        attack_outcome([], records)


def test_image_outcome_and_aggregate_sweep_without_flower():
    config = FederationConfig(data="fashion-mnist-sample", clients=4, rounds=1, attack="analytic")
    server, _ = attack_first_round(config)
    out = image_outcome(config, server.reconstructions)
    assert out["psnr"].shape == (4,) and out["ssim"].shape == (4,) and (out["psnr"] > 60).all()
    assert out["labels"] == 1.0 and out["progress"] is None  # the analytic attack has no optimiser
    sweep = aggregate_sweep(config, [1, 4], "psnr", 60)
    assert sweep[1][:2] == (4, 4) and sweep[4][1] == 4 and sweep[4][2].shape == (4,)  # one score per client
    assert list(sweep[1][2]) == pytest.approx(list(out["psnr"]))  # K = 1: each client's own update
    with pytest.raises(ValueError, match="metric must be"):
        aggregate_sweep(config, [1], "mse", 0.1)
    with pytest.raises(ValueError, match="at least one client"):
        image_outcome(config, [])
    with pytest.raises(ValueError, match="no SecAgg\\+ aggregate"):
        aggregate_error(config, SimpleNamespace(server=server))


def test_outcome_by_defense_splits_the_clients_by_their_defense():
    config = FederationConfig(data="fashion-mnist-sample", clients=4, rounds=1, defense=("none", "gaussian:0.1"))
    scores = [{"client": c, "ssim": s, "label_accuracy": 1.0} for c, s in enumerate([0.9, 0.1, 0.8, 0.2])]
    records = [SimpleNamespace(distance=0.1, initial_distance=1.0, server_round=1, clients=[c]) for c in range(4)]
    report = SimpleNamespace(clients=lambda: scores, reconstructions=records)
    out = outcome_by_defense(config, report)
    assert list(out) == ["none", "gaussian:0.1"]
    assert list(out["none"]["ssim"]) == [0.9, 0.8] and list(out["gaussian:0.1"]["ssim"]) == [0.1, 0.2]
