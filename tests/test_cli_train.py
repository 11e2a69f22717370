"""``python -m precode train``: JSON output, the readable table and one-line user errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from precode.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, timeout=120):
    # One thread: on a small shared CPU, two threads of tiny ops mostly wait for each other.
    env = dict(os.environ, PRECODE_PROFILE="quick", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "precode", "train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_json_to_stdout_is_the_only_output_and_has_the_keys():
    proc = _run("--model", "lenet", "--data", "fashion-mnist-sample", "--epochs", "1",
                "--defense", "dp:clip=1.0,noise=1.0", "--seed", "0", "--json", "-")
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = json.loads(proc.stdout)  # nothing but the JSON on stdout
    assert set(payload) == {"config", "history", "summary"}
    config = payload["config"]
    assert config["model"] == "lenet" and config["defense"] == "dp:clip=1.0,noise=1.0"
    assert config["train_images"] == 10_000 and config["test_images"] == 10_000  # the embedded sample
    assert config["train_subset"] == 10_000 and config["profile"] == "quick"
    assert config["delta"] == 1e-5
    (entry,) = payload["history"]
    assert set(entry) >= {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    summary = payload["summary"]
    assert set(summary) >= {"test_accuracy", "seconds", "epsilon"}
    assert 0 <= summary["test_accuracy"] <= 1 and summary["seconds"] > 0 and 0 < summary["epsilon"] < 100


def test_table_and_json_file_in_process(tmp_path, capsys, one_thread):
    target = tmp_path / "run.json"
    code = main(["train", "--model", "lenet", "--precode", "--data", "fashion-mnist-sample", "--epochs", "1",
                 "--defense", "prune:0.9", "--json", str(target)])
    assert code == 0
    out = capsys.readouterr().out
    assert "epoch" in out and "final test accuracy" in out and "prune:0.9" in out
    payload = json.loads(target.read_text())
    assert payload["config"]["precode"] is True and payload["config"]["defense_params"] == {"fraction": 0.9}
    assert "epsilon" not in payload["summary"]


@pytest.mark.parametrize("args, problem", [
    (["--model", "mlp", "--data", "fashion-mnist-sample", "--defense", "gaussian:-1"], "must be >= 0"),
    (["--model", "mlp", "--data", "fashion-mnist-sample", "--defense", "blur"], "unknown defense"),
    (["--model", "resnet", "--data", "fashion-mnist-sample"], "unknown model"),
    (["--model", "mlp", "--data", "imagenet"], "unknown data set"),
    (["--model", "mlp", "--data", "fashion-mnist-sample", "--epochs", "0"], "--epochs must be at least 1"),
    (["--model", "mlp", "--data", "photos", "--epochs", "1"], "photos"),
    (["--data", "fashion-mnist-sample"], "--model is required"),
])
def test_user_errors_are_one_line(args, problem, cli):
    proc = cli("train", *args)  # in process (tests/test_cli_attack.py checks the entry point in subprocesses)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and problem in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
