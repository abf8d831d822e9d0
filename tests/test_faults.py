"""Faults a user or the machine causes: an unwritable output, a write that fails mid-run, ambiguous labels,
questions without answers in v1.1 data, an empty QA context, throughput of very short runs, a run failing
on bad data, a tokenize killed before it finished.  Each: the exit code, the one-line message, and what is
left on disk."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, cli

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

@contextlib.contextmanager
def file_size_limit(kib: int):
    """What ``ulimit -f KIB`` sets, in this process: a write past it fails with EFBIG (Python ignores
    SIGXFSZ, which would otherwise kill the process)."""
    import resource

    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)


def test_predict_output_past_the_file_size_limit(capsys, tmp_path, classifier):
    inp = tmp_path / "many.txt"
    inp.write_text("".join(f"the place was great and the food was wonderful {i}\n" for i in range(150)))
    out = tmp_path / "preds" / "p.jsonl"
    out.parent.mkdir()
    with file_size_limit(8):
        code = cli("predict", "--model", classifier, "--input", inp, "--output", out, "-q")
    one_error(capsys, code, 1, f"cannot write {out}", "file too large")
    assert tree(out.parent) == set()  # neither the file nor its temp file


def test_finetune_cls_model_past_the_file_size_limit(capsys, tmp_path, mlm_model, cls_files):
    train, dev = cls_files
    out = tmp_path / "cls"
    with file_size_limit(100):  # the model's weights are ~170 KB
        code = cli("finetune-cls", "--model", mlm_model, "--train", train, "--validation", dev, "--output", out,
                   "--max-steps", 1, "--batch-size", 8, "--max-seq-length", 32, "-q")
    one_error(capsys, code, 1, f"cannot write {out}", "file too large")
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


# ------------------------------------------------------------------------------------------------
# 4-6. Question answering: v1.1 data with unanswered questions, an empty context, throughput of short runs
# ------------------------------------------------------------------------------------------------

def squad(path: Path, n: int, unanswered: int = 0, version: str | None = "1.1", impossible_key: bool = False) -> Path:
    places = [("paris", "france"), ("berlin", "germany"), ("rome", "italy"), ("madrid", "spain")]
    paras = []
    for i in range(n):
        city, country = places[i % len(places)]
        ctx = f"the food was great . {city} is the capital of {country} . the staff were friendly ."
        qa = {"id": f"q{i}", "question": f"what is the capital of {country} ?",
              "answers": [] if i < unanswered else [{"text": city, "answer_start": ctx.index(city)}]}
        if impossible_key:
            qa["is_impossible"] = i < unanswered
        paras.append({"context": ctx, "qas": [qa]})
    obj = {"data": [{"title": "t", "paragraphs": paras}], **({"version": version} if version else {})}
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


QA_SHORT = ["--max-steps", 2, "--batch-size", 4, "--max-seq-length", 32, "--doc-stride", 8, "--max-question-length",
            12]


def test_v1_data_with_unanswered_questions(capsys, tmp_path, mlm_model):
    """Without a v2.0 marker, unanswered questions are trained on to abstain only with a warning that counts
    them and names the flags that choose."""
    train = squad(tmp_path / "train.json", 12, unanswered=3)
    dev = squad(tmp_path / "dev.json", 4, unanswered=1)
    common = ["finetune-qa", "--model", mlm_model, "--train", train, "--validation", dev, *QA_SHORT]
    assert cli(*common, "--output", tmp_path / "auto") == 0
    err = capsys.readouterr().err
    assert "4 of 16 questions have no answer" in err and "--version-2" in err and "abstain" in err
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["bertkit_null_threshold"] == 0.0
    one_error(capsys, cli(*common, "--output", tmp_path / "x", "--no-version-2", "--tune-null-threshold"), 2,
              "--no-version-2")
    assert not (tmp_path / "x").exists()


def test_version_2_flag_decides_what_unanswered_questions_mean(tmp_path, caplog):
    """--no-version-2 drops them (the model never answers empty); --version-2 keeps them silently; data
    marked v2.0 (is_impossible keys, version 2.0) needs no flag."""
    from bertkit import qa
    from bertkit.commands.finetune_qa import null_threshold, settle_unanswerable
    from bertkit.schemas import FinetuneQAConfig

    marked = qa.read_qa(str(squad(tmp_path / "a.json", 6, unanswered=2, impossible_key=True)), "--train")
    versioned = qa.read_qa(str(squad(tmp_path / "b.json", 6, unanswered=2, version="v2.0")), "--train")
    plain = qa.read_qa(str(squad(tmp_path / "c.json", 6, unanswered=2)), "--train")
    assert marked.marked_v2 and versioned.marked_v2 and not plain.marked_v2
    assert plain.unanswered == 2 and len(plain.answered()) == 4 and plain.select([0, 1]).unanswered == 2
    v1 = FinetuneQAConfig(version_2=False)
    train, val = settle_unanswerable(v1, plain, marked)
    assert train.unanswered == val.unanswered == 0 and len(train) == len(val) == 4
    assert null_threshold(v1, train, val) is None
    with caplog.at_level("WARNING", logger="bertkit"):
        for cfg, data in ((FinetuneQAConfig(version_2=True), plain), (FinetuneQAConfig(), versioned)):
            train, val = settle_unanswerable(cfg, data, data)
            assert train.unanswered == 2 and null_threshold(cfg, train, val) == 0.0
    assert "have no answer" not in caplog.text


def test_empty_context_rows():
    from bertkit.qa import empty_context_rows

    assert empty_context_rows(["a context", "", "  \n", None, "x"]) == [1, 2, 3]
    assert empty_context_rows([]) == []


def test_predict_does_not_answer_an_empty_context(capsys, tmp_path, mlm_model):
    """A QA row with an empty context: a warning naming the row and a record with an error, never a
    confident empty answer; the other rows are answered."""
    from transformers import AutoTokenizer, BertForQuestionAnswering

    model = tmp_path / "qa"
    BertForQuestionAnswering.from_pretrained(str(mlm_model)).save_pretrained(str(model))
    AutoTokenizer.from_pretrained(str(mlm_model)).save_pretrained(str(model))
    rows = [{"question": "who?", "context": "the staff were friendly"}, {"question": "what?", "context": "  "}]
    inp = tmp_path / "q.jsonl"
    inp.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert cli("predict", "--model", model, "--input", inp, "--output", tmp_path / "p.jsonl", "--top-k", 1) == 0
    assert "1 questions have an empty context (rows 2)" in capsys.readouterr().err
    got = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert got[0]["answer"] and "error" not in got[0]
    assert got[1] == {"question": "what?", "answer": None, "score": None, "start": None, "end": None,
                      "error": "empty context"}


@pytest.mark.parametrize("command", ["finetune-cls", "finetune-qa"])
def test_throughput_of_a_two_step_run_is_of_its_steps(capsys, tmp_path, mlm_model, cls_files, command):
    """The rate counts the training steps' own time: a run of two steps, followed by a final evaluation
    longer than the steps, reports a finite, plausible rate (it reported 1.6e10 examples/s)."""
    train, dev = cls_files
    if command == "finetune-cls":
        args = ["--train", train, "--validation", dev, "--max-steps", 2, "--batch-size", 4, "--max-seq-length", 32]
    else:
        args = ["--train", squad(tmp_path / "t.json", 8), "--validation", squad(tmp_path / "d.json", 12), *QA_SHORT]
    out = tmp_path / "out"
    assert cli(command, "--model", mlm_model, *args, "--output", out) == 0
    m = json.loads((out / "metrics.json").read_text())
    rate = m["examples_per_second"]
    assert m["steps"] == 2 and 0 < rate < 1e6, m
    summary = capsys.readouterr().err
    assert f"{rate:,.1f}" in summary


def test_rate_counts_the_steps_not_the_evaluations(tmp_path, monkeypatch):
    """Steps of 0.5 s, an evaluation of 3 s during training and a final one of 10 s after it (longer than
    the whole training, as a QA evaluation of a short run is): 4 steps x 8 examples / 2 s = 16/s."""
    from types import SimpleNamespace

    from bertkit import callbacks
    from bertkit.training import run_metrics

    clock = [100.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: clock[0])
    p = callbacks.Progress(tmp_path)
    args = SimpleNamespace(per_device_train_batch_size=8, gradient_accumulation_steps=1, world_size=1)
    state = SimpleNamespace(global_step=0, num_input_tokens_seen=0, is_world_process_zero=False, epoch=0.0,
                            max_steps=4)
    p.on_train_begin(args, state, None)
    for step in range(1, 5):
        clock[0] += 0.5
        state.global_step = step
        p.on_step_end(args, state, None)
        if step == 2:
            clock[0] += 3.0
            p.on_log(args, state, None, logs={"eval_runtime": 3.0})
            p.on_evaluate(args, state, None)
    p.on_train_end(args, state, None)
    p.on_log(args, state, None, logs={"eval_runtime": 10.0})  # the command's final evaluation
    trainer = SimpleNamespace(progress=p, state=SimpleNamespace(global_step=4, epoch=1.0))
    m = run_metrics(trainer, SimpleNamespace(training_loss=0.5), 5.0, "examples", 32)
    assert p.step_seconds == pytest.approx(2.0) and m["eval_seconds"] == 3.0
    assert m["examples_per_second"] == pytest.approx(16.0)


# ------------------------------------------------------------------------------------------------
# 8. A tokenize killed after its first resume point continues from it
# ------------------------------------------------------------------------------------------------

# runs the CLI with small chunks and shards closed at every write (SHARD_SECONDS 0: the time bound), and
# SIGKILLs itself at the first chunk after a resume point was written
_KILLED_TOKENIZE = """
import os, signal, sys
from pathlib import Path
import bertkit.streaming as s
s.CHUNK_BYTES, s.SHARD_SECONDS = 400, 0.0
real, partial = s.encode_chunk, Path(sys.argv[1])
def encode(chunk, *a, **k):
    if (partial / "resume.json").exists():
        os.kill(os.getpid(), signal.SIGKILL)
    return real(chunk, *a, **k)
