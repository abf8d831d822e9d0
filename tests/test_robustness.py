"""Distributed runs, interruption and resume, precision, no network."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, read_jsonl, run_cli

TORCHRUN = Path(sys.executable).parent / "torchrun"


def _losses(path: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(path) if "loss" in r}


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not found next to the interpreter")
def test_torchrun_two_processes_cpu(tmp_path, tokenized, cls_files, mlm_model):
    """2 processes (gloo): outputs written once by the main process, logged loss equals the
    single-process loss on the same global batch (not multiplied by the number of processes)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    common = ["--data", tokenized, "--max-steps", 6, "--logging-steps", 1, "--eval-fraction", 0.05, *TINY]
    single = tmp_path / "single"
    run_cli("pretrain-mlm", "--output", single, "--batch-size", 8, *common, "-q")
    dist = tmp_path / "dist"
    p = subprocess.run([str(TORCHRUN), "--nproc_per_node", "2", "--master_port", "29533", "-m", "bertkit",
                        "pretrain-mlm", "--output", str(dist), "--batch-size", "4", *map(str, common)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count("== bertkit pretrain-mlm ==") == 1  # one summary, from the main process
    metrics = json.loads((dist / "metrics.json").read_text())
    assert metrics["steps"] == 6
    single_m = json.loads((single / "metrics.json").read_text())
    assert metrics["train_tokens"] == single_m["train_tokens"]  # both saw the same global batch size
    ls, ld = _losses(single / "training_log.jsonl"), _losses(dist / "training_log.jsonl")
    assert set(ls) == set(ld)
    for step in ls:
        assert 0.9 < ld[step] / ls[step] < 1.1, (step, ld[step], ls[step])
    assert len(read_jsonl(dist / "training_log.jsonl")) == len(read_jsonl(single / "training_log.jsonl"))
    # finetune-cls under accelerate launch (2 CPU processes)
    train, dev = cls_files
    out = tmp_path / "cls"
    accel = [str(TORCHRUN.parent / "accelerate"), "launch", "--config_file",
             str(ROOT / "recipes" / "accelerate" / "cpu-2proc.yaml"), "--main_process_port", "29534", "-m", "bertkit"]
    p = subprocess.run([*accel, "finetune-cls", "--model", str(mlm_model), "--train", str(train),
                        "--validation", str(dev), "--output", str(out), "--epochs", "1", "--batch-size", "8",
                        "--max-seq-length", "32"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert "eval_accuracy" in m
    first = [r for r in read_jsonl(out / "training_log.jsonl") if "loss" in r][0]
    assert first["loss"] < 1.5  # ~ln(2) for two labels; a doubled loss would be ~1.4 and up


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not found next to the interpreter")
def test_torchrun_time_budget_stops_every_process_together(tmp_path, tokenized):
    """Each process reads its own clock; unless they agree, one stops (or refits the learning-rate
    schedule) a step before the other and the run hangs in a collective."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "budget"
    p = subprocess.run([str(TORCHRUN), "--nproc_per_node", "2", "--master_port", "29535", "-m", "bertkit",
                        "pretrain-mlm", "--data", str(tokenized), "--output", str(out), "--batch-size", "4",
                        "--epochs", "1000", "--time-budget", "12s", "--logging-steps", "1", "--eval-fraction", "0.05",
                        *map(str, TINY)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["stopped_by_time_budget"] is True and m["steps"] > 10, m
    assert 10 < m["train_seconds"] < 60  # the fitted schedule may end a step before the clock


def test_time_budget_reported_only_when_it_ends_the_run(tmp_path, tokenized):
    """The run ends on the clock or where the schedule fitted to it ends (both are the budget's stop);
    a --max-steps that comes first is not."""
    common = ["--data", tokenized, "--batch-size", 8, "--logging-steps", 50, "--eval-fraction", 0.05, *TINY, "-q"]
    run_cli("pretrain-mlm", "--output", tmp_path / "clock", "--epochs", 1000, "--time-budget", "6s", *common)
    m = json.loads((tmp_path / "clock" / "metrics.json").read_text())
    assert m["stopped_by_time_budget"] is True and 5 < m["train_seconds"] < 30, m
    # a budget far beyond what --max-steps needs, so a loaded machine cannot make the clock come first
    run_cli("pretrain-mlm", "--output", tmp_path / "steps", "--max-steps", 40, "--time-budget", "30m", *common)
    m = json.loads((tmp_path / "steps" / "metrics.json").read_text())
    assert m["stopped_by_time_budget"] is False and m["steps"] == 40, m


def _start(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "bertkit", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _wait_for(path: Path, proc, timeout=240):
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.2)
    time.sleep(0.5)  # let the checkpoint finish writing


def test_kill_and_resume(tmp_path, tokenized):
    out = tmp_path / "run"
    args = ["pretrain-mlm", "--data", tokenized, "--output", out, "--max-steps", 150, "--batch-size", 8,
            "--save-steps", 20, "--save-total-limit", 2, "--logging-steps", 10, "--eval-fraction", 0, *TINY]
    proc = _start(args)
    _wait_for(out / "checkpoints" / "checkpoint-20" / "trainer_state.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists()  # no final model after a crash
    done = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*"))
    assert done and done[-1] < 150
    before = len(read_jsonl(out / "training_log.jsonl"))
    p = run_cli(*args)  # a hang is run_cli's timeout, not a wall-clock assertion (CI machines are shared)
    assert "Resuming from" in p.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 150
    assert (out / "model.safetensors").exists()
    resumed = [r["step"] for r in read_jsonl(out / "training_log.jsonl")[before:] if "loss" in r]
    assert resumed[0] > done[-1], f"the second run must continue after step {done[-1]}, not restart: {resumed[:3]}"


def test_sigterm_saves_and_exits_143(tmp_path, tokenized):
    out = tmp_path / "run"
    args = ["pretrain-mlm", "--data", tokenized, "--output", out, "--max-steps", 100000, "--batch-size", 8,
            "--save-steps", 10000, "--logging-steps", 10, "--eval-fraction", 0, *TINY]
    proc = _start(args)
    _wait_for(out / "training_log.jsonl", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "Resume with:" in err and "pretrain-mlm --data" in err
    assert list((out / "checkpoints").glob("checkpoint-*"))
    assert not (out / "metrics.json").exists()


def test_bf16_on_cpu(tmp_path, tokenized):
    out = tmp_path / "bf16"
    run_cli("pretrain-mlm", "--data", tokenized, "--output", out, "--max-steps", 3, "--batch-size", 4,
            "--precision", "bf16", "-q", *TINY)
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3
    saved = (out / "bertkit_config.yaml").read_text()
    assert "precision: bf16" in saved


def test_no_network_needed(tmp_path, corpus, cls_files):
    """The whole flow runs with sockets blocked (a sitecustomize makes any connect() fail)."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import socket\n"
        "def _deny(*a, **k):\n    raise OSError('network access attempted during a bertkit test')\n"
        "socket.socket.connect = _deny\nsocket.socket.connect_ex = _deny\nsocket.create_connection = _deny\n")
    env = {"PYTHONPATH": str(block)}
    tok = tmp_path / "tok"
    run_cli("tokenize", corpus, "--output", tok, "--train-tokenizer", "--vocab-size", 200, "--max-seq-length", 32,
            "-q", env=env)
    mlm = tmp_path / "mlm"
    run_cli("pretrain-mlm", "--data", tok, "--output", mlm, "--max-steps", 2, "--batch-size", 4, "-q", *TINY, env=env)
    train, dev = cls_files
    cls = tmp_path / "cls"
    run_cli("finetune-cls", "--model", mlm, "--train", train, "--validation", dev, "--output", cls, "--max-steps", 2,
            "--batch-size", 8, "--max-seq-length", 32, "-q", env=env)
    p = run_cli("predict", "--model", cls, "--input", "-", input="great\n", env=env)
    assert json.loads(p.stdout)["label"] in ("good", "bad")
