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


# ------------------------------------------------------------------------------------------------
# 3. Labels written two ways are refused unless --labels names them
# ------------------------------------------------------------------------------------------------

def _labelled(path: Path, labels: list[str]) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(24):
            w.writerow([f"the place was {'great' if i % 2 else 'awful'} {i}", labels[i % len(labels)]])
    return path


@pytest.mark.parametrize("labels, needles", [
    (["1", "pos", "0", "neg"], ["mixes integer ids ('0', '1') and names ('neg', 'pos')"]),
    (["pos", "Pos", " pos", "neg"], ["differ only by case or spacing", "' pos' / 'Pos' / 'pos'"]),
])
def test_ambiguous_labels_refused(capsys, tmp_path, mlm_model, labels, needles):
    train = _labelled(tmp_path / "train.csv", labels)
    out = tmp_path / "out"
    one_error(capsys, cli("finetune-cls", "--model", mlm_model, "--train", train, "--output", out, "-q"), 1,
              "label column 'label'", "--labels FILE", *needles)
    assert not out.exists()  # (7) nothing left: the dir the run created is removed


def test_labels_file_settles_ids_mixed_with_names(tmp_path):
    from bertkit.errors import DataError
    from bertkit.labels import LabelSpace, ambiguous_labels

    assert ambiguous_labels(["neg", "pos"]) is None and ambiguous_labels(["0", "1", "2"]) is None
    with pytest.raises(DataError, match="mixes integer ids"):
        LabelSpace.from_values(["1", "pos", "0", "neg"])
    names = tmp_path / "labels.txt"
    names.write_text("neg\npos\n")
    space = LabelSpace.from_values(["1", "pos", "0", "neg"], labels_file=str(names))
    assert space.encode(["1", "pos", "0", "neg"]) == [1, 1, 0, 0]


# ------------------------------------------------------------------------------------------------
# 7. A run failing on bad data leaves no output holding only its config
# ------------------------------------------------------------------------------------------------

def test_failed_runs_leave_no_output(capsys, tmp_path, mlm_model, cls_files):
    train, _ = cls_files
    out = tmp_path / "cls"
    one_error(capsys, cli("finetune-cls", "--model", mlm_model, "--train", train, "--text-column", "nope",
                          "--output", out, "-q"), 1, "'nope'")
    assert not out.exists()
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"paragraphs": [{"context": "x"', encoding="utf-8")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    for target in (tmp_path / "qa", mine / "qa"):
        one_error(capsys, cli("finetune-qa", "--model", mlm_model, "--train", bad, "--output", target, "-q"), 1,
                  "bad.json")
        assert not target.exists()
    empty = tmp_path / "empty"  # a dir the user made stays, emptied of what the run wrote
    empty.mkdir()
    one_error(capsys, cli("finetune-qa", "--model", mlm_model, "--train", bad, "--output", empty, "-q"), 1)
    assert empty.is_dir() and tree(empty) == set()
    assert (mine / "notes.txt").read_text() == "keep"