s.encode_chunk = encode
from bertkit.cli import main
main(sys.argv[2:])
"""


def test_killed_tokenize_resumes(capsys, tmp_path, corpus, tokenized, monkeypatch):
    import datasets

    import bertkit.streaming as streaming

    out = tmp_path / "out"
    partial = tmp_path / ".out.partial"
    args = ["tokenize", corpus, "--output", out, "--tokenizer", tokenized / "tokenizer", "--max-seq-length", 32]
    p = subprocess.run([sys.executable, "-c", _KILLED_TOKENIZE, str(partial), *map(str, args)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == -9, p.stderr
    state = json.loads((partial / "resume.json").read_text())
    assert not out.exists() and state["next_chunk"] >= 1
    monkeypatch.setattr(streaming, "CHUNK_BYTES", 400)  # the killed run's chunks
    assert cli(*args) == 0
    assert "Resuming an interrupted run" in capsys.readouterr().err and not partial.exists()
    ref = datasets.load_from_disk(str(tokenized / "dataset"))
    assert datasets.load_from_disk(str(out / "dataset"))["input_ids"] == ref["input_ids"]


def test_shards_close_at_64_mib_or_a_minute():
    from bertkit import streaming

    assert streaming.SHARD_BYTES <= 64 << 20 and streaming.SHARD_SECONDS <= 60


def _handles_sigterm(pid: int) -> bool:
    """The process has installed a SIGTERM handler (its SigCgt mask, /proc/PID/status)."""
    import signal

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (int(signal.SIGTERM) - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_predict_stopped_by_sigterm_says_so(tmp_path, classifier):
    """SIGTERM while predict waits for its input: one line saying nothing was written, exit 143, no file."""
    import signal

    out = tmp_path / "p.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "bertkit", "predict", "--model", str(classifier), "--input", "-",
                             "--output", str(out)], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(3000):  # bounded: until its handler is in place (the CLI's start-up on a loaded machine)
        if proc.poll() is not None or _handles_sigterm(proc.pid):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert f"bertkit predict: interrupted (SIGTERM); {out} was not written" in err
    assert not out.exists() and not list(tmp_path.glob(".p.jsonl*"))


# ------------------------------------------------------------------------------------------------
# Every fix an error message suggests is a command that runs
# ------------------------------------------------------------------------------------------------

def _backticked(line: str) -> list[list[str]]:
    """The ``bertkit ...`` commands an error line quotes in backticks, as argument lists."""
    import re
    import shlex

    return [shlex.split(c)[1:] for c in re.findall(r"`(bertkit [^`]+)`", line)]


def test_every_suggested_fix_runs(capsys, tmp_path, mlm_model, classifier, corpus, cls_files):
    """Each refusal below names a fix (a flag to add or change, or a command to run); the fix, applied as
    the message words it, runs (exit 0).  The SIGTERM resume line is checked in test_robustness."""
    import re

    train, dev = cls_files
    tiny = ["finetune-cls", "--model", mlm_model, "--train", train, "--validation", dev, "--max-steps", 2,
            "--batch-size", 8, "--quiet"]

    # a finished run: --overwrite, or --resume CHECKPOINT
    out = tmp_path / "done"
    assert cli(*tiny, "--output", out) == 0
    capsys.readouterr()
    line = one_error(capsys, cli(*tiny, "--output", out), 2, "pass --overwrite", "--resume ")
    checkpoint = re.search(r"--resume (\S+) ", line).group(1)
    assert cli(*tiny, "--output", out, "--resume", checkpoint) == 0
    assert cli(*tiny, "--output", out, "--overwrite") == 0

    # --max-seq-length above the model's positions: "use --max-seq-length N or less"
    line = one_error(capsys, cli(*tiny, "--output", tmp_path / "long", "--max-seq-length", 100_000), 2,
                     "use --max-seq-length")
    n = re.search(r"use --max-seq-length (\d+) or less", line).group(1)
    assert cli(*tiny, "--output", tmp_path / "long", "--max-seq-length", n) == 0

    # fp16 on a CPU: "use --precision bf16 or no"
    one_error(capsys, cli(*tiny, "--output", tmp_path / "fp16", "--precision", "fp16"), 2, "--precision bf16")
    assert cli(*tiny, "--output", tmp_path / "fp16", "--precision", "bf16") == 0

    # outputs that are not empty: --overwrite
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine\n", encoding="utf-8")
    tok = ["tokenize", corpus, "--tokenizer", mlm_model, "--output", taken, "--max-seq-length", 32, "--quiet"]
    one_error(capsys, cli(*tok), 2, "pass --overwrite")
    assert cli(*tok, "--overwrite") == 0
    export = ["export", "--model", classifier, "--output", taken, "--quiet"]
    one_error(capsys, cli(*export), 2, "pass --overwrite")
    assert cli(*export, "--overwrite") == 0

    # pretraining on raw text without a tokenizer: --train-tokenizer
    mlm = ["pretrain-mlm", "--data", corpus, "--output", tmp_path / "mlm", "--max-steps", 1, "--batch-size", 4,
           "--max-seq-length", 32, "--quiet", *TINY]
    one_error(capsys, cli(*mlm), 2, "--train-tokenizer")
    assert cli(*mlm, "--train-tokenizer", "--vocab-size", 200) == 0

    # the ONNX backend on a torch model dir: the `bertkit export ...` it quotes, then that DIR
    inp = tmp_path / "in.txt"
    inp.write_text("a good film\n", encoding="utf-8")
    predict = ["predict", "--input", inp, "--quiet"]
    line = one_error(capsys, cli(*predict, "--model", classifier, "--backend", "onnx", "--output",
                                 tmp_path / "p1.jsonl"), 2, "`bertkit export")
    [command] = _backticked(line)
    onnx_dir = tmp_path / "onnx"
    assert cli(*[str(onnx_dir) if a == "DIR" else a for a in command], "--quiet") == 0
    assert cli(*predict, "--model", onnx_dir, "--backend", "onnx", "--output", tmp_path / "p2.jsonl") == 0

    # pickle-only weights: --allow-pickle
    import shutil

    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(classifier, pickled, ignore=shutil.ignore_patterns("checkpoints", "*.safetensors"))
    torch.save(load_file(str(classifier / "model.safetensors")), pickled / "pytorch_model.bin")
    line = one_error(capsys, cli(*predict, "--model", pickled, "--output", tmp_path / "p3.jsonl"), 2,
                     "--allow-pickle")
    assert cli(*predict, "--model", pickled, "--output", tmp_path / "p3.jsonl", "--allow-pickle") == 0

    # an unknown recipe: the `bertkit recipes` it quotes
    line = one_error(capsys, cli("finetune-cls", "--config", "no-such-recipe"), 2, "`bertkit recipes`")
    for command in _backticked(line):
        assert cli(*command) == 0
