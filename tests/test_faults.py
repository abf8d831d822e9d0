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


# ------------------------------------------------------------------------------------------------
# 2. A write that fails mid-run (file-size limit, full disk): one line naming the path, nothing complete
# ------------------------------------------------------------------------------------------------

def limited(*args, kib: int = 100) -> subprocess.CompletedProcess:
    """``bertkit ARGS`` under ``ulimit -f`` (Python ignores SIGXFSZ, so a write past it fails with EFBIG)."""
    import shlex

    cmd = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "bertkit", *args])
    return subprocess.run(["bash", "-c", f"ulimit -f {kib}; exec {cmd}"], capture_output=True, text=True, timeout=300)


def test_predict_output_past_the_file_size_limit(tmp_path, classifier):
    inp = tmp_path / "many.txt"
    inp.write_text("".join(f"the place was great and the food was wonderful {i}\n" for i in range(150)))
    out = tmp_path / "preds" / "p.jsonl"
    out.parent.mkdir()
    p = limited("predict", "--model", classifier, "--input", inp, "--output", out, "-q", kib=8)
    one_error(p.stderr, p.returncode, 1, f"cannot write {out}", "file too large")
    assert tree(out.parent) == set()  # neither the file nor its temp file


def test_finetune_cls_model_past_the_file_size_limit(tmp_path, mlm_model, cls_files):
    train, dev = cls_files
    out = tmp_path / "cls"
    p = limited("finetune-cls", "--model", mlm_model, "--train", train, "--validation", dev, "--output", out,
                "--max-steps", 1, "--batch-size", 8, "--max-seq-length", 32, "-q")
    one_error(p.stderr, p.returncode, 1, f"cannot write {out}", "file too large")
    left = tree(out)
    assert "metrics.json" not in left and "config.json" not in left and "model.safetensors" not in left, left
    from bertkit.outputs import find_checkpoint

    assert find_checkpoint(out) is None  # the half-saved checkpoint is never taken for a complete one


def test_final_model_write_out_of_room_leaves_nothing(tmp_path):
    import errno

    from bertkit.errors import WriteError
    from bertkit.outputs import write_final

    def save(tmp: Path):
        (tmp / "model.safetensors").write_bytes(b"half")
        raise RuntimeError(f"Error while serializing: I/O error: {os.strerror(errno.ENOSPC)} (os error 28)")

    with pytest.raises(WriteError, match=f"cannot write {tmp_path}: no space left"):
        write_final(tmp_path, save)
    assert tree(tmp_path) == set()
    with pytest.raises(ValueError):  # anything else is not taken for a full disk
        write_final(tmp_path, lambda tmp: (_ for _ in ()).throw(ValueError("bad")))
