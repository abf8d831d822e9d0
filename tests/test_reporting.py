"""What users see: logs, summaries, curves, model cards, env, evaluate."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import TINY, read_jsonl, run_cli


def test_training_log_and_curves(mlm_model, classifier):
    for d, unit in ((mlm_model, "tokens"), (classifier, "examples")):
        rows = read_jsonl(d / "training_log.jsonl")
        train = [r for r in rows if "loss" in r]
        evals = [r for r in rows if "eval_loss" in r]
        assert train and evals
        for r in train:
            assert {"step", "loss", "learning_rate", f"{unit}_per_s"} <= set(r)
        png = (d / "curves.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_model_card(classifier, mlm_model):
    text = (classifier / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "transformers" and "bertkit" in front["tags"]
    assert front["pipeline_tag"] == "text-classification"
    names = {m["type"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert "eval_accuracy" in names
    for section in ("## Reproduce", "bertkit finetune-cls", "## Results", "## Hyperparameters", "## Intended use",
                    "`bad`", "`good`"):
        assert section in text, section
    assert "fill-mask" in (mlm_model / "README.md").read_text(encoding="utf-8")


def test_plain_progress_lines_when_piped(tmp_path, tokenized):
    p = run_cli("pretrain-mlm", "--data", tokenized, "--output", tmp_path / "m", "--max-steps", 4,
                "--batch-size", 4, "--logging-steps", 2, *TINY)
    assert "\r" not in p.stderr
    assert "step 2/4 | loss" in p.stderr and "tokens/s" in p.stderr and "ETA" in p.stderr
    assert "== bertkit pretrain-mlm ==" in p.stderr and "model dir" in p.stderr
    assert p.stdout == ""
    q = run_cli("pretrain-mlm", "--data", tokenized, "--output", tmp_path / "q", "--max-steps", 2, "--batch-size", 4,
                "--quiet", *TINY)
    assert q.stderr.strip() == ""


def test_env_report():
    p = run_cli("env")
    for key in ("bertkit:", "python:", "torch:", "transformers:", "datasets:", "accelerate:", "evaluate:",
                "cuda:", "precision available", "accelerate config:", "offline:"):
        assert key in p.stdout, key


def test_evaluate_classifier(classifier, cls_files, tmp_path):
    _, dev = cls_files
    out = tmp_path / "ev"
    p = run_cli("evaluate", "--model", classifier, "--data", dev, "--output", out)
    report = json.loads(p.stdout)
    assert report["examples"] == 30 and 0 <= report["accuracy"] <= 1 and "f1" in report
    cm = json.loads((out / "confusion_matrix.json").read_text())
    assert cm["labels"] == ["bad", "good"] and sum(map(sum, cm["matrix"])) == 30
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    # the same accuracy as finetune-cls measured on the same file
    assert report["accuracy"] == pytest.approx(json.loads((classifier / "metrics.json").read_text())["eval_accuracy"],
                                               abs=1e-6)


def test_evaluate_mlm(mlm_model, corpus, tmp_path):
    p = run_cli("evaluate", "--model", mlm_model, "--data", corpus, "--output", tmp_path / "ev",
                "--max-seq-length", 32)
    report = json.loads(p.stdout)
    assert report["task"] == "fill-mask" and report["masked_tokens"] > 0
    assert report["perplexity"] == pytest.approx(__import__("math").exp(report["loss"]), rel=1e-5)
    assert 0 <= report["masked_accuracy"] <= 1


def test_tensorboard_report(tmp_path, tokenized):
    pytest.importorskip("tensorboard")
    out = tmp_path / "tb"
    run_cli("pretrain-mlm", "--data", tokenized, "--output", out, "--max-steps", 2, "--batch-size", 4,
            "--report-to", "tensorboard", "-q", *TINY)
    assert list((out / "runs").rglob("events.out.tfevents.*"))
