"""``python -m precode attack``: its JSON contract, its figure and its one-line user errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PRECODE_PROFILE": "quick", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "precode", "attack", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def test_json_to_stdout_holds_only_the_results():
    code, out, err = finish(start("--attack", "ig", "--model", "lenet", "--data", "fashion-mnist-sample",
                                  "--images", "2", "--iterations", "5", "--json", "-"))
    assert code == 0, err
    payload = json.loads(out)  # nothing else on stdout
    assert set(payload) == {"config", "results", "summary"}
    assert payload["config"]["attack"] == "ig" and payload["config"]["iterations"] == 5
    assert [r["index"] for r in payload["results"]] == [0, 1]
    for r in payload["results"]:
        assert set(r) >= {"index", "label", "label_pred", "mse", "psnr", "ssim"}
    assert set(payload["summary"]) >= {"mse", "psnr", "ssim", "label_accuracy", "seconds"}
    assert "label accuracy" in err  # the readable table moved to stderr


def test_table_figure_and_exact_analytic_batches(tmp_path):
    figure = tmp_path / "attack.png"
    result = tmp_path / "result.json"
    code, out, err = finish(start("--attack", "analytic", "--model", "mlp", "--data", "fashion-mnist-sample",
                                  "--images", "4", "--batch-size", "2", "--json", str(result),
                                  "--figure", str(figure)))
    assert code == 0, err
    assert "index" in out and "mean" in out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads(result.read_text())
    assert payload["config"]["batch_size"] == 2
    assert min(r["psnr"] for r in payload["results"]) > 60  # batches of two are separated exactly
    first, second = payload["results"][:2], payload["results"][2:]
    assert all(r["label_pred"] == r["label"] for r in first)  # two distinct labels: both read off
    assert [r["label"] for r in second] == [1, 1]  # a repeated label: the rule finds it once only
    assert payload["summary"]["label_accuracy"] == 0.75


def check_one_line(code: int, out: str, err: str, name: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, name
    assert "Traceback" not in err, name
    assert len(lines) == 1 and lines[0].startswith("error:"), (name, err)
    assert out == "", name


def bad_npz(tmp_path: Path) -> Path:
    path = tmp_path / "bad.npz"
    np.savez(path, pictures=np.zeros((2, 8, 8), np.uint8))
    return path


def good_npz(tmp_path: Path) -> Path:
    path = tmp_path / "good.npz"
    np.savez(path, images=np.zeros((2, 8, 8), np.uint8), labels=np.array([0, 1]))
    return path


COMMON = ["--data", "fashion-mnist-sample", "--images", "2"]
# The entry point itself (python -m precode), in subprocesses: one line and exit status 2, no traceback.
SUBPROCESS_CASES = {
    "unknown attack": ["--attack", "magic", "--model", "mlp", *COMMON],
    "npz without arrays": ["--attack", "ig", "--model", "mlp", "--data", "BAD_NPZ", "--images", "1"],
}
# The same function in process (a Python with torch costs about 5 s to start).
IN_PROCESS_CASES = {
    "too many images": ["--attack", "ig", "--model", "mlp", "--data", "fashion-mnist-sample", "--images", "999999"],
    "analytic on a cnn": ["--attack", "analytic", "--model", "cnn", *COMMON],
    "unknown model": ["--attack", "ig", "--model", "resnet", *COMMON],
    "unknown data": ["--attack", "ig", "--model", "mlp", "--data", "imagenet", "--images", "2"],
    "batch does not divide": ["--attack", "ig", "--model", "mlp", *COMMON, "--batch-size", "3"],
    "photos cannot train": ["--attack", "ig", "--model", "cnn", "--data", "photos", "--images", "1",
                            "--trained-epochs", "1"],
    "npz cannot train": ["--attack", "ig", "--model", "mlp", "--data", "GOOD_NPZ", "--images", "1",
                         "--trained-epochs", "2"],
    "not a number": ["--attack", "ig", "--model", "mlp", "--data", "photos", "--images", "two"],
    "missing argument": ["--attack", "ig", "--model", "mlp", "--images", "2"],
    "zero iterations": ["--attack", "ig", "--model", "mlp", *COMMON, "--iterations", "0"],
}


def test_user_errors_are_one_line_without_traceback(tmp_path):
    npz = str(bad_npz(tmp_path))
    running = {name: start(*[npz if a == "BAD_NPZ" else a for a in args]) for name, args in SUBPROCESS_CASES.items()}
    for name, process in running.items():
        check_one_line(*finish(process), name)


@pytest.mark.parametrize("name", sorted(IN_PROCESS_CASES))
def test_more_user_errors_in_process(name, tmp_path, cli):
    files = {"BAD_NPZ": str(bad_npz(tmp_path)), "GOOD_NPZ": str(good_npz(tmp_path))}
    proc = cli("attack", *[files.get(a, a) for a in IN_PROCESS_CASES[name]])
    check_one_line(proc.returncode, proc.stdout, proc.stderr, name)


def test_the_seed_fixes_precode_runs(capsys):
    from precode.cli import main

    args = ["attack", "--attack", "ig", "--model", "mlp", "--precode", "--data", "fashion-mnist-sample",
            "--images", "2", "--iterations", "2", "--seed", "3", "--json", "-"]
    runs = []
    for _ in range(2):
        assert main(args) == 0
        runs.append([r["mse"] for r in json.loads(capsys.readouterr().out)["results"]])
    assert runs[0] == runs[1]  # the bottleneck's weights, the client's noise and the attack's all come from --seed


def test_a_bugs_value_error_keeps_its_traceback_and_bad_input_is_one_line(monkeypatch, capsys):
    from precode.cli import attack as cli_attack
    from precode.cli import main
    from precode.errors import InputError

    args = ["attack", "--attack", "analytic", "--model", "mlp", "--data", "photos", "--images", "1"]

    def bug(_args):
        raise ValueError("too many values to unpack")  # what a bug looks like, not bad input

    monkeypatch.setattr(cli_attack, "run", bug)
    with pytest.raises(ValueError, match="too many values"):
        main(args)

    def bad_input(_args):
        raise InputError("unknown thing 'x'; choose 'y'")

    monkeypatch.setattr(cli_attack, "run", bad_input)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: unknown thing 'x'; choose 'y'"
    assert issubclass(InputError, ValueError)  # library callers may still catch ValueError


def test_main_gives_the_caller_its_thread_count_back(capsys, monkeypatch):
    import torch

    from precode.cli import main

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # so that the command sets one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(["attack", "--attack", "analytic", "--model", "mlp", "--data", "fashion-mnist-sample",
                     "--images", "1"]) == 0  # the command computes with one thread
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
