"""The attacks of chapter 2: the invariants the book teaches, and the batched machinery behind them."""
import inspect
import math

import pytest
import torch

from precode import attacks, load_data
from precode.attacks.base import prepare_gradients
from precode.attacks.lbfgs import batched_lbfgs
from precode.attacks.matching import GradientMatcher
from precode.bottleneck import add_precode
from precode.federated import compute_shared_gradients, compute_victim_gradients
from precode.metrics import psnr
from precode.models import build_model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The attacks run many small operations: one thread is faster, above all on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def victims(sample):
    """Six test images with distinct labels (the sample's first ones)."""
    seen, idx = set(), []
    for i, y in enumerate(sample.labels.tolist()):
        if y not in seen:
            seen.add(y)
            idx.append(i)
        if len(idx) == 6:
            break
    idx = torch.tensor(idx)
    return sample.images[idx], sample.labels[idx]


def small_mlp(width=48, precode=False, seed=0):
    model = build_model("mlp", (1, 28, 28), 10, seed=seed, width=width)
    return add_precode(model, size=16) if precode else model


def lenet(seed=0):
    return build_model("lenet", (1, 28, 28), 10, seed=seed)


# -- the label rule ----------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["bias", "weight", "auto"])
def test_label_rule_reads_each_victims_label(victims, source):
    images, labels = victims
    model = lenet()  # sigmoid features: non-negative inputs to the last layer
    shared = compute_victim_gradients(model, images, labels)
    assert torch.equal(attacks.infer_labels(model, shared, source=source), labels)


def test_label_rule_is_the_argmin_of_the_last_layer(victims):
    images, labels = victims
    model = small_mlp()
    g = compute_shared_gradients(model, images[:1], labels[:1])
    assert g["classifier.bias"].argmin() == labels[0]
    assert g["classifier.weight"].sum(1).argmin() == labels[0]
    assert (g["classifier.bias"] < 0).sum() == 1  # only the true class is negative
    assert attacks.infer_labels(model, g).tolist() == [int(labels[0])]


def test_label_rule_bias_works_behind_precode_and_for_batches(victims):
    images, labels = victims
    model = small_mlp(precode=True)
    shared = compute_victim_gradients(model, images, labels)
    assert torch.equal(attacks.infer_labels(model, shared, source="bias"), labels)
    batched = compute_victim_gradients(model, images, labels, batch_size=3)
    found = attacks.infer_labels(model, batched, batch_size=3).reshape(2, 3)
    for v in range(2):
        assert sorted(found[v].tolist()) == sorted(labels[3 * v : 3 * v + 3].tolist())
    with pytest.raises(ValueError, match="batch_size"):
        attacks.infer_labels(model, batched, batch_size=11)
    with pytest.raises(ValueError, match="source"):
        attacks.infer_labels(model, batched, source="logits")


def test_label_rule_is_not_fooled_by_a_pruned_bias(victims):
    """Pruning at p = 0.99 zeroes all 10 entries of the classifier's bias gradient
    (round(0.99 * 10) = 10): the bias says nothing, and the rule must not answer class 0."""
    from precode.defenses import parse_defense

    images, labels = victims
    model = small_mlp()
    shared = compute_victim_gradients(model, images, labels, defense=parse_defense("prune:0.99", seed=0))
    assert torch.count_nonzero(shared["classifier.bias"]) == 0
    assert torch.equal(attacks.infer_labels(model, shared), labels)  # auto falls back to the weight rule
    assert torch.equal(attacks.infer_labels(model, shared, source="weight"), labels)
    with pytest.raises(ValueError, match=r"classifier\.bias\) is all zero"):  # it used to answer class 0
        attacks.infer_labels(model, shared, source="bias")
    silent = {name: torch.zeros_like(g) if name.startswith("classifier") else g for name, g in shared.items()}
    with pytest.raises(ValueError, match="all zero for victim"):
        attacks.infer_labels(model, silent)


# -- the analytic attack -----------------------------------------------------------------------


