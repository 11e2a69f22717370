"""The full profile's code path at tiny scale, so that the paper's scale cannot break unnoticed.

The full profile is meant for a GPU with network access (CIFAR-10 and CIFAR-100 are downloaded);
here its grid runs with every one of its settings (both models on CIFAR-10, CIFAR-100 and
Fashion-MNIST) at a tiny budget, with seeded random stand-ins for the two CIFAR sets, and the
victims its chapters ask for are checked against the data that is there.
"""
import pytest
import torch

from precode import evaluation, load_data
from precode.data import ImageData
from precode.evaluation import runner as runner_module
from precode.evaluation.grid import get_grid
from precode.profiles import get_profile

FULL = get_profile("full")


def cifar_stand_in(name: str, split: str) -> ImageData:
    """Random 3x32x32 images with CIFAR's number of classes; every other data set is the real one."""
    if name not in ("cifar10", "cifar100"):
        return load_data(name, split)
    classes = 10 if name == "cifar10" else 100
    g = torch.Generator().manual_seed(0 if split == "test" else 1)
    n = 160
    return ImageData(torch.rand(n, 3, 32, 32, generator=g), torch.arange(n) % classes,
                     [f"class {i}" for i in range(classes)], name, f"random stand-in for {name} ({split})")


def test_the_full_grid_runs_every_setting_at_tiny_scale(tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(runner_module, "load_data", cifar_stand_in)
    full = get_grid("full")
    tiny = full.replace(victims=1, pool=2, ig_iterations=2, dlg_iterations=1, train_images=32, test_images=32,
                        epochs=1)
    # Every setting and attack; the defenses whose code differs most (no defense, DP-SGD, PRECODE and its
    # variants; the noise and pruning levels run on the quick grid's code path in tests/test_evaluation.py).
    tiny = tiny.restrict(defenses=("none", "dp:clip=1.0,noise=1.0", "precode", "precode@block2",
                                   "precode+partial-gaussian:0.01"))
    for part in ("paper", "adaptive"):
        grid = tiny.part(part)
        out = evaluation.run_evaluation(grid, tmp_path / part, progress=False, figures=False)
        summary = evaluation.read_csv(out / "summary.csv")
        assert len(summary) == len(grid.cells()) > 0
        assert {(r["model"], r["data"]) for r in summary} == {(s.model, s.data) for s in full.settings}
        assert all(r["n"] == 1 for r in summary)
        assert {r["attack"] for r in summary} == set(grid.attacks)
        trained = {(r["model"], r["data"], r["defense"]) for r in summary if r["weights"] == "trained"}
        expected = {(s.model, s.data, d) for s in full.settings for d in ("none", "precode")}
        expected = expected if part == "paper" else set()
        assert trained == expected  # every full setting's model is attacked again after training (paper part)


def test_the_data_holds_the_victims_the_full_profile_asks_for():
    # chapters 2 and 8 attack the first `victims` photos; chapters 1, 2 and 6 read Fashion-MNIST's test split
    assert len(load_data("photos").first(FULL.victims)) == FULL.victims
    test = load_data("fashion-mnist", "test")
    for name in ("victims", "stat_images", "label_victims", "spread_victims"):
        assert len(test.first(getattr(FULL, name))) == getattr(FULL, name), name
    grid = get_grid("full")
    assert grid.victims + grid.pool <= len(test)
    # chapter 8 picks one setting per model: the MLP on Fashion-MNIST and the CNN on CIFAR-10
    adaptive = grid.part("adaptive")
    assert adaptive.setting("mlp", "fashion-mnist").data == "fashion-mnist"
    assert adaptive.setting("cnn").data == "cifar10"
    with pytest.raises(ValueError, match="no setting of model 'lenet'"):
        adaptive.setting("lenet")
