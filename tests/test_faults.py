"""Fault injection: the result folders survive kills, corruption and concurrent runs, and every bad
input gets one line (issue 31, "Nothing lost, nothing silent").

What a user or a fault injector would do, at small scale: point ``--out`` at a folder the package
did not make, kill a run at chosen writes (a monkeypatched commit of :mod:`precode.files`), truncate
or garble its files, start two runs on one folder, overflow an attack's objective, give numbers and
files far out of range, interrupt with Ctrl-C or SIGTERM. Each test asserts the one-line error and
exit status, and that every finished cell survives. Tiny grids only (a cell is a second or less);
the command runs in this process (the ``cli`` fixture) except for the one Flower test.
"""
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from precode import evaluation
from precode.evaluation import runner as runner_module
from precode.evaluation.grid import Grid, Setting
from precode.evaluation.schema import CELL_FIELDS

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--profile", "quick", "--models", "mlp", "--defenses", "none", "--attacks", "analytic", "--victims", "1",
        "--iterations", "3", "--epochs", "1", "--train-images", "16", "--test-images", "16", "--no-progress"]


def grid(defenses=("none",), attacks=("analytic", "ig"), **changes) -> Grid:
    """Two cells of two victims on the embedded sample: a second each."""
    return Grid(name="faults", settings=(Setting("mlp", "fashion-mnist-sample", "fashion-mnist-sample"),),
                defenses=tuple(defenses), attacks=tuple(attacks), victims=2, pool=4, ig_iterations=3,
                dlg_iterations=2, train_images=16, test_images=16, epochs=1).replace(**changes)


def run(g: Grid, out: Path, **kwargs) -> Path:
    return evaluation.run_evaluation(g, out, progress=False, figures=False, **kwargs)


def one_line(result, code: int = 2) -> str:
    """The command's error: exactly one line on stderr, no traceback, the exit status ``code``."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def rows(out: Path, name: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in evaluation.read_csv(out / f"{name}.csv")]


def counting(monkeypatch) -> list:
    """Record the keys of the cells the runner attacks (and still attack them)."""
    seen: list = []
    real = runner_module.run_cells

    def run_cells(cells, *args, **kwargs):
        seen.extend(c.key for c in cells)
        return real(cells, *args, **kwargs)

    monkeypatch.setattr(runner_module, "run_cells", run_cells)
    return seen


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of :func:`grid` (and of its trained variant) to compare with."""
    base = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {"plain": run(grid(), base / "plain"),
           "trained": run(grid(attacks=("ig",), trained=("none",)), base / "trained")}
    torch.set_num_threads(threads)


# -- Data lost ----------------------------------------------------------------------------------

def test_out_refuses_a_folder_the_package_did_not_make(tmp_path, cli, monkeypatch):
    mine = tmp_path / "d"
    (mine / "weights").mkdir(parents=True)
    (mine / "figures").mkdir()
    (mine / "weights" / "my_model.pt").write_text("x\n")
    (mine / "figures" / "plot.png").write_text("x\n")
    err = one_line(cli("evaluate", "--out", str(mine), *TINY))
    assert str(mine) in err and "--out" in err
    assert (mine / "weights" / "my_model.pt").read_text() == "x\n"
    assert (mine / "figures" / "plot.png").read_text() == "x\n"
    # --out "" is the current folder: refused, not cleared
    monkeypatch.chdir(mine)
    one_line(cli("evaluate", "--out", "", *TINY))
    assert sorted(p.name for p in mine.rglob("*")) == ["figures", "my_model.pt", "plot.png", "weights"]


def test_starting_over_deletes_only_what_the_package_wrote(tmp_path, cli):
    out = tmp_path / "run"
    assert cli("evaluate", "--out", str(out), *TINY).returncode == 0
    mine = [out / "notes.txt", out / "figures" / "mine.png", out / "weights" / "mine.pt"]
    for path in mine:
        path.write_text("mine\n")
    assert cli("evaluate", "--out", str(out), *TINY, "--overwrite").returncode == 0
    assert cli("evaluate", "--out", str(out), *TINY, "--seed", "1", "--overwrite").returncode == 0
    # reuse (the chapters) starts a folder holding another run over: its own files only
    run(grid(attacks=("analytic",)), out, reuse=True)
    assert all(p.read_text() == "mine\n" for p in mine)
    assert [r["attack"] for r in rows(out, "summary")] == ["analytic"]