@pytest.mark.parametrize("precode", [False, True])
def test_analytic_attack_recovers_images_exactly(victims, precode):
    images, labels = victims
    model = small_mlp(precode=precode)
    shared = compute_victim_gradients(model, images, labels)
    result = attacks.reconstruct("analytic", model, shared, input_shape=(1, 28, 28), progress=False)
    assert result.reconstructions.shape == images.shape
    torch.testing.assert_close(result.reconstructions, images, atol=1e-5, rtol=0)
    assert torch.equal(result.labels, labels)
    assert result.loss_history.shape == (0, len(images))


def test_analytic_attack_separates_small_batches(victims):
    images, labels = victims
    model = small_mlp(width=512)
    shared = compute_victim_gradients(model, images, labels, batch_size=3)
    result = attacks.reconstruct("analytic", model, shared, input_shape=(1, 28, 28), batch_size=3, progress=False)
    for v in range(2):
        recon, orig = result.reconstructions[3 * v : 3 * v + 3], images[3 * v : 3 * v + 3]
        errors = torch.cdist(orig.flatten(1), recon.flatten(1))
        assert (errors.min(dim=1).values < 1e-3).all()  # every image of the batch is among them


def test_linear_layer_input_is_exact_behind_precode_noise():
    # PRECODE's encoder is a linear layer with a bias: its input (the early bottleneck's feature map)
    # comes back from its gradients whatever noise the sampling drew (chapter 8)
    torch.manual_seed(0)
    model = add_precode(build_model("cnn", (3, 16, 16), 10, seed=0, widths=(4, 4)), before="block2", seed=0)
    images, labels = torch.rand(3, 3, 16, 16), torch.tensor([1, 2, 3])
    shared = compute_victim_gradients(model, images, labels)
    h = attacks.linear_layer_input(shared["precode.encoder.weight"], shared["precode.encoder.bias"])
    truth = model.block1(images).flatten(1).double()
    assert h.shape == truth.shape and h.dtype == torch.float64
    torch.testing.assert_close(h, truth, atol=1e-5, rtol=1e-4)
    one = attacks.linear_layer_input(shared["precode.encoder.weight"][0], shared["precode.encoder.bias"][0])
    torch.testing.assert_close(one, h[0])
    zero = attacks.linear_layer_input(torch.ones(2, 4, 5), torch.zeros(2, 4))  # nothing to recover: zeros
    assert torch.equal(zero, torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="weight \\(out, in\\) and bias"):
        attacks.linear_layer_input(torch.ones(4, 5), torch.ones(3))


@pytest.mark.parametrize("name", ["cnn", "lenet"])
def test_analytic_attack_needs_a_leading_linear_layer(victims, name):
    images, labels = victims
    model = build_model(name, (1, 28, 28), 10, seed=0, **({"widths": (4, 4)} if name == "cnn" else {}))
    shared = compute_victim_gradients(model, images[:1], labels[:1])
    with pytest.raises(ValueError, match=r"first layer .* is a Conv2d"):
        attacks.reconstruct("analytic", model, shared, input_shape=(1, 28, 28))


# -- gradient matching -------------------------------------------------------------------------


