"""Interruption and resume: a run killed (SIGKILL) right after a checkpoint and run again ends with the
weights and eval metrics of a run never interrupted, in one process and under torchrun; a dead peer ends
the survivors with one line; ``torchrun --max-restarts`` recovers by itself; the time budget's state
survives a resume."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import TINY, cli, dead_pid, read_jsonl
from test_qa import synthetic_squad

TORCHRUN = Path(sys.executable).parent / "torchrun"
needs_torchrun = pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not found next to the interpreter")

# Runs bertkit's CLI with one more callback that SIGKILLs its own process (on the process of rank KILL_RANK),
# once: right after the checkpoint of step KILL_AT is saved (KILL_ON=save), or right after step KILL_AT is
# logged (KILL_ON=log: the steps since the last checkpoint are lost).  A crash at a known point.
KILLER = """
import os, signal, sys
from pathlib import Path
from transformers import TrainerCallback
import bertkit.training as training

class Kill(TrainerCallback):
    def kill(self, state):
        marker = Path(os.environ["KILL_MARKER"])
        if (state.global_step >= int(os.environ["KILL_AT"]) and not marker.exists()
                and os.environ.get("RANK", "0") == os.environ.get("KILL_RANK", "0")):
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    def on_save(self, args, state, control, **kw):
        if os.environ["KILL_ON"] == "save":
            self.kill(state)

    def on_log(self, args, state, control, **kw):
        if os.environ["KILL_ON"] == "log":
            self.kill(state)

_default = training.default_callbacks
training.default_callbacks = lambda *a: [*_default(*a), Kill()]
from bertkit.cli import main
main(sys.argv[1:])
"""


def _killer(tmp_path: Path, at: int, rank: int = 0, on: str = "save") -> tuple[Path, dict]:
    script = tmp_path / "killer.py"
    script.write_text(KILLER, encoding="utf-8")
    env = dict(os.environ, KILL_AT=str(at), KILL_RANK=str(rank), KILL_ON=on, KILL_MARKER=str(tmp_path / "killed"),
               OMP_NUM_THREADS="1")
    return script, env


@contextlib.contextmanager
def one_thread():
    """In-process runs on one thread, as the killed subprocess (OMP_NUM_THREADS=1): float sums depend on the
    thread count, and the comparison is of the same computation."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _weights_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)


def _curves(d: Path) -> list[tuple]:
    return [(r["step"], r.get("loss"), r.get("eval_loss")) for r in read_jsonl(d / "training_log.jsonl")
            if "loss" in r or "eval_loss" in r]


def _metrics(d: Path) -> dict:
    return json.loads((d / "metrics.json").read_text())


def _eval_metrics(d: Path) -> dict:
    skip = ("runtime", "per_second", "seconds")
    return {k: v for k, v in _metrics(d).items() if k.startswith("eval_") and not any(s in k for s in skip)}


@pytest.fixture(scope="module")
def qa_files(workdir) -> tuple[Path, Path]:
    return synthetic_squad(workdir / "resume_qa_train.json", 24), synthetic_squad(workdir / "resume_qa_dev.json", 8, 1)


def _command(kind: str, tokenized, mlm_model, cls_files, qa_files, classifier=None) -> list:
    if kind == "pretrain-mlm":
        return ["pretrain-mlm", "--data", tokenized, "--max-steps", 12, "--batch-size", 8, "--lr", "1e-3",
                "--save-steps", 4, "--logging-steps", 2, "--eval-fraction", 0.05, *TINY]
    common = ["--model", mlm_model, "--max-steps", 12, "--batch-size", 8, "--lr", "1e-3", "--max-seq-length", 32,
              "--eval-steps", 4, "--logging-steps", 2, "--grad-accum", 2]
    if kind == "finetune-cls":
        return ["finetune-cls", "--train", cls_files[0], "--validation", cls_files[1], *common]
    if kind == "distill":  # common's settings, with a fine-tuned classifier as the teacher for --model
        return ["distill", "--teacher", classifier, *common[2:], "--train", cls_files[0], "--validation",
                cls_files[1], "--student-layers", 1]
    return ["finetune-qa", "--train", qa_files[0], "--validation", qa_files[1], "--doc-stride", 8,
            "--max-question-length", 12, *common]