def test_a_folder_from_before_the_marker_is_adopted_and_only_its_run_deleted(tmp_path, monkeypatch, one_thread):
    out = run(grid(), tmp_path / "run")
    (out / ".precode-evaluation").unlink()  # as a run of an earlier version left it
    (out / "notes.txt").write_text("mine\n")
    attacked = counting(monkeypatch)
    run(grid(), out, resume=True)
    assert attacked == [] and (out / ".precode-evaluation").is_file()
    listed = (out / ".precode-evaluation").read_text()
    assert "summary.csv" in listed and "reconstructions/" in listed and "notes.txt" not in listed
    run(grid(attacks=("analytic",)), out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in (out / "reconstructions").iterdir()) == [
        "mlp__fashion-mnist-sample__none__analytic__initial__given.pt"]


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_resume_without_a_readable_config_stops_with_one_line(tmp_path, cli, damage):
    out = tmp_path / "run"
    assert cli("evaluate", "--out", str(out), *TINY).returncode == 0
    before = (out / "summary.csv").read_text()
    config = out / "config.json"
    if damage == "truncated":  # a kill while config.json was rewritten
        config.write_text(config.read_text()[:100])
    else:
        config.unlink()
    err = one_line(cli("evaluate", "--out", str(out), *TINY, "--resume"))
    assert "config.json" in err
    assert (out / "summary.csv").read_text() == before  # the finished cell is still there


class Killed(BaseException):
    """What the monkeypatched commit raises: the process dies at that write."""


@pytest.mark.parametrize("kill_at", [1, 3, 5, 8])
def test_a_kill_at_any_write_loses_no_finished_cell(tmp_path, monkeypatch, reference, one_thread, kill_at):
    from precode import files

    out, commits = tmp_path / "run", []
    real = files._commit

    def commit(temporary, target):
        commits.append(Path(target).name)
        if len(commits) == kill_at:
            raise Killed(target)  # the new file is written in full under its temporary name, never renamed
        real(temporary, target)

    monkeypatch.setattr(files, "_commit", commit)
    with pytest.raises(Killed):
        run(grid(), out)
    finished_before = {tuple(str(r[k]) for k in CELL_FIELDS) for r in rows(out, "summary")}
    monkeypatch.setattr(files, "_commit", real)
    attacked = counting(monkeypatch)
    run(grid(), out, resume=True)
    assert not finished_before & set(attacked)  # no finished cell lost or recomputed
    for name in ("summary", "results", "training"):
        assert rows(out, name) == rows(reference["plain"], name), name


def test_resume_recovers_the_victim_rows_a_kill_cut_off(tmp_path, monkeypatch, reference, one_thread):
    out = run(grid(), tmp_path / "run")
    text = (out / "results.csv").read_text().splitlines(True)
    (out / "results.csv").write_text("".join(text[:3]))  # what a kill mid-rewrite left: 2 of 4 victim rows
    attacked = counting(monkeypatch)
    with pytest.warns(UserWarning, match=r"results\.csv"):
        run(grid(), out, resume=True)
    assert [key[3] for key in attacked] == ["ig"]  # the analytic cell kept its rows; ig lost both
    assert rows(out, "results") == rows(reference["plain"], "results")


def test_a_truncated_weights_or_reconstructions_file_is_reported_and_made_again(tmp_path, monkeypatch, reference,
                                                                              one_thread):
    g = grid(attacks=("ig",), trained=("none",))
    out = tmp_path / "run"
    real = runner_module.run_cells

    def stop_at_the_trained_cell(cells, *args, **kwargs):
        if cells[0].weights == "trained":
            raise KeyboardInterrupt
        return real(cells, *args, **kwargs)

    monkeypatch.setattr(runner_module, "run_cells", stop_at_the_trained_cell)
    with pytest.raises(KeyboardInterrupt):
        run(g, out)
    weights = next((out / "weights").glob("*.pt"))
    weights.write_bytes(weights.read_bytes()[:100])
    recon = next((out / "reconstructions").glob("*.pt"))
    recon.write_bytes(recon.read_bytes()[:50])
    monkeypatch.setattr(runner_module, "run_cells", real)
    attacked = counting(monkeypatch)
    with pytest.warns(UserWarning) as caught:
        run(g, out, resume=True)
    said = " ".join(str(w.message) for w in caught)
    assert weights.name in said and recon.name in said
    assert [key[4] for key in attacked] == ["initial", "trained"]  # the damaged cell, then the unfinished one
    for name in ("summary", "results", "training"):
        assert rows(out, name) == rows(reference["trained"], name), name


