"""Faults a user or the machine causes: an unwritable output, a write that fails mid-run, ambiguous labels,
questions without answers in v1.1 data, an empty QA context, throughput of very short runs, a run failing
on bad data, a tokenize killed before it finished.  Each: the exit code, the one-line message, and what is
left on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli, read_jsonl, run_cli

pytestmark = pytest.mark.faults


def one_error(capsys_or_err, code_got: int, code: int, *needles) -> str:
    """The single ``bertkit: error`` line of stderr, after checking the exit code and the needles."""
    err = capsys_or_err if isinstance(capsys_or_err, str) else capsys_or_err.readouterr().err
    assert code_got == code, f"exit {code_got}, expected {code}: {err}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("bertkit: error")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ------------------------------------------------------------------------------------------------
# 1. Every path a command writes is checked before any work
# ------------------------------------------------------------------------------------------------

def _commands(mlm_model, classifier, corpus, cls_files, tmp_path):
    train, dev = cls_files
    qa_train = tmp_path / "qa.jsonl"
    qa_train.write_text(json.dumps({"question": "q", "context": "c a", "answers": "a"}) + "\n", encoding="utf-8")
    inp = tmp_path / "in.txt"
    inp.write_text("hello there\n", encoding="utf-8")
    return {
        "tokenize": (["tokenize", corpus, "--train-tokenizer"], "--output"),
        "pretrain-mlm": (["pretrain-mlm", "--data", corpus, "--train-tokenizer"], "--output"),
        "finetune-cls": (["finetune-cls", "--model", mlm_model, "--train", train], "--output"),
        "finetune-qa": (["finetune-qa", "--model", mlm_model, "--train", qa_train], "--output"),
        "evaluate": (["evaluate", "--model", classifier, "--data", dev], "--output"),
        "export": (["export", "--model", classifier], "--output"),
        "predict": (["predict", "--model", classifier, "--input", inp], "--output"),
        "sweep": (["sweep", "finetune-cls", "--model", mlm_model, "--train", train, "--output", tmp_path / "sweep",
                   "--param", "lr=log:1e-4:1e-3"], "--storage"),
    }


@pytest.mark.parametrize("command", ["tokenize", "pretrain-mlm", "finetune-cls", "finetune-qa", "evaluate", "export",
                                     "predict", "sweep"])
def test_unwritable_output_refused_before_any_work(capsys, tmp_path, mlm_model, classifier, corpus, cls_files,
                                                   command):
    args, flag = _commands(mlm_model, classifier, corpus, cls_files, tmp_path)[command]
    name = "out.jsonl" if command == "predict" else ("study.journal" if command == "sweep" else "out")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    before = tree(tmp_path)
    line = one_error(capsys, cli(*args, flag, blocker / name), 2, flag, str(blocker), "a file, not a directory")
    assert tree(tmp_path) == before, line  # nothing created: no output, lock or temp dir
    line = one_error(capsys, cli(*args, flag, f"/proc/bertkit-test/{name}"), 2, flag, "/proc")
    assert "does not accept new files" in line
    assert tree(tmp_path) == before
