"""bertkit export (ONNX fp32 and int8) and predict/evaluate on ONNX Runtime, on tiny models of every kind."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, cli, dead_pid, read_jsonl

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _export(src, out, *extra) -> dict:
    assert cli("export", "--model", src, "--output", out, "--quiet", *extra) == 0
    assert {"model.onnx", "config.json", "export.json", "tokenizer.json"} <= {p.name for p in Path(out).iterdir()}
    assert not list(Path(out).parent.glob(f".{Path(out).name}.tmp-*"))  # nothing left behind
    return json.loads((Path(out) / "export.json").read_text())


def _make_classifier(src: Path, out: Path, problem: str, long_text: str, num_labels: int = 3) -> Path:
    """A classifier of ``problem`` on the tiny MLM's encoder (random head), saved as finetune-cls saves one."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    names = ["score"] if problem == "regression" else [f"l{i}" for i in range(num_labels)]
    pt = {"single": "single_label_classification", "multi": "multi_label_classification",
          "regression": "regression"}[problem]
    model = BertForSequenceClassification.from_pretrained(
        str(src), num_labels=len(names), problem_type=pt, id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)})
    with torch.no_grad():  # logits well away from 0, so argmax/thresholds are not decided by rounding
        model.classifier.weight.mul_(20)
    model.config.bertkit_max_seq_length = 24
    model.config.bertkit_long_text = long_text
    model.config.bertkit_stride = 4
    model.config.bertkit_threshold = 0.5
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(out))
    return out


def _write_csv(path: Path, rows, header=("text", "label")) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["great", "awful", "the", "room", "was", "非常", "好吃", "服务", "太差了", "movie", "long", "friendly"]
    # some longer than max length 24, so truncation / head-tail / sliding windows all happen
    return [" ".join(rng.choice(words) for _ in range(rng.randint(2, 40))) for _ in range(n)]


def _predict(model, inp, out, *extra) -> list[dict]:
    assert cli("predict", "--model", model, "--input", inp, "--output", out, "--quiet", *extra) == 0
    return read_jsonl(out)


def test_single_label_export_predict_evaluate(tmp_path, classifier, cls_files):
    _, dev = cls_files
    rep = _export(classifier, tmp_path / "onnx", "--validation", dev)
    assert rep["kind"] == "classification" and rep["opset"] >= 17 and rep["quantize"] == "none"
    # the CPU-optimised graph: attention fused in every layer but the last, which runs for [CLS] alone
    assert rep["fused_operators"].get("Attention") == 1
    assert rep["sample_inputs"]["max_abs_logit_difference"] < 1e-4
    v = rep["validation"]
    assert v["onnx_fp32_agreement"]["argmax_agreement"] == 1.0
    assert v["onnx_fp32"]["accuracy"] == pytest.approx(v["torch"]["accuracy"])
    cfg = json.loads((tmp_path / "onnx" / "config.json").read_text())
    assert cfg["bertkit_max_seq_length"] == 32 and cfg["id2label"] and "bertkit_long_text" in cfg
    # no padding state saved in tokenizer.json (it would make every text as long as the longest)
    assert json.loads((tmp_path / "onnx" / "tokenizer.json").read_text())["padding"] is None

    ref = _predict(classifier, dev, tmp_path / "torch.jsonl")
    got = _predict(tmp_path / "onnx", dev, tmp_path / "onnx.jsonl")  # --backend auto picks onnx
    assert [r["label"] for r in got] == [r["label"] for r in ref]
    assert [r["text"] for r in got] == [r["text"] for r in ref]  # input order kept
    for a, b in zip(got, ref, strict=True):
        assert a["probabilities"].keys() == b["probabilities"].keys()
        assert max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"]) < 1e-4

    assert cli("evaluate", "--model", tmp_path / "onnx", "--data", dev, "--output", tmp_path / "ev", "--quiet",
               "--threads", 1) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["accuracy"] == pytest.approx(v["torch"]["accuracy"]) and m["examples"] == v["examples"]