def test_matcher_low_rank_shortcut_equals_the_plain_cosine(victims):
    images, labels = victims
    model = small_mlp(precode=True)
    targets, n = prepare_gradients(model, compute_victim_gradients(model, images[:4], labels[:4], batch_size=2))
    x = torch.rand(2, n, 2, 1, 28, 28, requires_grad=True)
    y = labels[:4].reshape(1, n, 2).expand(2, n, 2)
    out = []
    for low_rank in (True, False):
        matcher = GradientMatcher(model, targets, 2, (1, 28, 28), low_rank=low_rank)
        torch.manual_seed(0)  # the same PRECODE noise for both
        d = matcher.distances(x, y)
        out.append((d, torch.autograd.grad(d.sum(), x)[0]))
    torch.testing.assert_close(out[0][0], out[1][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[0][1], out[1][1], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("noisy", [False, True])
def test_matcher_low_rank_shortcut_equals_the_plain_l2(victims, noisy):
    # DLG's squared distance through the shortcut (exact factors, or a noisy target compared as delta^T T h)
    images, labels = victims
    model = small_mlp(precode=True)
    shared = compute_victim_gradients(model, images[:4], labels[:4], batch_size=2)
    if noisy:
        shared = {k: g + 1e-3 * torch.randn(g.shape, generator=torch.Generator().manual_seed(1))
                  for k, g in shared.items()}
    targets, n = prepare_gradients(model, shared)
    x = torch.rand(2, n, 2, 1, 28, 28, requires_grad=True)
    y = labels[:4].reshape(1, n, 2).expand(2, n, 2)
    out = []
    for low_rank in (True, False):
        matcher = GradientMatcher(model, targets, 2, (1, 28, 28), distance="l2", low_rank=low_rank)
        assert bool(matcher._linear) == low_rank and bool(matcher._factors) == (low_rank and not noisy)
        torch.manual_seed(0)  # the same PRECODE noise for both
        d = matcher.distances(x, y)
        out.append((d, torch.autograd.grad(d.sum(), x)[0]))
    torch.testing.assert_close(out[0][0], out[1][0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[0][1], out[1][1], atol=1e-7, rtol=1e-4)


def test_matcher_low_rank_l2_keeps_its_precision_near_the_answer(victims):
    # at the true images the squared distance is ~0 (float32 round-off), not the ~1e-7 |t|^2 that
    # |g|^2 - 2 <g, t> + |t|^2 would leave in float32
    images, labels = victims
    model = small_mlp()
    targets, _ = prepare_gradients(model, compute_victim_gradients(model, images[:3], labels[:3]))
    truth, y = images[:3].reshape(1, 3, 1, 1, 28, 28), labels[:3].reshape(1, 3, 1)
    matcher = GradientMatcher(model, targets, 1, (1, 28, 28), distance="l2")
    assert matcher._factors, "the shortcut should apply to the MLP's layers"
    target_sq = sum(t.double().square().flatten(1).sum(1) for t in targets.values())
    assert (matcher.distances(truth, y)[0].double() / target_sq).max() < 1e-10


def test_matcher_replays_the_clients_loss_including_kl(victims):
    images, labels = victims
    model = add_precode(small_mlp(), size=16, eval_mode="mean").eval()  # deterministic bottleneck
    targets, _ = prepare_gradients(model, compute_victim_gradients(model, images[:3], labels[:3]))
    truth = images[:3].reshape(1, 3, 1, 1, 28, 28)
    y = labels[:3].reshape(1, 3, 1)
    assert GradientMatcher(model, targets, 1, (1, 28, 28)).distances(truth, y).abs().max() < 1e-5
    assert GradientMatcher(model, targets, 1, (1, 28, 28), distance="l2").distances(truth, y).max() < 1e-9


def test_matcher_layer_selection(victims):
    images, labels = victims
    model = small_mlp()
    targets, _ = prepare_gradients(model, compute_shared_gradients(model, images[:1], labels[:1]))
    x = torch.rand(1, 1, 1, 1, 28, 28)
    y = labels[:1].reshape(1, 1, 1)
    matcher = GradientMatcher(model, targets, 1, (1, 28, 28), layers=["fc2.weight"])
    g = compute_shared_gradients(model, x[0, 0], labels[:1])["fc2.weight"]
    expected = 1 - torch.nn.functional.cosine_similarity(g.flatten(), targets["fc2.weight"][0].flatten(), dim=0)
    torch.testing.assert_close(matcher.distances(x, y)[0, 0], expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="unknown parameter"):
        GradientMatcher(model, targets, 1, (1, 28, 28), layers=["fc9.weight"])


# -- many victims at once ------------------------------------------------------------------------


@pytest.mark.parametrize("make_model", [small_mlp, lenet])
def test_ig_batched_equals_each_victim_alone(victims, make_model):
    images, labels = victims
    model = make_model()
    shared = compute_victim_gradients(model, images[:3], labels[:3])
    options = dict(input_shape=(1, 28, 28), iterations=20, restarts=2, seed=3, progress=False)
    together = attacks.reconstruct("ig", model, shared, **options)
    for v in range(3):
        alone = attacks.reconstruct("ig", model, {k: g[v] for k, g in shared.items()}, **options)
        torch.testing.assert_close(together.reconstructions[v : v + 1], alone.reconstructions, atol=2e-3, rtol=0)
        torch.testing.assert_close(together.loss_history[:, v : v + 1], alone.loss_history, atol=1e-4, rtol=1e-3)


def test_dlg_batched_equals_each_victim_alone_for_a_short_run(victims):
    images, labels = victims
    model = lenet()
    shared = compute_victim_gradients(model, images[:3], labels[:3])
    # Two evaluations: the first step of the line search. Beyond it, a strong-Wolfe decision can
    # flip on float rounding that differs between a batched and a lone convolution (measured on
    # this CPU: with max_eval=4 one of the three DLG victims took another branch, 0.043 apart).
    options = dict(input_shape=(1, 28, 28), iterations=1, seed=0, progress=False, max_eval=2)
    for name in ("dlg", "idlg"):
        together = attacks.reconstruct(name, model, shared, **options)
        for v in range(3):
            alone = attacks.reconstruct(name, model, {k: g[v] for k, g in shared.items()}, **options)
            torch.testing.assert_close(together.reconstructions[v : v + 1], alone.reconstructions, atol=1e-3, rtol=0)


def test_batched_lbfgs_follows_torch_lbfgs_on_each_problem():
    torch.manual_seed(0)
    shift = torch.randn(4, 5, dtype=torch.float64)

    def rosenbrock(x, a):
        valley = (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2).sum(-1) + ((1 - x[..., :-1]) ** 2).sum(-1)
        return valley + 0.1 * (a * x).sum(-1)

    x0 = torch.randn(4, 5, dtype=torch.float64)
    x, _, history, spent = batched_lbfgs(lambda z: rosenbrock(z, shift), x0, iterations=3, max_iter=6,
                                         history_size=5)
    assert history.shape == (3, 4)
    for p in range(4):
        z = x0[p].clone().requires_grad_(True)
        opt = torch.optim.LBFGS([z], lr=1, max_iter=6, history_size=5, line_search_fn="strong_wolfe")

        def closure(opt=opt, z=z, p=p):
            opt.zero_grad()
            loss = rosenbrock(z, shift[p])
            loss.backward()
            return loss

        for _ in range(3):
            opt.step(closure)
        torch.testing.assert_close(x[p], z.detach(), atol=1e-9, rtol=0)
        # torch evaluates the closure again at the start of every step; the batched version keeps it
        assert int(spent[p]) == opt.state[opt._params[0]]["func_evals"] - 2


def test_batched_lbfgs_serves_every_problem_with_every_call():
    # Four problems from deterministic to very noisy: their line searches end after different numbers of
    # evaluations, and the stalled ones start again. Every batched call still serves every problem that
    # has budget left, so a budget of 100 evaluations takes about 100 calls (the synchronous version,
    # where a problem waited for the slowest one's step, took 290).
    noise = torch.Generator().manual_seed(1)
    scale = torch.tensor([0.0, 1e-3, 1e-1, 1.0], dtype=torch.float64)
    calls = []

    def noisy_quadratic(z):
        calls.append(1)
        eps = torch.randn(z.shape, generator=noise, dtype=z.dtype)
        return ((z - 1) ** 2).sum(1) + scale * (eps * z).sum(1)

    def fresh(k):
        return torch.randn(4, 5, generator=torch.Generator().manual_seed(k), dtype=torch.float64)

    x0 = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _, losses, history, spent = batched_lbfgs(noisy_quadratic, x0, iterations=4, restart=fresh, budget=100)
    assert ((spent >= 100) & (spent <= 101)).all(), spent
    assert len(calls) <= 102, len(calls)
    assert history.shape[1] == 4 and torch.equal(history[-1], losses.cpu())
    assert losses[0] < 1e-12  # the deterministic problem is solved


# -- the optimisation attacks --------------------------------------------------------------------


def test_restarts_are_chosen_by_gradient_distance_only(victims):
    images, labels = victims
    model = lenet()
    shared = compute_victim_gradients(model, images[:2], labels[:2])
    result = attacks.reconstruct("ig", model, shared, input_shape=(1, 28, 28), iterations=15, restarts=3,
                                 seed=1, progress=False)
    assert result.restart_losses.shape == (3, 2)
    assert not torch.equal(result.restart_losses[0], result.restart_losses[1])  # the restarts differ
    targets, _ = prepare_gradients(model, shared)
    kept = GradientMatcher(model, targets, 1, (1, 28, 28)).distances(
        result.reconstructions.reshape(1, 2, 1, 1, 28, 28), labels[:2].reshape(1, 2, 1)
    )[0]
    torch.testing.assert_close(kept, result.restart_losses.min(dim=0).values, atol=1e-5, rtol=1e-4)


def test_ig_and_idlg_reconstruct_and_are_seeded(victims):
    images, labels = victims
    model = small_mlp()
    shared = compute_victim_gradients(model, images[:2], labels[:2])
    ig = attacks.reconstruct("ig", model, shared, input_shape=(1, 28, 28), iterations=100, progress=False)
    assert (ig.reconstructions - images[:2]).abs().mean() < 0.02
    assert torch.equal(ig.labels, labels[:2])  # inferred by the label rule
    again = attacks.reconstruct("ig", model, shared, input_shape=(1, 28, 28), iterations=100, progress=False)
    assert torch.equal(ig.reconstructions, again.reconstructions)
    model = lenet()
    shared = compute_victim_gradients(model, images[:2], labels[:2])
    idlg = attacks.reconstruct("idlg", model, shared, input_shape=(1, 28, 28), iterations=8, progress=False)
    assert torch.equal(idlg.labels, labels[:2])
    assert (psnr(idlg.reconstructions, images[:2]) > 30).all()
    # every victim spends the budget of 8 iterations of 25 evaluations (fresh starts for a stalled search)
    assert idlg.loss_history.shape[1] == 2 and idlg.loss_history.shape[0] >= 8 and idlg.seconds > 0
    assert (idlg.victim_evaluations() >= 200).all()


def test_batches_and_precode_run(victims):
    images, labels = victims
    model = small_mlp(precode=True)
    shared = compute_victim_gradients(model, images[:4], labels[:4], batch_size=2)
    before = model.precode.kl
    for name in ("ig", "dlg"):
        result = attacks.reconstruct(name, model, shared, input_shape=(1, 28, 28), batch_size=2, iterations=3,
                                     progress=False)
        assert result.reconstructions.shape == (4, 1, 28, 28) and result.labels.shape == (4,)
        assert torch.isfinite(result.reconstructions).all()
        assert result.reconstructions.min() >= 0 and result.reconstructions.max() <= 1
    assert model.precode.kl is before  # the attack leaves the bottleneck as it found it


# -- clear errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", attacks.ATTACK_NAMES)
def test_gradients_that_do_not_fit_the_model_are_rejected(victims, name):
    images, labels = victims
    model = small_mlp()
    good = compute_victim_gradients(model, images[:2], labels[:2])

    def run(shared):
        return attacks.reconstruct(name, model, shared, input_shape=(1, 28, 28), iterations=1, progress=False)

    missing = {k: v for k, v in good.items() if k != "fc2.bias"}
    with pytest.raises(ValueError, match="missing"):
        run(missing)
    with pytest.raises(ValueError, match="unexpected"):
        run({**good, "extra.weight": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="shape"):
        run({**good, "fc1.weight": torch.zeros(2, 5, 784)})
    for bad in (float("nan"), float("inf")):
        broken = dict(good)
        broken["fc2.weight"] = good["fc2.weight"].clone()
        broken["fc2.weight"][0, 0, 0] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            run(broken)
    # finite entries whose sum overflows are finite (the one-pass check falls back to every entry)
    from precode.federated import validate_gradients

    huge = {k: torch.full_like(v, 3e38) for k, v in good.items()}
    assert not torch.isfinite(huge["fc2.weight"].sum()) and validate_gradients(model, huge, stacked=True) == 2
    with pytest.raises(ValueError, match="dict"):
        run([good])


def test_unknown_attack_and_bad_arguments(victims):
    images, labels = victims
    model = small_mlp()
    shared = compute_victim_gradients(model, images[:1], labels[:1])
    with pytest.raises(ValueError, match="unknown attack"):
        attacks.reconstruct("magic", model, shared, input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="iterations"):
        attacks.reconstruct("ig", model, shared, input_shape=(1, 28, 28), iterations=0)
    with pytest.raises(ValueError, match="labels"):
        attacks.reconstruct("ig", model, shared, input_shape=(1, 28, 28), labels=[1, 2, 3], iterations=1)
    with pytest.raises(ValueError, match="do not fit"):
        attacks.reconstruct("ig", model, shared, input_shape=(3, 32, 32), iterations=1)


def test_total_variation_of_flat_and_striped_images():
    flat = torch.full((2, 1, 1, 4, 4), 0.5)
    assert attacks.total_variation(flat).abs().max() == 0
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., ::2] = 1.0
    assert math.isclose(float(attacks.total_variation(stripes)), 1.0)


def test_every_registered_attack_takes_its_settings_by_keyword_only():
    # the model, the shared gradients and the image shape are the only positional arguments, so that a
    # call cannot pass the labels as the batch size, or the seed as the restarts
    assert sorted(attacks.ATTACKS) == sorted(attacks.ATTACK_NAMES) == sorted(
        ["dlg", "idlg", "ig", "analytic", "ig-omit", "ig-joint", "ig-mean", "ig-eot", "encoder-leak"])
    for name, attack in attacks.ATTACKS.items():
        params = list(inspect.signature(attack).parameters.values())
        assert [p.name for p in params[:3]] == ["model", "shared_gradients", "input_shape"], name
        rest = [p for p in params[3:] if p.kind is not inspect.Parameter.VAR_KEYWORD]
        assert rest and all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in rest), name
        assert {"batch_size", "labels", "iterations", "restarts", "seed", "progress"} <= {p.name for p in rest}, name
    model = build_model("mlp", (1, 28, 28), 10, seed=0)
    data = load_data("fashion-mnist-sample").first(1)
    shared = compute_victim_gradients(model, data.images, data.labels)
    with pytest.raises(TypeError, match="positional"):
        attacks.ATTACKS["ig"](model, shared, (1, 28, 28), 1)


def test_attacks_report_the_evaluations_they_spent():
    model = build_model("lenet", (1, 28, 28), 10, seed=0)
    data = load_data("fashion-mnist-sample").first(2)
    shared = compute_victim_gradients(model, data.images, data.labels)
    ig = attacks.reconstruct("ig", model, shared, input_shape=(1, 28, 28), iterations=7, progress=False)
    assert ig.evaluations == 7
    idlg = attacks.reconstruct("idlg", model, shared, input_shape=(1, 28, 28), iterations=3, progress=False)
    # L-BFGS: the start, then at most 25 evaluations (20 inner iterations and their line searches) per step
    assert 3 < idlg.evaluations <= 1 + 3 * 25
    mlp = build_model("mlp", (1, 28, 28), 10, seed=0)
    analytic = attacks.reconstruct("analytic", mlp, compute_victim_gradients(mlp, data.images, data.labels),
                                   input_shape=(1, 28, 28), progress=False)
    assert analytic.evaluations == 0


def test_ig_learning_rates_per_group_of_victims_as_if_attacked_alone(victims):
    images, labels = victims
    model = small_mlp()
    shared = compute_victim_gradients(model, images[:2], labels[:2])
    twice = {k: torch.cat([g, g]) for k, g in shared.items()}  # the same two victims, once per rate
    options = dict(input_shape=(1, 28, 28), labels=torch.cat([labels[:2], labels[:2]]), iterations=20,
                   progress=False)
    sweep = attacks.reconstruct("ig", model, twice, lr=[0.001, 1.0], **options)
    for k, rate in enumerate([0.001, 1.0]):
        alone = attacks.reconstruct("ig", model, shared, lr=rate, **{**options, "labels": labels[:2]})
        torch.testing.assert_close(sweep.reconstructions[2 * k:2 * k + 2], alone.reconstructions, atol=1e-4, rtol=0)
        torch.testing.assert_close(sweep.loss_history[:, 2 * k:2 * k + 2], alone.loss_history, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(sweep.reconstructions[:2], sweep.reconstructions[2:], atol=1e-2)  # the rates differ
    with pytest.raises(ValueError, match="cannot cut 4 victims"):
        attacks.reconstruct("ig", model, twice, lr=[0.1, 0.2, 0.3], **options)
    with pytest.raises(ValueError, match="lr must be positive"):
        attacks.reconstruct("ig", model, twice, lr=[0.1, -1.0], **options)
