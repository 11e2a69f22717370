"""``python -m precode evaluate`` and :mod:`precode.evaluation`: the grid, agreement with the attack
command, resuming, the statistics and one-line errors. Tiny grids only (seconds each)."""
import dataclasses
import json
import math

import pytest
import torch

from precode import evaluation, load_data
from precode.cli import main
from precode.evaluation import cells as cells_module
from precode.evaluation import runner as runner_module
from precode.evaluation import store as store_module
from precode.evaluation.grid import Grid, Setting

TINY = ["--victims", "2", "--iterations", "3", "--epochs", "1", "--train-images", "64", "--test-images", "50",
        "--pool", "10", "--no-progress"]


def tiny_grid(defenses=("none", "prune:0.5"), attacks=("analytic", "ig")) -> Grid:
    # pruning is not trained (as in the quick grid: training on per-release pruning costs seconds a step)
    return Grid(name="test", settings=(Setting("mlp", "fashion-mnist-sample", "fashion-mnist-sample"),),
                defenses=tuple(defenses), attacks=tuple(attacks), victims=2, pool=10, ig_iterations=3,
                dlg_iterations=1, train_images=64, test_images=50, epochs=1,
                untrained=tuple(d for d in defenses if d.startswith("prune")))


# -- the grid ---------------------------------------------------------------------------------

def test_quick_and_full_grids_hold_the_papers_comparison():
    quick, full = evaluation.get_grid("quick"), evaluation.get_grid("full")
    paper = quick.part("paper")
    assert paper.name == "quick-paper"
    assert paper.defenses[0] == "none" and paper.defenses[-1] == "precode"
    assert {evaluation.family(d) for d in paper.defenses} == {"none", "gaussian", "prune", "dp", "precode"}
    assert quick.victims == 32 and full.victims == 128 and full.ig_iterations == 7000
    assert {s.data for s in quick.settings} == {"fashion-mnist", "photos"}
    assert {s.data for s in full.settings} == {"cifar10", "cifar100", "fashion-mnist"}
    # the paper's rows attack every model on the data it is trained on: privacy and utility of one system
    assert all(s.data == s.train_data for s in paper.settings)
    # every cell a verdict rests on has 32 victims; the attacker is given the labels (its best case), and
    # DP-SGD, which could win by costing the attacker its labels, is attacked with them inferred as well
    assert paper.labels == "given" and paper.inferred == ("dp:clip=1.0,noise=1.0",)
    inferred = [c.key for c in paper.cells() if c.labels == "inferred"]
    assert inferred == [("mlp", "fashion-mnist", "dp:clip=1.0,noise=1.0", "ig", "initial", "inferred")]
    by_model = {}
    for cell in paper.cells():
        by_model.setdefault(cell.setting.model, set()).add(cell.attack)
    assert by_model == {"mlp": {"ig", "idlg", "analytic"}, "cnn": {"ig"}}  # quick: iDLG on the MLP only
    assert {c.defense for c in paper.cells() if c.attack == "idlg"} == {"none", "precode"}
    # every model at its initial weights; then Inverting Gradients on the trained MLP without a defense and
    # with PRECODE
    trained = [c.key for c in paper.cells() if c.weights == "trained"]
    assert trained == [("mlp", "fashion-mnist", d, "ig", "trained", "given") for d in ("none", "precode")]
    assert len(paper.cells()) == (7 + 7 + 2) + 4 + 1 + 2
    # pruning each release on its own is too slow to train on at this scale: its rows carry no accuracy
    assert paper.untrained == ("prune:0.9", "prune:0.99")
    assert paper.release("precode").defense == "none" and paper.release("gaussian:0.1").clients == 64
    assert {c.attack for c in full.part("paper").cells() if c.setting.model == "cnn"} == {"ig", "idlg"}
    assert len(full.part("paper").cells()) == 3 * (12 * 3 + 12 * 2) + 6 * 2 + 6 * 1
    assert not [c for c in quick.part("adaptive").cells() if c.weights == "trained"]
    assert evaluation.Grid.from_dict(quick.to_dict()) == quick and evaluation.Grid.from_dict(full.to_dict()) == full