@pytest.mark.parametrize("problem,long_text", [("multi", "head-tail"), ("regression", "sliding-window")])
def test_multi_and_regression_with_long_text(tmp_path, mlm_model, problem, long_text):
    src = _make_classifier(mlm_model, tmp_path / "src", problem, long_text)
    texts = _texts(40)
    rng = random.Random(1)
    labels = ([",".join(sorted(rng.sample(["l0", "l1", "l2"], rng.randint(1, 2)))) for _ in texts]
              if problem == "multi" else [f"{rng.random():.3f}" for _ in texts])
    data = _write_csv(tmp_path / "val.csv", zip(texts, labels, strict=True))
    rep = _export(src, tmp_path / "onnx", "--validation", data)
    v = rep["validation"]
    key = v["metric"]
    assert v["onnx_fp32"][key] == pytest.approx(v["torch"][key], abs=1e-4)
    if problem == "multi":
        assert v["onnx_fp32_agreement"]["label_set_agreement"] == 1.0
    ref = _predict(src, data, tmp_path / "t.jsonl", "--backend", "torch")
    got = _predict(tmp_path / "onnx", data, tmp_path / "o.jsonl", "--backend", "onnx")
    for a, b in zip(got, ref, strict=True):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-4)
        if problem == "multi":
            assert a["labels"] == b["labels"]


def test_fill_mask_export_predict_evaluate(tmp_path, mlm_model, corpus):
    rep = _export(mlm_model, tmp_path / "onnx", "--validation", corpus)
    assert rep["kind"] == "fill-mask" and rep["sample_inputs"]["max_abs_logit_difference"] < 1e-3
    v = rep["validation"]
    assert v["onnx_fp32"]["masked_accuracy"] == pytest.approx(v["torch"]["masked_accuracy"])
    assert v["onnx_fp32_agreement"]["argmax_agreement"] == 1.0
    inp = tmp_path / "in.txt"
    inp.write_text("the food was [MASK] great\n这家餐厅的菜[MASK]常好吃\n", encoding="utf-8")
    ref = _predict(mlm_model, inp, tmp_path / "t.jsonl", "--top-k", 3)
    got = _predict(tmp_path / "onnx", inp, tmp_path / "o.jsonl", "--top-k", 3)
    assert [r["filled"] for r in got] == [r["filled"] for r in ref]
    assert [[c["token"] for c in m] for r in got for m in r["masks"]] == \
           [[c["token"] for c in m] for r in ref for m in r["masks"]]
    for name, model in (("t", mlm_model), ("o", tmp_path / "onnx")):
        assert cli("evaluate", "--model", model, "--data", corpus, "--output", tmp_path / f"ev-{name}",
                   "--max-seq-length", 32, "--quiet") == 0
    mt, mo = (json.loads((tmp_path / f"ev-{n}" / "metrics.json").read_text()) for n in "to")
    assert mo["masked_accuracy"] == pytest.approx(mt["masked_accuracy"])
    assert mo["loss"] == pytest.approx(mt["loss"], rel=1e-4)


def test_question_answering_export(tmp_path, mlm_model):
    import torch
    from transformers import AutoTokenizer, BertForQuestionAnswering

    from bertkit.onnx_runtime import OnnxModel

    src = tmp_path / "qa"
    BertForQuestionAnswering.from_pretrained(str(mlm_model)).save_pretrained(str(src))
    AutoTokenizer.from_pretrained(str(mlm_model)).save_pretrained(str(src))
    rep = _export(src, tmp_path / "onnx")
    assert rep["kind"] == "question-answering" and rep["outputs"] == ["start_logits", "end_logits"]
    assert rep["sample_inputs"]["max_abs_logit_difference"] < 1e-4
    tok = AutoTokenizer.from_pretrained(str(src))
    enc = tok(["where?", "who was it?"], ["the food was great", "服务太差了，不会再来 at all"], padding=True,
              return_tensors="pt")
    with torch.no_grad():
        ref = BertForQuestionAnswering.from_pretrained(str(src)).eval()(**enc)
    got = OnnxModel(tmp_path / "onnx", threads=1)({k: v.numpy() for k, v in enc.items()})
    assert np.allclose(got["start_logits"], ref.start_logits.numpy(), atol=1e-4)
    assert np.allclose(got["end_logits"], ref.end_logits.numpy(), atol=1e-4)


