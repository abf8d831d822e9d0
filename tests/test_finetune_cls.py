"""Every classification shape: single, multi-label, regression, pairs, label files, class weights,
long texts; and their predictions."""

from __future__ import annotations

import csv
import json
import random

import yaml
from conftest import cli, read_jsonl, run_cli

WORDS = ["sun", "rain", "snow", "wind", "cloud", "storm", "fog", "heat"]


def _write(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t" if str(path).endswith(".tsv") else ",")
        w.writerow(header)
        w.writerows(rows)
    return path


def test_multilabel_end_to_end(tmp_path, mlm_model):
    rng = random.Random(0)
    rows = []
    for _ in range(60):
        ids = sorted(rng.sample(range(3), rng.randint(1, 2)))
        rows.append([" ".join(WORDS[i] for i in ids) + " today", ",".join(map(str, ids))])
    train = _write(tmp_path / "ml.tsv", ["text", "label"], rows)
    labels = tmp_path / "labels.txt"
    labels.write_text("sunny\nrainy\nsnowy\n")
    out = tmp_path / "mlc"
    assert cli("finetune-cls", "--model", mlm_model, "--train", train, "--validation", train, "--output", out,
               "--labels", labels, "--epochs", 2, "--batch-size", 16, "--lr", "1e-3", "--tune-threshold",
               "--head-lr", "3e-3", "--no-prior-init", "--dropout", "0.25", "-q") == 0
    saved = yaml.safe_load((out / "bertkit_config.yaml").read_text())
    assert saved["train"]["head_lr"] == 3e-3 and saved["prior_init"] is False and saved["dropout"] == 0.25
    m = json.loads((out / "metrics.json").read_text())
    assert m["problem"] == "multi" and "eval_f1_micro" in m and "eval_f1_macro" in m and 0 < m["threshold"] < 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["problem_type"] == "multi_label_classification" and cfg["id2label"]["1"] == "rainy"
    assert cfg["bertkit_threshold"] == m["threshold"]
    assert cfg["hidden_dropout_prob"] == cfg["attention_probs_dropout_prob"] == 0.25  # the checkpoint has 0.1
    p = run_cli("predict", "--model", out, "--input", "-", input="sun rain today\n")
    r = json.loads(p.stdout)
    assert set(r["probabilities"]) == {"sunny", "rainy", "snowy"}
    assert all(r["probabilities"][lab] >= m["threshold"] for lab in r["labels"])


def test_regression_pairs_end_to_end(tmp_path, mlm_model):
    rng = random.Random(1)
    rows = []
    for _ in range(50):
        a, b = rng.sample(WORDS, 2)
        same = rng.random() < 0.5
        score = (4.5 if same else 0.5) + rng.random() * .4
        rows.append([f"the {a} came", f"the {a if same else b} came", f"{score:.2f}"])
    train = _write(tmp_path / "sts.csv", ["s1", "s2", "score"], rows)
    out = tmp_path / "reg"
    assert cli("finetune-cls", "--model", mlm_model, "--train", train, "--validation", train, "--output", out,
               "--text-column", "s1", "--text-pair-column", "s2", "--label-column", "score",
               "--epochs", 1, "--batch-size", 16, "-q") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["problem"] == "regression" and {"eval_mse", "eval_pearsonr", "eval_spearmanr"} <= set(m)
    inp = tmp_path / "pairs.jsonl"
    inp.write_text(json.dumps({"s1": "the sun came", "s2": "the sun came"}) + "\n")
    assert cli("predict", "--model", out, "--input", inp, "--output", tmp_path / "p.jsonl", "--text-column", "s1",
               "--text-pair-column", "s2", "-q") == 0
    r = read_jsonl(tmp_path / "p.jsonl")[0]
    assert isinstance(r["score"], float) and r["text_pair"] == "the sun came"


def test_class_weights_patience_test_split_long_text(tmp_path, mlm_model, cls_files):
    train, dev = cls_files
    long_rows = [["great " * 40 + "place", "good"], ["awful " * 40 + "place", "bad"]] * 10
    long = _write(tmp_path / "long.csv", ["text", "label"], long_rows)
    for mode in ("head-tail", "sliding-window"):
        out = tmp_path / mode
        assert cli("finetune-cls", "--model", mlm_model, "--train", long, "--validation", long, "--test", dev,
                   "--output", out, "--long-text", mode, "--stride", 4, "--max-seq-length", 16,
                   "--class-weights", "auto", "--epochs", 3, "--patience", 1, "--batch-size", 8, "-q") == 0
        m = json.loads((out / "metrics.json").read_text())
        assert "test_accuracy" in m and m["epochs"] <= 3 and m["eval_examples"] == 20
        # evaluate applies the model as it was trained (length, long-text mode, stride): same metrics
        assert cli("evaluate", "--model", out, "--data", long, "--output", tmp_path / f"ev-{mode}", "-q") == 0
        ev = json.loads((tmp_path / f"ev-{mode}" / "metrics.json").read_text())
        assert ev["examples"] == 20 and abs(ev["accuracy"] - m["eval_accuracy"]) < 1e-9
        assert abs(ev["f1"] - m["eval_f1"]) < 1e-9
    cfg = json.loads((tmp_path / "sliding-window" / "config.json").read_text())
    assert cfg["bertkit_long_text"] == "sliding-window" and cfg["bertkit_stride"] == 4
    assert cfg["bertkit_max_seq_length"] == 16
    m = json.loads((tmp_path / "sliding-window" / "metrics.json").read_text())
    assert m["eval_windows"] > 20  # validation metrics are per text: window logits averaged
    p = run_cli("predict", "--model", tmp_path / "sliding-window", "--input", "-", input="great " * 60 + "\n")
    assert json.loads(p.stdout)["label"] in ("good", "bad")


def test_bad_class_weights(capsys, tmp_path, mlm_model, cls_files):
    train, dev = cls_files
    rc = cli("finetune-cls", "--model", mlm_model, "--train", train, "--validation", dev, "--output", tmp_path / "o",
             "--class-weights", "1,2,3")
    assert rc == 2 and "--class-weights" in capsys.readouterr().err
    rc = cli("finetune-cls", "--model", mlm_model, "--train", train, "--validation", dev, "--output", tmp_path / "o",
             "--head-lr", "0")
    assert rc == 2 and "--head-lr 0" in capsys.readouterr().err
    rc = cli("finetune-cls", "--model", mlm_model, "--train", train, "--validation", dev, "--output", tmp_path / "o",
             "--dropout", "1")
    assert rc == 2 and "--dropout 1.0: must be in [0, 1)" in capsys.readouterr().err


def test_headerless_tsv_columns_by_index(tmp_path, mlm_model):
    rows = [["src", "1" if i % 2 else "0", "", f"the {'sun' if i % 2 else 'storm'} came"] for i in range(20)]
    f = tmp_path / "cola.tsv"
    with open(f, "w") as fh:
        fh.write("\n".join("\t".join(r) for r in rows) + "\n")
    out = tmp_path / "cola"
    assert cli("finetune-cls", "--model", mlm_model, "--train", f, "--validation", f, "--output", out,
               "--text-column", "3", "--label-column", "1", "--epochs", 1, "--metric", "matthews_correlation",
               "-q") == 0
    assert "eval_matthews_correlation" in json.loads((out / "metrics.json").read_text())


