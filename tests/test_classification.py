"""Every classification shape: single, multi-label, regression, pairs, label files, class weights,
long texts; and their predictions."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
import yaml

from bertkit.errors import DataError
from bertkit.evaluation import classification_metrics, load_metric
from bertkit.labels import LabelSpace, detect_problem
from conftest import cli, read_jsonl, run_cli

WORDS = ["sun", "rain", "snow", "wind", "cloud", "storm", "fog", "heat"]


def _write(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, delimiter="\t" if str(path).endswith(".tsv") else ",")
        w.writerow(header)
        w.writerows(rows)
    return path


def test_detect_problem():
    assert detect_problem(["a", "b"]) == "single"
    assert detect_problem([0, 1, 2]) == "single"
    assert detect_problem(["0.5", "3.2", "1"]) == "regression"
    assert detect_problem(["1,2", "3"]) == "multi"
    assert detect_problem([[1], [0, 2]]) == "multi"


def test_label_space_and_unknown_labels():
    s = LabelSpace.from_values(["pos", "neg", "pos"])
    assert s.names == ["neg", "pos"] and s.encode(["pos"]) == [1]
    with pytest.raises(DataError, match="'meh'"):
        s.encode(["meh"], source="dev.csv")
    m = LabelSpace.from_values(["0,2", "1"], "auto")
    assert m.problem == "multi" and m.encode(["0,2"]) == [[1.0, 0.0, 1.0]]


def test_shipped_metrics_match_reference_formulas():
    p, r = np.array([1, 0, 1, 1, 0, 2]), np.array([1, 0, 0, 1, 1, 2])
    out = classification_metrics("single", np.eye(3)[p], r, 3)
    assert out["accuracy"] == pytest.approx(4 / 6)
    # macro F1 by hand: class0 p=1/2 r=1/2 -> .5; class1 p=2/3 r=2/3 -> 2/3; class2 1
    assert out["f1"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    sp = load_metric("spearmanr").compute(predictions=[1, 2, 3, 4], references=[1, 3, 2, 4])["spearmanr"]
    assert sp == pytest.approx(0.8)
    mcc = load_metric("matthews_correlation").compute(predictions=[1, 1, 0, 0], references=[1, 0, 0, 0])
    assert mcc["matthews_correlation"] == pytest.approx(1 / 3 ** 0.5)


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
        rows.append([f"the {a} came", f"the {a if same else b} came", f"{(4.5 if same else 0.5) + rng.random() * .4:.2f}"])
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
               "--text-column", "3", "--label-column", "1", "--epochs", 1, "--metric", "matthews_correlation", "-q") == 0
    assert "eval_matthews_correlation" in json.loads((out / "metrics.json").read_text())


def test_inference_batches_keep_order_and_trim_memory(monkeypatch):
    """predict/evaluate batches: every row once, in the given order; freed memory is handed back to
    the OS every ``trim_every`` batches (glibc heaps otherwise creep up over a long loop)."""
    import bertkit.commands.predict as predict

    calls = []
    monkeypatch.setattr(predict, "trim_freed_memory", lambda: calls.append(1))
    order = [5, 3, 9, 0, 1, 2, 4, 6, 7, 8, 10]
    batches = list(predict._batches(order, 2, trim_every=2))
    assert [i for b in batches for i in b] == order
    assert [len(b) for b in batches] == [2, 2, 2, 2, 2, 1]
    assert len(calls) == 2  # before batches 3 and 5
    from bertkit.evaluation import trim_freed_memory

    trim_freed_memory()  # the real one runs (or is a no-op off glibc) without error


def test_per_text_aggregates_windows():
    from bertkit.evaluation import mean_by_group, per_text

    logits = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0], [2.0, 2.0]], dtype=np.float32)
    labels = np.array([1, 0, 1, 0])
    agg, lab = per_text(logits, labels, [7, 2, 7, 2])  # windows of texts 7 and 2, interleaved
    assert agg.tolist() == [[2.5, 2.0], [0.5, 2.5]]  # text 2, then text 7 (sorted ids)
    assert lab.tolist() == [0, 1]
    assert mean_by_group(logits, [1, 1, 0, 0], 3).tolist() == [[1.0, 3.5], [2.0, 1.0], [0.0, 0.0]]


def test_prior_bias_is_the_best_constant_predictor():
    single = LabelSpace("single", ["a", "b", "c"])
    b = np.array(single.prior_bias([0, 0, 0, 1, 1, 2, 0, 1]))
    p = np.exp(b) / np.exp(b).sum()
    assert p == pytest.approx(np.array([5, 4, 2]) / 11)  # (counts + 1) / (n + 3)
    multi = LabelSpace("multi", ["x", "y"])
    rows = [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    assert 1 / (1 + np.exp(-np.array(multi.prior_bias(rows)))) == pytest.approx([0.5, 0.25])
    # with pos_weight w the BCE-optimal constant is w*p / (w*p + 1 - p)
    sig = 1 / (1 + np.exp(-np.array(multi.prior_bias(rows, [1.0, 3.0]))))
    assert sig == pytest.approx([0.5, 0.75 / (0.75 + 0.75)])
    assert LabelSpace("regression").prior_bias([1.0, 2.0, 6.0]) == pytest.approx([3.0])


def test_only_a_new_head_starts_at_the_prior(mlm_model, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    from bertkit.commands.finetune_cls import _init_head_at_prior, new_parameters

    model, info = AutoModelForSequenceClassification.from_pretrained(str(mlm_model), num_labels=3,
                                                                     output_loading_info=True)
    # an MLM checkpoint has neither pooler nor classifier
    assert {"classifier.bias", "classifier.weight", "bert.pooler.dense.weight"} <= new_parameters(info)
    _init_head_at_prior(model, new_parameters(info), [-1.0, 0.5, 0.5])
    assert model.classifier.bias.tolist() == pytest.approx([-1.0, 0.5, 0.5])
    model.save_pretrained(tmp_path / "cls")
    again, info = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "cls"), output_loading_info=True)
    assert not new_parameters(info)
    _init_head_at_prior(again, new_parameters(info), [0.0, 0.0, 0.0])  # the head was loaded: kept as trained
    assert torch.equal(again.classifier.bias, model.classifier.bias)


def test_head_lr_moves_only_the_new_head(mlm_model, tmp_path):
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    from bertkit.commands.finetune_cls import _trainer_class, new_parameters

    model, info = AutoModelForSequenceClassification.from_pretrained(str(mlm_model), num_labels=2,
                                                                     output_loading_info=True)
    head = new_parameters(info)
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-4, weight_decay=0.01, use_cpu=True,
                             report_to="none", warmup_steps=0)
    trainer = _trainer_class(head, 3e-3)(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in trainer.optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(lr_of) == sum(len(g["params"]) for g in trainer.optimizer.param_groups) == len(named)
    for n, p in named.items():
        assert lr_of[id(p)][0] == (3e-3 if n in head else 1e-4), n
    assert lr_of[id(named["classifier.weight"])][1] == 0.01 and lr_of[id(named["classifier.bias"])][1] == 0.0
    trainer.optimizer.step()  # no gradients: nothing moves
    trainer.lr_scheduler.step()  # the linear decay scales every group by the same factor
    lrs = {g["lr"] / g["initial_lr"] for g in trainer.optimizer.param_groups}
    assert len(lrs) == 1 and lrs.pop() == pytest.approx(0.9)


def test_dropout_overrides_per_config_family():
    from transformers import BertConfig, DistilBertConfig, GPT2Config

    from bertkit.errors import UsageError
    from bertkit.modeling import dropout_overrides

    assert dropout_overrides(BertConfig(), None) == {}
    assert dropout_overrides(BertConfig(), 0.0) == {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    assert dropout_overrides(DistilBertConfig(), 0.2) == {"dropout": 0.2, "attention_dropout": 0.2}
    with pytest.raises(UsageError, match="--dropout 0.2: the gpt2 model config"):
        dropout_overrides(GPT2Config(), 0.2)