def test_int8_smaller_and_refused_when_the_drop_is_too_large(tmp_path, classifier, cls_files, capsys):
    _, dev = cls_files
    rep = _export(classifier, tmp_path / "q", "--quantize", "int8", "--validation", dev)
    q = rep["int8"]
    assert rep["int8_bytes"] < rep["fp32_bytes"] and rep["files"]["model.onnx"] == rep["int8_bytes"]
    assert len(q["candidates"]) == 3 and isinstance(q["per_channel"], bool) and isinstance(q["embeddings"], bool)
    assert "onnx_int8" in rep["validation"]
    got = _predict(tmp_path / "q", dev, tmp_path / "q.jsonl")
    assert len(got) == 30

    capsys.readouterr()
    # an impossible bar: int8 would have to beat the float model by 100 points
    assert cli("export", "--model", classifier, "--output", tmp_path / "refused", "--quantize", "int8",
               "--validation", dev, "--max-drop", -100, "--quiet") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused" in err[0] and "--max-drop" in err[0]
    assert not (tmp_path / "refused").exists()
    assert not list(tmp_path.glob(".refused.tmp-*"))


def test_sigterm_during_export_leaves_nothing_says_so_exits_143(tmp_path, classifier, cls_files):
    """A scheduler's SIGTERM mid-export: the staging dir is removed, one line says what happened, exit 143 (as
    the training commands); a later export removes what a SIGKILLed one left (its pid is dead)."""
    _, dev = cls_files
    out = tmp_path / "onnx"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "bertkit", "export", "--model", str(classifier), "--output",
                             str(out), "--validation", str(dev), "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    while not list(tmp_path.glob(".onnx.tmp-export-*")):  # writing has started
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == [f"bertkit export: interrupted (SIGTERM); nothing was written to {out}"]
    assert list(tmp_path.iterdir()) == []

    killed = tmp_path / f".onnx.tmp-export-{dead_pid()}"  # what a SIGKILLed export leaves
    (killed / "work").mkdir(parents=True)
    _export(classifier, out)  # asserts no .onnx.tmp-* left
    assert not killed.exists()


def test_missing_extra_is_one_line(tmp_path, classifier, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert cli("export", "--model", classifier, "--output", tmp_path / "x") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bertkit: error:") and "pip install 'bertkit[onnx]'" in err[0]


def test_backend_onnx_without_model_onnx(tmp_path, classifier, cls_files, capsys):
    _, dev = cls_files
    assert cli("predict", "--model", classifier, "--input", dev, "--backend", "onnx", "--quiet") == 2
    err = capsys.readouterr().err
    assert "model.onnx" in err and "bertkit export" in err


README_SNIPPET = '''
import json, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer

d = EXPORT_DIR
cfg = json.load(open(f"{d}/config.json"))
tok = Tokenizer.from_file(f"{d}/tokenizer.json")
tok.enable_truncation(cfg.get("bertkit_max_seq_length", 512))
tok.enable_padding(pad_id=cfg.get("pad_token_id") or 0)
sess = ort.InferenceSession(f"{d}/model.onnx", providers=["CPUExecutionProvider"])
enc = tok.encode_batch(TEXTS)
cols = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
feed = {i.name: np.array([getattr(e, cols[i.name]) for e in enc], dtype=np.int64) for i in sess.get_inputs()}
logits = sess.run(None, feed)[0]
print([cfg["id2label"][str(i)] for i in logits.argmax(-1)])
'''


def test_readme_snippet_runs_without_bertkit(tmp_path, classifier, cls_files, capsys):
    """docs/guide.md's plain onnxruntime + tokenizers lines give predict's labels (single texts, truncate)."""
    _, dev = cls_files
    _export(classifier, tmp_path / "onnx")
    ref = _predict(tmp_path / "onnx", dev, tmp_path / "p.jsonl")
    texts = [r["text"] for r in ref]
    capsys.readouterr()
    exec(README_SNIPPET, {"EXPORT_DIR": str(tmp_path / "onnx"), "TEXTS": texts})
    printed = capsys.readouterr().out.strip()
    assert printed == str([r["label"] for r in ref])


def test_default_batch_size_follows_the_backend():
    import torch

    from bertkit.inference import OpenedModel

    def opened(backend, device):
        return OpenedModel(None, None, None, None, 32, torch.device(device), backend)

    assert opened("onnx", "cpu").batch_size(None) == 8  # ONNX Runtime on a CPU: fastest per row at 8
    assert opened("torch", "cpu").batch_size(None) == 64
    assert opened("torch", "cuda").batch_size(None) == 64
    assert opened("onnx", "cpu").batch_size(32) == 32  # --batch-size wins
