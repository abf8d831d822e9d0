"""Real public data from ../shared/data (slow; skipped when absent): the flow a new user tries."""

from __future__ import annotations

import json
import math

import pytest
from conftest import SHARED, cli, minilm_dir, read_jsonl, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")]


def _head(src, dst, n):
    with open(src, encoding="utf-8-sig") as fh, open(dst, "w", encoding="utf-8") as out:
        for i, line in enumerate(fh):
            if i >= n:
                break
            out.write(line)
    return dst


def test_enwiki_tokenize_pretrain_fill_mask(tmp_path):
    corpus = _head(SHARED / "pretrain" / "enwiki_sample.txt", tmp_path / "enwiki.txt", 6000)
    tok = tmp_path / "tok"
    assert cli("tokenize", corpus, "--output", tok, "--train-tokenizer", "--vocab-size", 8000, "--num-proc", 2,
               "-q") == 0
    manifest = json.loads((tok / "manifest.json").read_text())
    assert manifest["counts"]["packing_efficiency"] > 0.99
    mlm = tmp_path / "mlm"
    assert cli("pretrain-mlm", "--data", tok, "--output", mlm, "--preset", "tiny", "--max-steps", 300,
               "--batch-size", 32, "--lr", "1e-3", "-q") == 0
    m = json.loads((mlm / "metrics.json").read_text())
    assert m["eval_loss"] < math.log(8000) - 1.0  # learned well beyond uniform guessing
    from transformers import pipeline

    out = pipeline("fill-mask", model=str(mlm))("the capital of france is [MASK].")
    assert len(out) == 5
    p = run_cli("predict", "--model", mlm, "--input", "-", input="the [MASK] of the river\n")
    assert len(json.loads(p.stdout)["masks"][0]) == 5


@pytest.mark.skipif(minilm_dir() is None, reason="the minilm extra is not installed")
def test_sst2_minilm_finetune_predict(tmp_path):
    sst = SHARED / "glue" / "SST-2"
    train = _head(sst / "train.tsv", tmp_path / "train.tsv", 3001)
    out = tmp_path / "sst2"
    assert cli("finetune-cls", "--model", "minilm-l6", "--train", train, "--validation", sst / "dev.tsv",
               "--text-column", "sentence", "--output", out, "--epochs", 1, "--batch-size", 32,
               "--max-seq-length", 64, "--lr", "1e-4", "-q") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["eval_accuracy"] > 0.75, m
    preds = tmp_path / "preds.jsonl"
    assert cli("predict", "--model", out, "--input", sst / "dev.tsv", "--text-column", "sentence",
               "--output", preds, "-q") == 0
    rows = read_jsonl(preds)
    assert len(rows) == 872 and {r["label"] for r in rows} <= {"0", "1"}
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(out))
    assert clf("a gorgeous, witty, seductive movie.")[0]["label"] == "1"


def test_chinese_sentiment_small(tmp_path):
    cs = SHARED / "chinese" / "ChnSentiCorp"
    train = _head(cs / "train.tsv", tmp_path / "train.tsv", 1501)
    corpus = _head(SHARED / "pretrain" / "zhwiki_sample.txt", tmp_path / "zh.txt", 3000)
    mlm = tmp_path / "mlm"
    assert cli("pretrain-mlm", "--data", corpus, "--train-tokenizer", "--vocab-size", 6000, "--output", mlm,
               "--max-steps", 100, "--batch-size", 32, "--lr", "1e-3", "-q") == 0
    tok = __import__("transformers").AutoTokenizer.from_pretrained(str(mlm))
    assert tok.tokenize("这部电影很好看")[:3] == ["这", "部", "电"]
    out = tmp_path / "cls"
    assert cli("finetune-cls", "--model", mlm, "--train", train, "--validation", cs / "dev.tsv",
               # 3 epochs: after 100 pretraining steps one epoch (47 steps) stays at chance (0.494), 3 reach 0.75
               "--text-column", "text_a", "--output", out, "--epochs", 3, "--batch-size", 32, "--lr", "5e-4",
               "--max-seq-length", 128, "-q") == 0
    assert json.loads((out / "metrics.json").read_text())["eval_accuracy"] > 0.6