@pytest.mark.parametrize("kind", ["finetune-cls", "finetune-qa", "pretrain-mlm", "distill"])
def test_killed_and_rerun_equals_uninterrupted(tmp_path, kind, tokenized, mlm_model, cls_files, qa_files, classifier):
    """Killed at step 6 of 12, after checkpoint-4 (the model, optimizer, scheduler and RNG states of step 4
    are all that survive), and run again: the same final weights, eval metrics and training log as a run
    never interrupted (dropout, data order, bertkit's batching and the MLM masks all replay; distill reads
    the teacher's outputs the killed run kept instead of running the teacher again)."""
    args = _command(kind, tokenized, mlm_model, cls_files, qa_files, classifier)
    script, env = _killer(tmp_path, at=6, on="log")
    ref = tmp_path / "ref"
    with one_thread():
        assert cli(*args, "--output", ref, "--quiet") == 0
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, str(script), *map(str, args), "--output", str(out), "--quiet"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == -9, p.stderr[-2000:]  # died by SIGKILL
    assert any(r["step"] == 6 for r in read_jsonl(out / "training_log.jsonl"))
    assert not (out / "metrics.json").exists() and not (out / "model.safetensors").exists()
    assert sorted(c.name for c in (out / "checkpoints").iterdir()) == ["checkpoint-4"]
    assert (kind == "distill") == (out / "teacher_outputs" / "key.json").is_file()
    with one_thread():
        assert cli(*args, "--output", out, "--quiet") == 0  # the same command again: --resume auto
    steps = [r["step"] for r in read_jsonl(out / "training_log.jsonl") if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 12, steps  # went on after step 4, did not start over
    assert _curves(out) == _curves(ref)  # the log too: the killed run's steps past the checkpoint dropped
    assert _weights_diff(ref, out) <= 1e-6
    assert _eval_metrics(out) == _eval_metrics(ref) and _eval_metrics(ref)
    assert _metrics(out)["steps"] == 12
    if kind == "distill":
        assert _metrics(ref)["teacher_outputs"] == "computed" and _metrics(out)["teacher_outputs"] == "reused"
        assert not (out / "teacher_outputs").exists()


def test_checkpoint_being_written_is_never_picked(tmp_path):
    """A checkpoint without its trainer_state.json, or with one cut short, was being written when its
    run died: the newest complete one is resumed from."""
    from bertkit.outputs import find_checkpoint

    ck = tmp_path / "checkpoints"
    for step, state in ((4, "{}"), (8, None), (12, '{"global_st')):
        (ck / f"checkpoint-{step}").mkdir(parents=True)
        if state is not None:
            (ck / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert find_checkpoint(tmp_path) == ck / "checkpoint-4"


def test_time_budget_state_carries_across_a_resume():
    """The budget's clock, refit cadence and fitted schedule are saved with each checkpoint and taken up
    on resume: the learning rate after the resume is that of the fitted schedule, not the original."""
    import torch
    from transformers import TrainerControl, TrainerState, get_linear_schedule_with_warmup

    from bertkit.callbacks import BUDGET_STATE, Stopper, refit_schedule

    def scheduler():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return get_linear_schedule_with_warmup(opt, num_warmup_steps=10, num_training_steps=1000)

    args = SimpleNamespace(world_size=1, load_best_model_at_end=False, eval_strategy="no")
    first, sched = Stopper("1h", warmup_ratio=0.1), scheduler()
    state = TrainerState(global_step=0, max_steps=1000)
    first.on_train_begin(args, state, TrainerControl(), lr_scheduler=sched)
    first.fitted_steps = state.max_steps = 200  # as a fit at some step would leave them
    refit_schedule(sched, 200, 0.1)
    state.global_step = 50
    first.on_step_end(args, state, TrainerControl(), lr_scheduler=sched)
    saved = json.loads(json.dumps(state.stateful_callbacks[BUDGET_STATE]))  # through trainer_state.json
    assert saved["fitted_steps"] == 200 and saved["warmup_steps"] == 10 and saved["elapsed_s"] >= 0

    resumed, sched2 = Stopper("1h", warmup_ratio=0.1), scheduler()
    state2 = TrainerState(global_step=50, max_steps=1000, stateful_callbacks={BUDGET_STATE: saved})
    resumed.on_train_begin(args, state2, TrainerControl(), lr_scheduler=sched2)
    assert state2.max_steps == 200 and resumed.fitted_steps == 200 and resumed.orig_max_steps == 1000
    assert [f(120) for f in sched2.lr_lambdas] == [f(120) for f in sched.lr_lambdas]
    assert resumed.clock_before == saved["elapsed_s"] and resumed.next_fit == saved["next_fit"]
    # without a budget, a saved budget state is ignored
    plain = Stopper(None)
    state3 = TrainerState(global_step=50, max_steps=1000, stateful_callbacks={BUDGET_STATE: saved})
    plain.on_train_begin(args, state3, TrainerControl(), lr_scheduler=scheduler())
    assert state3.max_steps == 1000


def _torchrun(*args, env, restarts: int, port: int, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([str(TORCHRUN), "--nproc_per_node", "2", "--max-restarts", str(restarts),
                           "--master_port", str(port), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def _mlm_2proc(tokenized) -> list:
    return ["pretrain-mlm", "--data", tokenized, "--max-steps", 16, "--batch-size", 4, "--save-steps", 4,
            "--logging-steps", 4, "--eval-fraction", 0.05, *TINY]


@needs_torchrun
def test_torchrun_rank_killed_restarts_and_ends_as_uninterrupted(tmp_path, tokenized):
    """torchrun --max-restarts 1: the process of rank 1 is killed after checkpoint-8; torchrun restarts both,
    they resume from checkpoint-8 and finish with the weights of a 2-process run never interrupted."""
    args = _mlm_2proc(tokenized)
    script, env = _killer(tmp_path, at=8, rank=1)
    ref = tmp_path / "ref"
    p = _torchrun("-m", "bertkit", *args, "--output", ref, "-q", env=env, restarts=0, port=29541)
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "run"
    p = _torchrun(script, *args, "--output", out, env=env, restarts=1, port=29542)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "killed").exists() and "Resuming from" in p.stderr
    assert _metrics(out)["steps"] == 16
    assert _weights_diff(ref, out) <= 1e-6
    assert _metrics(out)["eval_loss"] == _metrics(ref)["eval_loss"]


@needs_torchrun
def test_dead_peer_ends_the_survivor_in_one_line(tmp_path, tokenized):
    """torchrun --max-restarts 0: rank 1 dies after checkpoint-8; rank 0 ends with one line naming rank 1
    and the checkpoint to resume from: no raw gloo error, no promise of a checkpoint it cannot save."""
    script, env = _killer(tmp_path, at=8, rank=1)
    out = tmp_path / "run"
    p = _torchrun(script, *_mlm_2proc(tokenized), "--output", out, env=env, restarts=0, port=29543)
    assert p.returncode != 0
    ours = [line for line in p.stderr.splitlines() if line.startswith("bertkit:")]
    assert len(ours) == 1, ours
    assert "rank 1" in ours[0] and str(out / "checkpoints" / "checkpoint-8") in ours[0], ours[0]
    assert "GLHF" not in p.stderr and "Connection reset" not in p.stderr and "saving a checkpoint" not in p.stderr
    assert not (out / "metrics.json").exists()


def test_peer_lost_message_names_the_dead_rank_and_the_checkpoint(tmp_path):
    import socket

    from bertkit.distributed import is_peer_failure
    from bertkit.training import peer_lost_message

    host = socket.gethostname()
    (tmp_path / "checkpoints" / "checkpoint-8").mkdir(parents=True)
    (tmp_path / "checkpoints" / "checkpoint-8" / "trainer_state.json").write_text("{}")
    msg = peer_lost_message(tmp_path, [(host, os.getpid()), (host, dead_pid())], wait_s=0)
    assert msg.startswith("the process of rank 1 ") and str(tmp_path / "checkpoints" / "checkpoint-8") in msg
    assert "\n" not in msg
    # a peer on another host (or none found dead): no rank is guessed; no checkpoint yet: none is promised
    msg = peer_lost_message(tmp_path / "empty", [(host, os.getpid()), ("elsewhere", 1)], wait_s=0)
    assert msg.startswith("a peer process ") and "no checkpoint was complete yet" in msg
    assert is_peer_failure(RuntimeError("[../gloo/transport/tcp/pair.cc:537] Read error: Connection reset by peer"))
    assert not is_peer_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_peer_failure(ValueError("Connection reset by peer"))
