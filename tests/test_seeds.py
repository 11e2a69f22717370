"""The client's and the attacker's random streams are separate (precode.seeds)."""
from __future__ import annotations

import pytest
import torch

from precode import build_model, load_data
from precode.attacks.base import prepare_gradients
from precode.attacks.matching import GradientMatcher
from precode.bottleneck import add_precode
from precode.evaluation import cells as cells_module
from precode.evaluation.grid import Grid, Setting
from precode.seeds import streams
from precode.training import seeded


def test_streams_are_reproducible_distinct_and_checked():
    a, b = streams(0), streams(1)
    assert streams(0) == a and a.seed == 0
    assert a.client != a.attacker and {a.client, a.attacker}.isdisjoint({b.client, b.attacker})
    assert all(0 <= s < 2**31 for s in (a.client, a.attacker, b.client, b.attacker))
    with pytest.raises(ValueError, match="non-negative"):
        streams(-1)


def test_the_attacker_does_not_replay_the_clients_precode_noise():
    # The client shares PRECODE gradients drawn from its stream; the attacker replays the forward
    # pass at the true images with its own stream. Had it used the client's seed, it would draw
    # the client's very noise and match the gradient exactly (the bug this module prevents).
    data = load_data("photos").first(3)
    model = add_precode(build_model("mlp", data.input_shape, data.num_classes, seed=0, width=64), size=16, seed=0)
    rng = streams(0)
    shared = cells_module.defended_gradients(model, data.images, data.labels, "precode", rng.client)
    targets, n = prepare_gradients(model, shared)
    truth = data.images.reshape(1, n, 1, *data.input_shape)
    y = data.labels.reshape(1, n, 1)
    matcher = GradientMatcher(model, targets, 1, data.input_shape)
    with seeded(rng.client, torch.device("cpu")):
        replayed = matcher.distances(truth, y)
    with seeded(rng.attacker, torch.device("cpu")):
        attacker = matcher.distances(truth, y)
    assert float(replayed.max()) < 1e-4, "the same seed should replay the client's noise"
    assert float(attacker.min()) > 1e-2, "the attacker's stream should draw other noise"


def test_a_grid_cell_gives_the_client_and_the_attacker_their_own_streams(monkeypatch):
    # A cell is run_attack under the grid's threat model: PRECODE's noise is drawn inside
    # seeded(client stream), the attack gets the attacker's stream as its seed.
    from precode import experiment as experiment_module

    seen = {}
    real_seeded, real_reconstruct = experiment_module.seeded, experiment_module.reconstruct

    def client_seeded(seed, device):
        seen["client"] = seed
        return real_seeded(seed, device)

    def attack(*args, **kwargs):
        seen["attacker"] = kwargs["seed"]
        return real_reconstruct(*args, **kwargs)

    monkeypatch.setattr(experiment_module, "seeded", client_seeded)
    monkeypatch.setattr(experiment_module, "reconstruct", attack)
    grid = Grid(name="t", settings=(Setting("mlp", "photos", "photos"),), victims=2, pool=0, ig_iterations=1,
                ig_restarts=1, dlg_iterations=1, train_images=8, test_images=8, epochs=1, seed=3)
    cell = next(c for c in grid.cells() if c.defense == "precode" and c.attack == "ig")
    victims = load_data("photos").first(2)
    cells_module.run_cells([cell], grid, victims, victims.images[:0])
    assert (seen["client"], seen["attacker"]) == (streams(3).client, streams(3).attacker)