def test_the_grid_has_the_adaptive_attacks_and_defenses_as_rows():
    quick = evaluation.get_grid("quick")
    assert set(quick.defenses) >= {"precode@block2", "precode+partial-gaussian:0.003", "precode+partial-gaussian:0.01"}
    assert {"ig-omit", "ig-joint"} <= set(quick.attacks)
    cells = quick.cells()
    # the attacks that know PRECODE run only where the model has a bottleneck ...
    adaptive = [c for c in cells if c.attack in ("ig-omit", "ig-joint")]
    assert adaptive and all(c.defense.startswith("precode") for c in adaptive)
    assert {(c.setting.model, c.defense) for c in adaptive} >= {("mlp", "precode"), ("cnn", "precode"),
                                                              ("cnn", "precode@block2")}
    # ... the early bottleneck only where the model has the layer (the CNN's block2)
    assert {c.setting.model for c in cells if c.defense == "precode@block2"} == {"cnn"}
    # ... and ig, idlg not against PRECODE's variants (they already fail against PRECODE itself)
    assert not [c for c in cells if c.attack in ("ig", "idlg") and c.defense in evaluation.ADAPTIVE_DEFENSES]
    # MLP: PRECODE x {ig-omit, ig-joint}, 2 partial levels x {analytic, ig-omit, ig-joint};
    # CNN on the photos: none and PRECODE x ig, PRECODE x 2, early x 2, 2 partial x 2
    assert len(cells) == len(quick.part("paper").cells()) + (2 + 2 * 3) + (2 + 2 + 2 + 2 * 2)
    assert quick.budget("ig-omit") == quick.budget("ig-joint") == quick.budget("ig") == (200, 1)
    part = quick.part("adaptive")
    assert set(part.defenses) == {"none", "precode", "precode@block2", "precode+partial-gaussian:0.003",
                                  "precode+partial-gaussian:0.01"}
    assert set(part.attacks) == {"ig", "analytic", "ig-omit", "ig-joint"}
    assert {c.key for c in part.cells()} <= {c.key for c in cells}
    partial = ("mlp", "fashion-mnist", "precode+partial-gaussian:0.01", "analytic", "initial", "given")
    assert partial in {c.key for c in part.cells()}
    assert part.victims == 8 and {s.data for s in part.settings if s.model == "cnn"} == {"photos"}
    with pytest.raises(ValueError, match="unknown part"):
        quick.part("beyond")
    # both parts train alike (chapter 8 compares its variants on these trainings); the setting survives the
    # grid's JSON round trip
    paper = quick.part("paper")
    assert (part.train_images, part.epochs, part.test_images) == (paper.train_images, paper.epochs,
                                                                   paper.test_images) == (5000, 2, None)
    assert part.adaptive_training is None and evaluation.Grid.from_dict(quick.to_dict()) == quick
    full_adaptive = evaluation.get_grid("full").part("adaptive")
    assert (full_adaptive.train_images, full_adaptive.epochs) == (None, 30)
    with pytest.raises(ValueError, match="adaptive_training"):
        quick.replace(adaptive_training=(100, 0, None))
    # the full grid: the early bottleneck on the CNN of every data set
    full = evaluation.get_grid("full")
    assert {(c.setting.data, c.attack) for c in full.cells() if c.defense == "precode@block2"} == {
        (d, a) for d in ("cifar10", "cifar100", "fashion-mnist") for a in ("ig-omit", "ig-joint")}


@pytest.mark.parametrize("name, canonical, parts", [
    ("PRECODE", "precode", ("classifier", "none")),
    ("precode@classifier", "precode", ("classifier", "none")),
    ("precode@block2", "precode@block2", ("block2", "none")),
    ("precode+partial-gaussian:1e-2", "precode+partial-gaussian:0.01", ("classifier", "partial-gaussian:0.01")),
    ("precode@block2+gaussian:1e-3", "precode@block2+gaussian:0.001", ("block2", "gaussian:0.001")),
    ("prune:0.9", "prune:0.9", (None, "prune:0.9")),
])
def test_precode_defense_names(name, canonical, parts):
    assert evaluation.canonical_defense(name) == canonical
    parsed = evaluation.split_defense(canonical)
    assert parsed == parts and (parsed.at, parsed.gradient) == parts and parsed.precode == (parts[0] is not None)
    assert evaluation.split_defense(f" {canonical} ") is parsed  # data parsed once per name, not re-parsed


@pytest.mark.parametrize("name, message", [
    ("precode+none", "gradient defense"),
    ("precode+dp:clip=1,noise=1", "not DP-SGD"),
    ("gaussian:0.1+prune:0.5", "only PRECODE combines"),
    ("precode@1x", "layer name"),
    ("precode+foo:1", "unknown defense 'foo'"),
    ("precode+gaussian:0.1+prune:0.5", "one gradient defense"),
])
def test_bad_precode_defense_names(name, message):
    with pytest.raises(ValueError, match=message):
        evaluation.canonical_defense(name)