# -- Silent wrong ----------------------------------------------------------------------------------

def test_a_second_run_on_the_same_folder_stops_with_one_line_naming_the_holder(tmp_path, cli, monkeypatch):
    out = tmp_path / "run"
    args = ("evaluate", "--out", str(out), *TINY[:-1], "--attacks", "analytic,ig", "--no-progress", "--resume")
    real, second = runner_module.run_cells, []

    def run_cells(cells, *a, **k):
        if not second:
            second.append(None)
            second[0] = cli(*args)  # another run starts while the first attacks its first cell
        return real(cells, *a, **k)

    monkeypatch.setattr(runner_module, "run_cells", run_cells)
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    err = one_line(second[0])
    assert str(os.getpid()) in err and socket.gethostname() in err
    keys = [tuple(r[k] for k in CELL_FIELDS) for r in rows(out, "summary")]
    assert len(keys) == len(set(keys)) == 3 and len(rows(out, "results")) == 3  # every cell once (ig also trained)


def test_a_summary_without_its_final_newline_is_not_glued_to_the_next_row(tmp_path, monkeypatch, reference,
                                                                            one_thread):
    out, real = tmp_path / "run", runner_module.run_cells

    def stop_at_ig(cells, *args, **kwargs):
        if cells[0].attack == "ig":
            raise KeyboardInterrupt
        return real(cells, *args, **kwargs)

    monkeypatch.setattr(runner_module, "run_cells", stop_at_ig)
    with pytest.raises(KeyboardInterrupt):
        run(grid(), out)  # the analytic cell finished, ig not
    summary = out / "summary.csv"
    summary.write_text(summary.read_text().rstrip("\n"))  # saved by an editor that drops the final newline
    monkeypatch.setattr(runner_module, "run_cells", real)
    run(grid(), out, resume=True)  # appends ig's row
    assert rows(out, "summary") == rows(reference["plain"], "summary")


def test_a_cell_written_twice_is_never_read_as_one(tmp_path, monkeypatch, reference, one_thread):
    out = run(grid(), tmp_path / "run")
    for name in ("summary.csv", "results.csv"):  # what two runs without a lock appended
        lines = (out / name).read_text().splitlines(True)
        (out / name).write_text("".join(lines + [line for line in lines[1:] if ",ig," in line]))
    with pytest.raises(ValueError, match="more than once"):
        evaluation.GridResults(out).cell("mlp", "none", "ig")
    attacked = counting(monkeypatch)
    with pytest.warns(UserWarning, match="2 summary rows"):
        run(grid(), out, resume=True)
    assert [key[3] for key in attacked] == ["ig"]
    assert len(evaluation.GridResults(out).cell("mlp", "none", "ig")["ssim"]) == 2
    assert rows(out, "results") == rows(reference["plain"], "results")


