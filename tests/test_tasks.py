"""The task-kind seam: every kind behind one interface, found by name or from a model dir, and one
scoring shared by `bertkit evaluate` and `bertkit export --validation`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli


def test_every_kind_is_registered_and_detected_from_its_architecture():
    from types import SimpleNamespace

    from bertkit import tasks
    from bertkit.errors import UsageError

    assert {"classification", "fill-mask", "question-answering"} <= set(tasks.names())
    for name, kind in tasks.kinds().items():
        assert kind.name == name and kind.auto_model.startswith("AutoModelFor") and kind.outputs
        config = SimpleNamespace(architectures=[f"Bert{kind.architectures[0]}"])
        assert tasks.detect(config) is kind
    assert tasks.detect(SimpleNamespace(architectures=["BertForPreTraining"])).name == "fill-mask"
    with pytest.raises(UsageError, match="cannot tell the task"):
        tasks.detect(SimpleNamespace(architectures=["GPT2LMHeadModel"]))
    with pytest.raises(UsageError, match="--task nope"):
        tasks.get("nope")


def test_no_kind_branches_outside_the_task_package():
    """Commands and capabilities call the interface; only bertkit/tasks/ names the kinds."""
    import re

    root = Path(__file__).resolve().parent.parent / "bertkit"
    branch = re.compile(r"""[=!]=\s*["'](classification|fill-mask|question-answering|token-classification)["']""")
    found = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if "tasks" not in p.parts
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if branch.search(line)]
    assert found == []


def test_batches_keep_order_and_trim_memory(monkeypatch):
    """predict/evaluate batches: every row once, in the given order; freed memory is handed back to
    the OS every ``trim_every`` batches (glibc heaps otherwise creep up over a long loop)."""
    import bertkit.tasks.base as base

    calls = []
    monkeypatch.setattr(base, "trim_freed_memory", lambda: calls.append(1))
    order = [5, 3, 9, 0, 1, 2, 4, 6, 7, 8, 10]
    batches = list(base.batches(order, 2, trim_every=2))
    assert [i for b in batches for i in b] == order
    assert [len(b) for b in batches] == [2, 2, 2, 2, 2, 1]
    assert len(calls) == 2  # before batches 3 and 5
    base._malloc_trim.cache_clear()
    monkeypatch.undo()
    base.trim_freed_memory()  # the real one runs (or is a no-op off glibc) without error


def test_windows_ignore_padding_left_on_the_tokenizer(classifier):
    """Padding left enabled on the tokenizer's backend (by an earlier padded call, or saved in a
    tokenizer.json) must not pad the windows: batches are sorted by the windows' own lengths."""
    from bertkit.loading import load_model_config, load_tokenizer
    from bertkit.tasks.classification import ClassificationTask, rows_of

    tok = load_tokenizer(classifier)
    texts = ["the place was great and the staff friendly", "ok", "the room was dirty"]
    tok(texts, padding=True)  # leaves padding enabled on the backend
    assert tok.backend_tokenizer.padding is not None
    task = ClassificationTask(load_model_config(classifier), tok, 32)
    lengths = task.encode(rows_of(texts)).lengths().tolist()
    assert lengths[1] < lengths[2] < lengths[0]


def _qa_model(mlm_model: Path, out: Path) -> Path:
    from transformers import AutoTokenizer, BertForQuestionAnswering

    BertForQuestionAnswering.from_pretrained(str(mlm_model)).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(mlm_model)).save_pretrained(str(out))
    return out


def _qa_data(path: Path) -> Path:
    rows = [{"id": str(i), "question": q, "context": c, "answers": {"text": [a], "answer_start": [c.index(a)]}}
            for i, (q, c, a) in enumerate([
                ("where was the food great?", "the food was really great at the place near the river",
                 "near the river"),
                ("who was friendly?", "the staff were friendly and the room was clean", "the staff"),
                ("什么很好吃?", "这家餐厅的菜非常好吃，服务也很好", "菜"),
            ])]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", ["classification", "fill-mask", "question-answering"])
def test_evaluate_and_export_validation_score_alike(kind, tmp_path, classifier, mlm_model, cls_files, corpus):
    """One file, one model: `evaluate` and `export --validation` (its torch side) report the same metrics,
    because both run the kind's own scoring."""
    pytest.importorskip("onnxruntime")
    if kind == "classification":
        model, data = classifier, cls_files[1]
    elif kind == "fill-mask":
        model, data = mlm_model, corpus
    else:
        model, data = _qa_model(mlm_model, tmp_path / "qa"), _qa_data(tmp_path / "qa.jsonl")
    assert cli("evaluate", "--model", model, "--data", data, "--output", tmp_path / "ev", "--quiet") == 0
    assert cli("export", "--model", model, "--output", tmp_path / "onnx", "--validation", data, "--quiet") == 0
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    validated = json.loads((tmp_path / "onnx" / "export.json").read_text())["validation"]
    assert evaluated["task"] == kind and validated["examples"] == evaluated["examples"]
    numbers = {k: v for k, v in validated["torch"].items() if isinstance(v, (int, float))}
    assert numbers and validated["metric"] in numbers
    for k, v in numbers.items():
        assert evaluated[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


def _peak_rss_kb(*args) -> int:
    """Peak resident memory (KiB) of `bertkit ARGS` run in a child of a fresh interpreter."""
    import subprocess
    import sys

    code = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "sys.exit(p.stderr[-2000:]) if p.returncode else print(resource.getrusage(resource.RUSAGE_CHILDREN)"
            ".ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "bertkit", *map(str, args)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def test_predict_memory_stays_flat_for_10x_the_rows(tmp_path, classifier, mlm_model):
    """Rows are encoded, run and written a bounded chunk at a time: 10x the rows (or the windows of long QA
    contexts) must not raise peak memory by more than 30%."""
    import random

    rng = random.Random(0)
    words = "the food was great and the staff were friendly but the room was dirty 服务 太差 非常 好吃".split()

    def text(n):
        return " ".join(rng.choice(words) for _ in range(n))

    qa = _qa_model(mlm_model, tmp_path / "qa")
    for name, model, make, n in (("cls", classifier, lambda: {"text": text(rng.randint(3, 40))}, 2_000),
                                 ("qa", qa, lambda: {"question": "who was friendly?", "context": text(6_000)}, 4)):
        peaks = []
        for k in (n, 10 * n):
            inp = tmp_path / f"{name}-{k}.jsonl"
            inp.write_text("\n".join(json.dumps(make(), ensure_ascii=False) for _ in range(k)), encoding="utf-8")
            peaks.append(_peak_rss_kb("predict", "--model", model, "--input", inp, "--output",
                                      tmp_path / f"{name}-{k}-out.jsonl", "--threads", 1, "--quiet"))
            assert len((tmp_path / f"{name}-{k}-out.jsonl").read_text().splitlines()) == k
        assert peaks[1] <= 1.3 * peaks[0], (name, peaks)