def test_families_and_labels_of_the_precode_variants():
    from precode.evaluation.report import _short

    assert [evaluation.family(d) for d in ("precode", "precode@block2", "precode+partial-gaussian:0.01",
                                           "precode+prune:0.9")] == [
        "precode", "precode-early", "precode+partial", "precode+"]
    assert _short("precode@block2") == "PRECODE@block2"
    assert _short("precode+partial-gaussian:0.01") == "PRECODE + partial 0.01"
    with pytest.raises(ValueError, match="not canonical"):
        Grid(name="t", settings=(Setting("mlp", "fashion-mnist", "fashion-mnist"),), defenses=("PRECODE",))


def test_restrict_and_canonical_names():
    grid = evaluation.get_grid("quick").restrict(models=["mlp"], defenses=["dp:clip=1,noise=1"],
                                                 attacks=["analytic"])
    assert [c.key for c in grid.cells()] == [
        ("mlp", "fashion-mnist", "dp:clip=1.0,noise=1.0", "analytic", "initial", "given")]
    assert grid.trained == ()  # neither none nor PRECODE is left
    with pytest.raises(ValueError, match="not in the quick grid"):
        evaluation.get_grid("quick").restrict(defenses=["gaussian:0.5"])
    assert Grid.from_dict(grid.to_dict()) == grid


# -- statistics --------------------------------------------------------------------------------

def test_wilson_interval_is_honest_about_small_samples():
    low, high = evaluation.wilson_interval(0, 8)
    assert low == 0 and 0.32 < high < 0.33  # "0 of 8" is compatible with a third
    low, high = evaluation.wilson_interval(8, 8)
    assert high == 1 and 0.67 < low < 0.68
    low, high = evaluation.wilson_interval(64, 128)
    assert low < 0.5 < high and high - low < 0.18


# -- agreement with `python -m precode attack` -------------------------------------------------

def _evaluate(out, *extra):
    return main(["evaluate", "--profile", "quick", "--out", str(out), *TINY, *extra])