def _damage(out: Path, kind: str) -> tuple[str, int]:
    """Damage one row of a finished run; returns the file and the line (1-based) damaged."""
    path = out / ("results.csv" if kind == "ssim out of range" else "summary.csv")
    lines = path.read_text().splitlines(True)
    header = lines[0].rstrip("\n").split(",")
    if kind == "truncated row":
        lines[-1] = lines[-1][: len(lines[-1]) // 2]
        line = len(lines)
    elif kind == "garbage line":
        lines.insert(2, "\x00\x01 this is not a row ;;;\n")
        line = 3
    elif kind == "ssim_mean out of range":
        cells = lines[1].rstrip("\n").split(",")
        cells[header.index("ssim_mean")] = "7.5"
        lines[1], line = ",".join(cells) + "\n", 2
    else:
        cells = lines[-1].rstrip("\n").split(",")
        cells[header.index("ssim")] = "-3"
        lines[-1], line = ",".join(cells) + "\n", len(lines)
    path.write_text("".join(lines))
    return path.name, line


@pytest.mark.parametrize("kind", ["truncated row", "garbage line", "ssim_mean out of range", "ssim out of range"])
def test_a_damaged_row_is_reported_with_its_line_and_only_its_cell_recomputed(tmp_path, monkeypatch, reference,
                                                                               one_thread, kind):
    out = run(grid(), tmp_path / "run")
    name, line = _damage(out, kind)
    with pytest.raises(ValueError, match=rf"{name}.*line {line}"):
        evaluation.GridResults(out)  # never read back as valid
    attacked = counting(monkeypatch)
    with pytest.warns(UserWarning, match=rf"{name}.*line {line}"):
        run(grid(), out, resume=True)
    assert len(attacked) == (0 if kind == "garbage line" else 1)
    for csv_name in ("summary", "results"):
        assert rows(out, csv_name) == rows(reference["plain"], csv_name)


def test_an_unreadable_store_entry_is_a_miss_said_once(tmp_path, recwarn):
    from precode.experiment_store import ExperimentStore

    store = ExperimentStore(tmp_path)
    store.put("whole", {"x": torch.ones(3)})
    good = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x04not a torch file")
    assert [store.get(k) for k in ("truncated", "empty", "garbage", "absent")] == [None] * 4
    assert torch.equal(store.get("whole")["x"], torch.ones(3))
    said = [str(w.message) for w in recwarn if "experiment store" in str(w.message)]
    assert len(said) == 1 and "truncated.pt" in said[0]


def test_an_overflowing_objective_is_reported_as_diverged_not_scored(cli):
    for attack, noise in (("idlg", "1e20"), ("ig", "1e19")):
        result = cli("attack", "--attack", attack, "--model", "mlp", "--data", "fashion-mnist-sample", "--images",
                     "2", "--iterations", "20", "--defense", f"gaussian:{noise}", "--json", "-")
        assert result.returncode == 0, result.stderr
        payload = json.loads(result.stdout)
        assert [r["status"] for r in payload["results"]] == ["diverged", "diverged"], attack
        assert all(r["ssim"] is None and r["psnr"] is None for r in payload["results"])
        assert payload["summary"]["diverged"] == 2 and payload["summary"]["ssim"] is None
        assert "diverged" in result.stderr
    fine = json.loads(cli("attack", "--attack", "ig", "--model", "mlp", "--data", "fashion-mnist-sample", "--images",
                          "2", "--iterations", "3", "--json", "-").stdout)
    assert [r["status"] for r in fine["results"]] == ["ok", "ok"] and fine["summary"]["diverged"] == 0


def test_a_cell_whose_victims_all_diverge_is_counted_and_stored_not_scored(tmp_path, one_thread):
    from precode.data import load_data
    from precode.evaluation.cells import score_cell
    from precode.evaluation.report import summarize_cell
    from precode.experiment import run_attack
    from precode.models import build_model

    g = grid(attacks=("idlg",))
    victims = load_data("fashion-mnist-sample", "test").first(2)
    model = build_model("mlp", victims.input_shape, victims.num_classes, seed=0)
    attacked = run_attack("idlg", model, victims, g.threat_model("none", "idlg"), defense="gaussian:1e20",
                          iterations=2)
    victim_rows = score_cell(attacked, victims, victims.images[:0], g.threshold)
    assert [r["status"] for r in victim_rows] == ["diverged", "diverged"]
    assert all(r["ssim"] is None and r["success"] == 0 for r in victim_rows)
    key = ("mlp", "fashion-mnist-sample", "gaussian:1e20", "idlg", "initial", "given")
    summary = summarize_cell(key, victim_rows, g, 1.0, {"test_accuracy": 0.5, "test_images": 16}, 0)
    assert summary["diverged"] == 2 and summary["ssim_mean"] is None and summary["attack_success_rate"] == 0
    assert "diverged" in evaluation.comparison_table([summary])
    with evaluation.RunFolder(tmp_path / "run", g) as folder:  # stored, and read back as such
        folder.add_cell([dict(zip(CELL_FIELDS, key), **r) for r in victim_rows], summary, attacked.images)
    assert evaluation.read_csv(tmp_path / "run" / "summary.csv")[0]["diverged"] == 2
    assert [r["status"] for r in evaluation.read_csv(tmp_path / "run" / "results.csv")] == ["diverged"] * 2
    assert len(evaluation.draw_figures(tmp_path / "run")) == 3  # figures without a score to draw: no crash


def test_training_on_an_npz_without_a_held_out_split_is_refused(tmp_path, cli):
    path = tmp_path / "mine.npz"
    np.savez(path, images=np.zeros((8, 8, 8), dtype=np.uint8), labels=np.arange(8) % 2)
    err = one_line(cli("train", "--model", "mlp", "--data", str(path), "--epochs", "1"))
    assert "test" in err and path.name in err


# -- One line for bad input, before any work ------------------------------------------------------

def _npz(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind.replace(' ', '-')}.npz"
    images = np.zeros((2, 8, 8), dtype=np.uint8)
    if kind == "object array":
        np.savez(path, images=np.array([images[0], "x"], dtype=object), labels=np.zeros(2, dtype=int))
    elif kind == "npy renamed":
        np.save(tmp_path / "plain.npy", images)
        (tmp_path / "plain.npy").rename(path)
    elif kind == "label 1e6":
        np.savez(path, images=images, labels=np.array([0, 1_000_000]))
    elif kind == "label 2^40":
        np.savez(path, images=images, labels=np.array([0, 2**40]))
    elif kind == "label over num_classes":
        np.savez(path, images=images, labels=np.array([0, 5]), num_classes=np.array(3))
    elif kind == "512x512x3":
        np.savez(path, images=np.zeros((1, 512, 512, 3), dtype=np.uint8), labels=np.zeros(1, dtype=int))
    return path


@pytest.mark.parametrize("kind", ["object array", "npy renamed", "label 1e6", "label 2^40", "label over num_classes",
                                  "512x512x3"])
def test_a_malformed_npz_is_one_line(tmp_path, cli, kind):
    path = _npz(tmp_path, kind)
    err = one_line(cli("attack", "--attack", "analytic", "--model", "mlp", "--data", str(path), "--images", "1"))
    assert ("(3, 512, 512)" if kind == "512x512x3" else path.name) in err


def test_an_npz_may_say_its_number_of_classes(tmp_path):
    from precode.data import load_data

    path = tmp_path / "c.npz"
    np.savez(path, images=np.zeros((2, 8, 8), dtype=np.uint8), labels=np.array([0, 1]), num_classes=np.array(10))
    assert load_data(path).num_classes == 10


def _no_work(monkeypatch, *targets):
    def fail(*a, **k):
        raise AssertionError("the command started working before it checked its input")

    for module, name in targets:
        monkeypatch.setattr(module, name, fail)


@pytest.mark.parametrize("args, option", [
    (["attack", "--attack", "ig", "--model", "mlp", "--data", "fashion-mnist-sample", "--images", "1", "--seed",
      "99999999999999999999"], "--seed"),
    (["attack", "--attack", "ig", "--model", "mlp", "--data", "fashion-mnist-sample", "--images", "1",
      "--iterations", "100000000"], "--iterations"),
    (["attack", "--attack", "ig", "--model", "mlp", "--data", "fashion-mnist-sample", "--images", "1",
      "--restarts", "100000000"], "--restarts"),
    (["attack", "--attack", "ig", "--model", "mlp", "--data", "fashion-mnist-sample", "--images", "1",
      "--figure", "x.nosuchformat"], "--figure"),
    (["attack", "--attack", "ig", "--model", "mlp", "--data", "fashion-mnist-sample", "--images", "1",
      "--json", "/nonexistent-folder/x.json"], "--json"),
    (["train", "--model", "mlp", "--data", "fashion-mnist-sample", "--seed", "99999999999999999999"], "--seed"),
    (["train", "--model", "mlp", "--data", "fashion-mnist-sample", "--json", "/nonexistent-folder/x.json"], "--json"),
    (["evaluate", "--out", "OUT", *TINY, "--seed", "99999999999999999999"], "--seed"),
    (["evaluate", "--out", "OUT", *TINY[:-5], "--victims", "100000000"], "--victims"),
])
def test_bad_numbers_and_paths_are_one_line_before_any_work(tmp_path, cli, monkeypatch, args, option):
    from precode.cli import attack as attack_cli
    from precode.cli import train as train_cli

    _no_work(monkeypatch, (attack_cli, "run_attack"), (train_cli, "build_model"), (runner_module, "train_model"))
    out = tmp_path / "out"
    err = one_line(cli(*[str(out) if a == "OUT" else a for a in args]))
    assert option in err
    assert not out.exists() or not any(out.iterdir())  # no half-made folder


def test_federate_checks_its_defense_before_starting_flower(cli, monkeypatch):
    from precode.cli import federate as federate_cli

    _no_work(monkeypatch, (federate_cli, "run_federation"))
    err = one_line(cli("federate", "--model", "mlp", "--data", "fashion-mnist", "--clients", "2", "--rounds", "1",
                       "--local-steps", "1", "--batch-size", "1", "--defense", "partial-gaussian:0.1"))
    assert "--precode" in err


# -- Clean shutdown ----------------------------------------------------------------------------------

class NotHandled(Exception):
    """Raised by the test's own SIGTERM handler: the command did not install one."""


@pytest.mark.parametrize("how, code", [("ctrl-c", 130), ("sigterm", 143)])
def test_evaluate_ends_on_a_signal_with_one_line_and_keeps_its_finished_cells(tmp_path, cli, monkeypatch, how,
                                                                             code):
    out = tmp_path / "run"
    args = ("evaluate", "--out", str(out), *TINY[:-1], "--attacks", "analytic,ig", "--no-progress")
    real = runner_module.run_cells

    def interrupted(cells, *a, **k):
        if cells[0].weights == "trained":  # the last of the three cells (ig, analytic, then ig on the trained MLP)
            if how == "ctrl-c":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs here
        return real(cells, *a, **k)

    def not_handled(signum, frame):
        raise NotHandled

    monkeypatch.setattr(runner_module, "run_cells", interrupted)
    previous = signal.signal(signal.SIGTERM, not_handled)  # never let a test's SIGTERM end pytest
    try:
        try:
            result = cli(*args)
        except KeyboardInterrupt:  # would end pytest itself
            pytest.fail("Ctrl-C escaped the command")
        err = one_line(result, code=code)
    finally:
        assert signal.signal(signal.SIGTERM, previous) is not_handled  # main() restored it
    assert "--resume" in err and str(out) in err
    assert [(r["attack"], r["weights"]) for r in rows(out, "summary")] == [("ig", "initial"), ("analytic", "initial")]
    monkeypatch.setattr(runner_module, "run_cells", real)
    assert cli(*args, "--resume").returncode == 0
    assert [r["weights"] for r in rows(out, "summary")] == ["initial", "initial", "trained"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_federate_ends_on_sigterm_within_seconds_and_stops_ray(tmp_path):
    """One test with Flower and Ray (about 20 s, most of it Ray's start-up): Ctrl-C and SIGTERM take
    the same path, and SIGTERM is the one Ray installs a handler of its own for."""
    pytest.importorskip("flwr")
    pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    env = {**os.environ, "PRECODE_PROFILE": "quick", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "precode", "federate", "--model", "mlp", "--data", "fashion-mnist-sample", "--clients",
         "2", "--rounds", "1000", "--local-steps", "1", "--batch-size", "1", "--attack", "none"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parent = psutil.Process(process.pid)
    seen: list = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:  # until Ray's workers run the clients
            seen = parent.children(recursive=True)
            if any("ray::" in " ".join(_cmdline(c)) for c in seen):
                break
            time.sleep(0.5)
        assert process.poll() is None, process.communicate()[1]
        time.sleep(1)  # the clients at work
        process.send_signal(signal.SIGTERM)
        start = time.monotonic()
        try:
            _out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("federate did not end within 30 s of SIGTERM")
        assert time.monotonic() - start < 15
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
        assert process.returncode == 143 and "Traceback" not in err, err
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        _gone, alive = psutil.wait_procs([p for p in seen if p.is_running()], timeout=10)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], [_cmdline(p) for p in alive]
    finally:  # whatever happened, nothing of this test's is left running
        for p in [*seen, parent]:
            with contextlib.suppress(psutil.Error):
                p.kill()


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except Exception:  # psutil: gone, a zombie, not ours
        return []


def test_an_exact_reconstructions_ssim_a_rounding_error_above_one_is_a_valid_row():
    from precode.evaluation.rows import check_row

    assert check_row({"ssim": 1.0000001192092896, "ssim_mean": 1.0000001}) is None  # float32 rounding
    assert "lies outside" in check_row({"ssim": 1.001})