@pytest.mark.parametrize("model, defense, attack, model_args", [
    ("mlp", "none", "ig", ["--defense", "none"]),
    ("mlp", "none", "analytic", ["--defense", "none"]),
    ("mlp", "gaussian:0.01", "ig", ["--defense", "gaussian:0.01"]),
    ("mlp", "dp:clip=1.0,noise=1.0", "analytic", ["--defense", "dp:clip=1.0,noise=1.0"]),
    ("mlp", "none", "idlg", ["--defense", "none"]),
    ("mlp", "precode", "ig", ["--precode"]),
    ("mlp", "precode", "ig-joint", ["--precode"]),
    ("mlp", "precode+partial-gaussian:0.01", "analytic", ["--precode", "--defense", "partial-gaussian:0.01"]),
    ("cnn", "precode@block2", "ig-omit", ["--precode-at", "block2"]),
])
def test_cell_agrees_with_the_attack_command(tmp_path, capsys, one_thread, model, defense, attack, model_args):
    iterations = "1" if attack == "idlg" else "3"  # L-BFGS iterations are expensive on the MLP
    assert _evaluate(tmp_path / "run", "--models", model, "--defenses", defense, "--attacks", attack,
                     "--iterations", iterations) == 0
    capsys.readouterr()
    # the untrained model's cell (none and PRECODE under ig also have a trained model's cell)
    (summary,) = [r for r in evaluation.read_csv(tmp_path / "run" / "summary.csv") if r["weights"] == "initial"]
    rows = [r for r in evaluation.read_csv(tmp_path / "run" / "results.csv") if r["weights"] == "initial"]
    # the same cell alone: PRECODE is a flag of the attack command, every other defense a --defense spec
    data = "photos" if model == "cnn" else "fashion-mnist"
    assert main(["attack", "--attack", attack, "--model", model, *model_args, "--data", data, "--labels", "given",
                 "--images", "2", "--iterations", iterations, "--restarts", "1", "--seed", "0", "--json", "-"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert len(rows) == len(alone["results"]) == 2
    for row, single in zip(rows, alone["results"]):
        assert row["victim"] == single["index"] and row["label_pred"] == single["label_pred"]
        assert row["evaluations"] == single["evaluations"]
        for metric in ("mse", "psnr", "ssim", "distance", "truth_distance"):
            if single[metric] is None:
                assert row[metric] is None, metric
            else:
                assert row[metric] == pytest.approx(single[metric], rel=1e-5, abs=1e-6), metric
    assert summary["psnr_mean"] == pytest.approx(alone["summary"]["psnr"], rel=1e-5)
    assert summary["ssim_mean"] == pytest.approx(alone["summary"]["ssim"], rel=1e-5, abs=1e-6)
    assert summary["label_accuracy"] == pytest.approx(alone["summary"]["label_accuracy"])


# -- the files, resuming -----------------------------------------------------------------------

def test_files_columns_and_statistics(tmp_path, one_thread):
    out = evaluation.run_evaluation(tiny_grid(defenses=("none", "precode")), tmp_path / "run", progress=False)
    summary = evaluation.read_csv(out / "summary.csv")
    results = evaluation.read_csv(out / "results.csv")
    training = evaluation.read_csv(out / "training.csv")
    required = {"model", "defense", "attack", "n", "attack_success_rate", "identification_rate", "psnr_mean",
                "psnr_ci95", "ssim_mean", "ssim_ci95", "test_accuracy", "seconds"}
    assert required <= set(summary[0])
    assert len(summary) == 4 and len(results) == 4 * 2 and len(training) == 2
    for s in summary:
        mine = [r for r in results if (r["defense"], r["attack"]) == (s["defense"], s["attack"])]
        assert s["n"] == len(mine) == 2
        assert s["attack_success_rate"] == sum(r["ssim"] >= s["threshold"] for r in mine) / 2
        assert s["identification_rate"] == sum(r["identified"] for r in mine) / 2
        assert s["success_ci95_low"] <= s["attack_success_rate"] <= s["success_ci95_high"]
        assert 0 <= s["test_accuracy"] <= 1 and s["train_images"] == 64 and s["test_images"] == 50
    analytic = {s["defense"]: s for s in summary if s["attack"] == "analytic"}
    # exact recovery, and PRECODE (after the first layer) does not stop it
    assert analytic["none"]["attack_success_rate"] == analytic["precode"]["attack_success_rate"] == 1
    assert analytic["precode"]["identification_rate"] == 1
    # a model's training, epoch by epoch, as chapter 8 reads it
    history = evaluation.GridResults(out).history("mlp", "precode")
    assert [h["epoch"] for h in history] == [1] and history[0]["test_images"] == 50
    assert history[0]["test_accuracy"] == next(s["test_accuracy"] for s in summary if s["defense"] == "precode")
    with pytest.raises(ValueError, match="trained it under"):
        evaluation.GridResults(out).history("mlp", "prune:0.9")
    names = {p.name for p in (out / "figures").glob("*.png")}
    assert {"ssim_distributions.png", "convergence.png", "privacy_utility_ig.png"} <= names
    config = json.loads((out / "config.json").read_text())
    assert config["grid"]["threshold"] == 0.5
    assert "labels given to the attacker" in config["threat_model"]
    assert "client batches of 1 image" in config["threat_model"]


def test_stored_reconstructions_are_the_cells_own(tmp_path, one_thread):
    out = evaluation.run_evaluation(tiny_grid(defenses=("none",)), tmp_path / "run", progress=False, figures=False)
    victims = load_data("fashion-mnist-sample", "test").first(2)
    for attack in ("analytic", "ig"):
        key = ("mlp", "fashion-mnist-sample", "none", attack, "initial", "given")
        recon = evaluation.read_reconstructions(out, key)
        assert recon.shape == victims.images.shape and recon.dtype == torch.float32
        rows = [r for r in evaluation.read_csv(out / "results.csv") if r["attack"] == attack]
        # the stored images give the stored metrics (up to half precision)
        mse = ((recon - victims.images) ** 2).flatten(1).mean(1)
        assert torch.allclose(mse, torch.tensor([r["mse"] for r in rows], dtype=torch.float32), rtol=1e-2, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="no reconstructions of cell"):
        evaluation.read_reconstructions(out, ("mlp", "fashion-mnist-sample", "prune:0.5", "ig", "initial", "given"))
    # overwriting the run removes the old cells' images with their rows
    evaluation.run_evaluation(tiny_grid(defenses=("prune:0.5",), attacks=("analytic",)), out, overwrite=True,
                              progress=False, figures=False)
    stored = [p.name for p in (out / "reconstructions").iterdir()]
    assert stored == ["mlp__fashion-mnist-sample__prune_0.5__analytic__initial__given.pt"]


def test_grid_results_reads_a_cell_by_model_defense_and_attack(tmp_path, one_thread):
    out = evaluation.run_evaluation(tiny_grid(defenses=("none",)), tmp_path / "run", progress=False, figures=False)
    res = evaluation.GridResults(out)
    key = ("mlp", "fashion-mnist-sample", "none", "analytic", "initial", "given")
    row = res.row("mlp", "none", "analytic")
    assert tuple(row[k] for k in evaluation.CELL_FIELDS) == key and row["n"] == 2
    assert res.row("mlp", "none", "analytic", labels="given") is row
    cell = res.cell("mlp", "none", "analytic")
    victims = [r for r in res.results if tuple(r[k] for k in evaluation.CELL_FIELDS) == key]
    assert list(cell["ssim"]) == [r["ssim"] for r in sorted(victims, key=lambda r: r["victim"])]
    assert torch.equal(cell["images"], evaluation.read_reconstructions(out, key)) and len(cell["psnr"]) == 2
    with pytest.raises(ValueError, match=r"no cell .* it has"):
        res.row("mlp", "prune:0.9", "ig")
    with pytest.raises(ValueError, match="no cell of model 'cnn'"):
        res.row("cnn", "none", "ig")
    with pytest.raises(ValueError, match="no cell"):
        evaluation.GridResults(out, data={"mlp": "photos"}).row("mlp", "none", "ig")
    with pytest.raises(ValueError, match=r"no summary\.csv"):
        evaluation.GridResults(tmp_path / "empty")


def test_reuse_reads_a_finished_run_and_recomputes_it_when_anything_changed(tmp_path, monkeypatch, one_thread):
    calls = {"cells": 0, "training": 0}
    real_cells, real_train = cells_module.run_cells, cells_module.train_model

    def counting_cells(cells, *args, **kwargs):
        calls["cells"] += len(cells)
        return real_cells(cells, *args, **kwargs)

    def counting_train(*args, **kwargs):
        calls["training"] += 1
        return real_train(*args, **kwargs)

    monkeypatch.setattr(runner_module, "run_cells", counting_cells)
    monkeypatch.setattr(runner_module, "train_model", counting_train)
    grid, out = tiny_grid(), tmp_path / "run"
    evaluation.run_evaluation(grid, out, reuse=True, progress=False, figures=False)
    first = evaluation.read_csv(out / "summary.csv")
    assert calls == {"cells": 4, "training": 1}
    evaluation.run_evaluation(grid, out, reuse=True, progress=False, figures=False)
    assert calls == {"cells": 4, "training": 1}  # the same run: nothing recomputed
    assert evaluation.read_csv(out / "summary.csv") == first
    # another grid, other code or other data: everything again, never a stale cell
    evaluation.run_evaluation(grid.replace(ig_iterations=2), out, reuse=True, progress=False, figures=False)
    assert calls == {"cells": 8, "training": 2}
    monkeypatch.setattr(store_module, "package_fingerprint", lambda: "edited")  # as if the code were edited
    evaluation.run_evaluation(grid.replace(ig_iterations=2), out, reuse=True, progress=False, figures=False)
    assert calls == {"cells": 12, "training": 3}
    config = json.loads((out / "config.json").read_text())
    assert config["code"] == "edited" and "fashion-mnist-sample test" in config["data"]
    with pytest.raises(ValueError, match="reuse"):
        evaluation.run_evaluation(grid, out, reuse=True, resume=True, progress=False, figures=False)


def _without_seconds(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds",)} for r in rows]


def test_resume_after_an_interruption_recomputes_nothing(tmp_path, monkeypatch, one_thread):
    grid = tiny_grid()
    reference = evaluation.run_evaluation(grid, tmp_path / "reference", progress=False, figures=False)

    calls = {"cells": [], "calls": 0, "training": 0}
    real_cells, real_train = cells_module.run_cells, cells_module.train_model

    def counting_cells(cells, *args, **kwargs):
        if calls["calls"] == calls.get("stop_after", math.inf):
            raise KeyboardInterrupt  # the user presses Ctrl-C during the third call (the fourth cell)
        calls["calls"] += 1
        calls["cells"] += [c.key for c in cells]
        return real_cells(cells, *args, **kwargs)

    def counting_train(*args, **kwargs):
        calls["training"] += 1
        return real_train(*args, **kwargs)

    monkeypatch.setattr(runner_module, "run_cells", counting_cells)
    monkeypatch.setattr(runner_module, "train_model", counting_train)
    calls["stop_after"] = 2
    with pytest.raises(KeyboardInterrupt):
        evaluation.run_evaluation(grid, tmp_path / "run", progress=False, figures=False)
    # the calls: analytic under none; ig under none and prune:0.5 together; then analytic under prune:0.5
    assert len(evaluation.read_csv(tmp_path / "run" / "summary.csv")) == 3
    assert calls["training"] == 1  # the trained defense's model, before the second call attacks both

    # a write cut off mid-cell: victim rows of an unfinished cell without its summary row
    with open(tmp_path / "run" / "results.csv", "a") as f:
        f.write("mlp,fashion-mnist-sample,prune:0.5,analytic,initial,given,0,7,7,7,0.1,10.0,0.2,0,0,0,,,ok\n")

    finished = set(calls["cells"])
    calls.update(cells=[], training=0, stop_after=math.inf)
    with pytest.raises(ValueError, match="--resume"):
        evaluation.run_evaluation(grid, tmp_path / "run", progress=False, figures=False)
    out = evaluation.run_evaluation(grid, tmp_path / "run", resume=True, progress=False, figures=False)
    assert calls["training"] == 0  # both models were trained before the interruption
    assert len(calls["cells"]) == 1 and not finished & set(calls["cells"])
    for name in ("summary.csv", "results.csv", "training.csv"):
        got, want = evaluation.read_csv(out / name), evaluation.read_csv(reference / name)
        assert _without_seconds(got) == _without_seconds(want), name

    # resuming a finished run does nothing; resuming with another grid is refused
    calls["cells"] = []
    evaluation.run_evaluation(grid, tmp_path / "run", resume=True, progress=False, figures=False)
    assert calls["cells"] == []
    with pytest.raises(ValueError, match=r"different grid.*victims"):
        evaluation.run_evaluation(grid.replace(victims=3), tmp_path / "run", resume=True, progress=False)


def test_cli_resume_skips_finished_cells_and_shows_progress(tmp_path, capsys, one_thread):
    args = ["--models", "mlp", "--defenses", "none", "--attacks", "analytic"]
    assert _evaluate(tmp_path / "run", *args) == 0
    capsys.readouterr()
    assert _evaluate(tmp_path / "run", *args) == 2
    assert "--resume" in capsys.readouterr().err
    argv = ["evaluate", "--out", str(tmp_path / "run"), *[a for a in TINY if a != "--no-progress"], *args, "--resume"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "1/1" in captured.err and "cell" in captured.err  # the bar starts complete: nothing recomputed
    assert "analytic" in captured.out


def test_unwritable_out_is_one_line_and_non_zero(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert _evaluate(blocker / "run", "--models", "mlp", "--defenses", "none", "--attacks", "analytic") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot write to --out") and "\n" not in err


@pytest.mark.parametrize("args, message", [
    (["--profile", "huge"], "unknown --profile"),
    (["--threshold", "2"], "--threshold"),
    (["--defenses", "gaussian:0.5"], "not in the quick grid"),
    (["--models", "cnn", "--attacks", "analytic"], "no cells"),
    (["--victims", "0"], "--victims"),
    (["--part", "beyond"], "unknown --part"),
    (["--part", "paper", "--attacks", "ig-omit"], "not in the quick-paper grid"),
    (["--models", "mlp", "--defenses", "precode@block2"], "no cells"),
    (["--defenses", "precode+dp:clip=1,noise=1"], "not DP-SGD"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    assert main(["evaluate", "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_comparison_table_shows_the_labels():
    # a defense that "works" because the attacker's labels came out wrong must be visible
    row = {"model": "mlp", "data": "fashion-mnist", "defense": "prune:0.99", "attack": "ig", "n": 8,
           "threshold": 0.5, "attack_success_rate": 0.0, "success_ci95_low": 0.0, "success_ci95_high": 0.32,
           "ssim_mean": -0.07, "label_accuracy": 0.0, "labels": "inferred", "labels_inferable": 0.0,
           "test_accuracy": 0.8}
    table = evaluation.comparison_table([row])
    assert "labels" in table.splitlines()[0]
    assert "0% (0-32%), -0.07, inferred, 0% right" in table and "prune 0.99, labels inferred" in table
    given = {**row, "labels": "given", "label_accuracy": 1.0, "labels_inferable": 0.25}
    assert "-0.07, given (25% in the gradient)" in evaluation.comparison_table([given])
    assert "-0.07, given |" in evaluation.comparison_table([{**given, "labels_inferable": None}])
    # a model's trained rows follow its own rows, marked, before the next model's
    rows = [{**given, "defense": "none"}, {**given, "model": "cnn", "data": "photos", "defense": "none"},
            {**given, "defense": "none", "weights": "trained"}]
    lines = evaluation.comparison_table(rows).splitlines()[2:5]
    assert [line.split(" | ")[:2] for line in lines] == [["| mlp (fashion-mnist)", "none"],
                                                         ["| mlp (fashion-mnist)", "none (trained)"],
                                                         ["| cnn (photos)", "none"]]
    assert "-: not trained at this scale" in evaluation.comparison_table([{**given, "test_accuracy": None}])


def test_grid_figures_keep_the_ssim_interval_inside_its_range():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [1.0] * 7 + [0.2]  # piled up at SSIM's bound: the t interval crosses 1
    results = [{"model": "mlp", "data": "d", "attack": "ig", "defense": "none", "ssim": v} for v in values]
    summary = [{"model": "mlp", "data": "d", "attack": "ig", "defense": "none", "weights": "initial"}]
    fig = evaluation.plot_ssim_distributions(results, summary, 0.5)
    bar = fig.axes[0].containers[0]
    assert float(bar.lines[2][0].get_segments()[0][:, 1].max()) == 1.0
    plt.close(fig)
    # an exact reconstruction's SSIM a rounding error above 1 (float32) still draws, with the bound kept
    exact = [{**r, "ssim": 1.0000001} for r in results]
    fig = evaluation.plot_ssim_distributions(exact, summary, 0.5)
    assert float(fig.axes[0].containers[0].lines[2][0].get_segments()[0][:, 1].min()) == pytest.approx(1.0)
    plt.close(fig)
    from precode.plotting import clip_interval

    assert clip_interval(1.0000001, 0.0, (-1.0, 1.0)) == (1.0000001, 1.0000001)
    assert clip_interval(0.5, 0.7, (-1.0, 1.0)) == (pytest.approx(-0.2), 1.0)


def test_chapters_only_read_a_full_profile_grid_and_never_overwrite_it(tmp_path, monkeypatch, one_thread):
    grid = tiny_grid(defenses=("none",), attacks=("analytic",)).replace(name="full-paper")
    out = tmp_path / "evaluation-full-paper"
    with pytest.raises(ValueError, match=r"--profile full --part paper --out .* --resume"):
        evaluation.chapter_results(grid, out)  # nothing computed yet: the command, not hours in a cell
    evaluation.run_evaluation(grid, out, progress=False, figures=False)  # what `evaluate --resume` writes
    bigger = grid.replace(attacks=("analytic", "ig"))
    with pytest.raises(ValueError, match="does not hold the full-paper grid"):
        evaluation.chapter_results(bigger, out)
    monkeypatch.setattr(store_module, "package_fingerprint", lambda: "edited")  # the code changed since
    monkeypatch.setattr(runner_module, "run_cells", lambda *a, **k: pytest.fail("a chapter recomputed a cell"))
    assert evaluation.chapter_results(grid, out) == out  # read as it is: kept, not recomputed
    rows = evaluation.read_csv(out / "summary.csv")
    assert [(r["defense"], r["attack"]) for r in rows] == [("none", "analytic")]
    (out / "summary.csv").write_text((out / "summary.csv").read_text().splitlines()[0] + "\n")  # unfinished
    with pytest.raises(ValueError, match="holds 0 of the full-paper grid's 1 cells"):
        evaluation.chapter_results(grid, out)


def test_cells_of_one_model_are_attacked_together_with_the_numbers_they_get_alone(one_thread):
    grid = tiny_grid(defenses=("none", "gaussian:0.01", "prune:0.5", "precode"), attacks=("ig",)).replace(
        ig_iterations=4)
    cells = {c.defense: c for c in grid.cells()}
    victims = load_data("fashion-mnist-sample", "test").first(grid.victims)
    together = cells_module.attack_cells([cells["none"], cells["gaussian:0.01"], cells["prune:0.5"]], grid, victims)
    for run, defense in zip(together, ["none", "gaussian:0.01", "prune:0.5"]):
        alone = cells_module.attack_cell(cells[defense], grid, victims)
        assert run.threat.defense == alone.threat.defense == defense
        assert torch.allclose(run.images, alone.images, atol=1e-4), defense
        assert run.ssim == pytest.approx(alone.ssim, abs=1e-4)
        assert torch.equal(torch.as_tensor(run.labels), torch.as_tensor(alone.labels))
    assert not torch.allclose(together[0].images, together[1].images, atol=1e-3)  # the defenses differ
    assert cells_module.batchable(cells["precode"]) is None  # its noise would depend on the batch
    assert cells_module.batchable(dataclasses.replace(cells["none"], attack="idlg")) is None  # slower batched
    with pytest.raises(ValueError, match="cannot be attacked together"):
        cells_module.attack_cells([cells["none"], cells["precode"]], grid, victims)
    with pytest.raises(ValueError, match="at least one cell"):
        cells_module.attack_cells([], grid, victims)
    order = runner_module._batches(grid.cells())
    assert [[c.defense for c in b] for b in order] == [["none", "gaussian:0.01", "prune:0.5"], ["precode"]]


def test_row_texts_quote_a_summary_row_as_the_prose_does():
    row = {"attack_success_rate": 0.25, "success_ci95_low": 0.0711, "success_ci95_high": 0.5907,
           "ssim_mean": 0.4249, "identification_rate": 0.375, "test_accuracy": 0.7436}
    assert evaluation.row_texts(row) == {"rate": "25% (7-59%)", "ssim": "0.42", "id": "38%", "acc": "74%"}


def test_train_defended_builds_the_named_model_and_trains_it_under_the_named_defense(one_thread):
    from precode.bottleneck import bottlenecks

    data = load_data("fashion-mnist-sample").first(64)
    plain, _ = evaluation.train_defended("mlp", "none", data, epochs=1, seed=0)
    assert not bottlenecks(plain)
    model, result = evaluation.train_defended("mlp", "precode+gaussian:0.01", data, data, epochs=1, seed=0)
    assert len(bottlenecks(model)) == 1 and len(result.history) == 1 and 0 <= result.test_accuracy <= 1
    _again, repeat = evaluation.train_defended("mlp", "precode+gaussian:0.01", data, data, epochs=1, seed=0)
    assert repeat.test_accuracy == result.test_accuracy  # seeded: the model, PRECODE, the noise, the order
    with pytest.raises(ValueError, match="invalid defense"):
        evaluation.train_defended("mlp", "gaussian:-1", data, epochs=1)


def test_trained_cells_attack_the_weights_the_grids_training_reached(tmp_path, monkeypatch, one_thread):
    from precode.experiment import run_attack

    grid = tiny_grid(defenses=("none", "precode"), attacks=("ig",)).replace(trained=("none", "precode"))
    keys = [c.key for c in grid.cells()]
    assert keys[-2:] == [("mlp", "fashion-mnist-sample", d, "ig", "trained", "given") for d in ("none", "precode")]
    out = evaluation.run_evaluation(grid, tmp_path / "run", progress=False, figures=False)
    res = evaluation.GridResults(out)
    initial, trained = res.row("mlp", "precode", "ig"), res.row("mlp", "precode", "ig", "trained")
    assert trained["test_accuracy"] == initial["test_accuracy"]  # one training, two states of its model
    assert res.row("mlp", "none", "ig")["precode_sigma"] is None
    assert 0 < trained["precode_sigma"] and initial["precode_sigma"] == pytest.approx(0.69, abs=0.1)  # softplus(~0)
    # the trained cell equals the same attack run on the stored trained weights, and differs from the initial one
    with store_module.RunFolder(out, grid, resume=True) as folder:
        state = folder.weights("mlp", "fashion-mnist-sample", "none")
    cell = next(c for c in grid.cells() if c.key[2:5] == ("none", "ig", "trained"))
    victims = load_data("fashion-mnist-sample", "test").first(2)
    model = cells_module.cell_model(cell, grid, victims, state)
    alone = run_attack("ig", model, victims, grid.threat_model("none"), iterations=3, restarts=1)
    stored = res.cell("mlp", "none", "ig", "trained")
    assert list(stored["ssim"]) == pytest.approx(list(alone.ssim), rel=1e-5, abs=1e-6)
    assert list(stored["ssim"]) != pytest.approx(list(res.cell("mlp", "none", "ig")["ssim"]), rel=1e-3)
    # a resumed run reads the stored weights instead of training again
    monkeypatch.setattr(runner_module, "train_model", lambda *a, **k: pytest.fail("trained again"))
    (out / "summary.csv").write_text("".join((out / "summary.csv").read_text().splitlines(True)[:-1]))
    evaluation.run_evaluation(grid, out, resume=True, progress=False, figures=False)
    assert evaluation.GridResults(out).row("mlp", "precode", "ig", "trained")["ssim_mean"] == trained["ssim_mean"]
    with pytest.raises(ValueError, match="trained weights are given exactly"):
        cells_module.cell_model(cell, grid, victims)
    with pytest.raises(ValueError, match="among the grid's defenses"):
        grid.replace(trained=("prune:0.5",))


def test_a_grid_training_is_read_from_the_experiment_store(tmp_path, monkeypatch, one_thread):
    from precode.experiment_store import use_store

    grid, calls = tiny_grid(defenses=("none",)), []
    real = cells_module.train_defended
    monkeypatch.setattr(cells_module, "train_defended", lambda *a, **k: calls.append(a) or real(*a, **k))
    train, test = (load_data("fashion-mnist-sample", split) for split in ("train", "test"))
    setting = grid.settings[0]
    try:
        use_store(tmp_path / "store")
        first = cells_module.train_model(setting, "none", grid, train, test)
        second = cells_module.train_model(setting, "none", grid, train, test)  # another grid, the same training
        assert len(calls) == 1 and first[0] == second[0] and first[1] == second[1]
        assert all(torch.equal(first[2][k], second[2][k]) for k in first[2])
        cells_module.train_model(setting, "none", grid.replace(epochs=2), train, test)  # another budget
        assert len(calls) == 2
    finally:
        use_store(None)
    cells_module.train_model(setting, "none", grid, train, test)  # no store: trained
    assert len(calls) == 3
