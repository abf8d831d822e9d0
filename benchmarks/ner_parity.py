#!/usr/bin/env python
"""Benchmark: bertkit finetune-ner against a plain transformers Trainer (run_ner.py's recipe) on CoNLL-2003.

The peer is written here as run_ner.py does it: ``tokenizer(words, is_split_into_words=True,
truncation=True, max_length=128)``, the first sub-token of each word labelled (-100 elsewhere),
``DataCollatorForTokenClassification`` (dynamic padding), the Trainer's shuffled batches,
``AutoModelForTokenClassification`` seeded before its head is drawn.  Same model (MiniLM-L6, ``minilm-l6``),
data, 1 epoch, batch 32, lr 5e-5, linear schedule, no warm-up, weight decay 0, seed, one torch thread.

Scored alike on every dev word: the peer's words that truncation cut (run_ner.py drops them from both
predictions and gold labels) count as predicted ``O`` here; bertkit windows long sentences and predicts
every word.  Both sides' tags go through bertkit's shipped seqeval module (entity micro-F1, conlleval
rules).  Speed: training words per second of the training steps alone (evaluations left out), timed on both
sides by one Trainer callback (``_machine.train_clock``), in wall time and in process CPU time (the one to
trust on a shared machine).

    PYTHONPATH=. .venv/bin/python benchmarks/ner_parity.py --seeds 1,2,3
    ... --smoke            # 40 steps on each side, to check the script
    ... --report           # print the table of what --runs-dir holds
    ... --batching random --no-peer   # bertkit in the Trainer's shuffled order (rows "bertkit-random")

Each finished run is appended to RUNS_DIR/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name, train_clock  # noqa: E402  (benchmarks/_machine.py)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "ner" / "conll2003"
MAX_LEN, BATCH, LR, EPOCHS = 128, 32, 5e-5, 1


def env1() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def read(path: Path):
    from bertkit import ner

    return ner.read_tagged(str(path), "--data")


def score(pred: list[list[str]], gold: list[list[str]]) -> dict:
    from bertkit.metrics import load_metric

    return load_metric("seqeval").compute(predictions=pred, references=gold)


def train_words(train, max_steps: int) -> int:
    """Words trained on: every epoch's words, or (a --smoke run of max_steps) the steps' share of them."""
    total = sum(len(w) for w in train.words)
    return int(total * EPOCHS if max_steps <= 0 else max_steps * BATCH * total / len(train.words))


def write_result(out_json: str, f1: float, steps: int, words: int, clock: dict) -> None:
    Path(out_json).write_text(json.dumps({
        "f1": f1, "steps": steps, "train_words": words, "train_seconds": round(clock["wall"], 2),
        "train_cpu_seconds": round(clock["cpu"], 2), "words_per_second": round(words / max(clock["wall"], 1e-9), 2),
        "words_per_cpu_second": round(words / max(clock["cpu"], 1e-9), 2)}), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# The two sides (each in a subprocess of this script)
# --------------------------------------------------------------------------------------------

def peer_run(seed: int, out_json: str, max_steps: int) -> None:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from bertkit import ner
    from bertkit.loading import packaged_model

    torch.set_num_threads(1)
    mdir = str(packaged_model("minilm-l6"))
    tok = AutoTokenizer.from_pretrained(mdir)
    train, dev = read(DATA / "train.txt"), read(DATA / "dev.txt")
    names = ner.label_names(train.tags)
    index = {n: i for i, n in enumerate(names)}

    def encode(words, tags):
        enc = tok(words, is_split_into_words=True, truncation=True, max_length=MAX_LEN)
        labels = []
        for i in range(len(words)):
            prev, row = None, []
            for w in enc.word_ids(i):
                row.append(-100 if w is None or w == prev else index[tags[i][w]])
                prev = w
            labels.append(row)
        enc["labels"] = labels
        return enc

    def dataset(t):
        ds = Dataset.from_dict({"words": t.words, "tags": t.tags})
        return ds.map(lambda b: encode(b["words"], b["tags"]), batched=True, remove_columns=["words", "tags"])

    train_ds, dev_ds = dataset(train), dataset(dev)
    set_seed(seed)  # before the model: its new head is drawn from torch's global generator
    model = AutoModelForTokenClassification.from_pretrained(mdir, num_labels=len(names),
                                                            id2label=dict(enumerate(names)), label2id=index)
    args = TrainingArguments(output_dir=str(Path(out_json).parent / "peer-checkpoints"), use_cpu=True,
                             per_device_train_batch_size=BATCH, per_device_eval_batch_size=2 * BATCH,
                             learning_rate=LR, num_train_epochs=EPOCHS, max_steps=max_steps, seed=seed,
                             lr_scheduler_type="linear", save_strategy="no", eval_strategy="no",
                             logging_steps=50, report_to=[], disable_tqdm=True)
    clock: dict = {}
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, processing_class=tok,
                      data_collator=DataCollatorForTokenClassification(tok), callbacks=[train_clock(clock)])
    trainer.train()
    logits = trainer.predict(dev_ds).predictions
    dev_enc = tok(dev.words, is_split_into_words=True, truncation=True, max_length=MAX_LEN)
    pred = []
    for i, words in enumerate(dev.words):  # the first sub-token of each word; words cut by truncation: O
        tags = ["O"] * len(words)
        seen = set()
        for t, w in enumerate(dev_enc.word_ids(i)):
            if w is not None and w not in seen:
                seen.add(w)
                tags[w] = names[int(np.argmax(logits[i][t]))]
        pred.append(tags)
    write_result(out_json, score(pred, dev.tags)["overall_f1"], trainer.state.global_step,
                 train_words(train, max_steps), clock)


def bertkit_run(seed: int, out_dir: str, out_json: str, max_steps: int, batching: str) -> None:
    """bertkit finetune-ner with its defaults and these flags, in this process (the command's own stages), so
    the training clock rides along as an extra callback."""
    import torch

    from bertkit.commands import finetune_ner
    from bertkit.config import resolve
    from bertkit.schemas import FinetuneNERConfig

    torch.set_num_threads(1)
    flags = {"model": "minilm-l6", "output": out_dir, "overwrite": True,
             "data.train": str(DATA / "train.txt"), "data.validation": str(DATA / "dev.txt"),
             "data.max_seq_length": MAX_LEN, "train.batch_size": BATCH, "train.epochs": EPOCHS, "train.lr": LR,
             "train.warmup_ratio": 0.0, "train.weight_decay": 0.0, "train.seed": seed, "train.batching": batching,
             "train.max_steps": max_steps if max_steps > 0 else None}
    clock: dict = {}
    m = finetune_ner.run(resolve(FinetuneNERConfig, flags=flags), callbacks=[train_clock(clock)])
    write_result(out_json, m["eval_f1"], m["steps"], train_words(read(DATA / "train.txt"), max_steps), clock)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------

def run_side(who: str, seed: int, runs: Path, max_steps: int, batching: str = "window") -> dict:
    who = who if who == "peer" or batching == "window" else f"{who}-{batching}"
    out_json = runs / f"{who}-s{seed}.json"
    log = runs / "logs" / f"{who}-s{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--worker", who, "--seed", str(seed), "--out-json", str(out_json),
           "--out-dir", str(runs / f"{who}-s{seed}"), "--max-steps", str(max_steps), "--batching", batching]
    with open(log, "w") as fh:
        p = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env1())
    if p.returncode:
        sys.exit(f"{who} seed {seed} failed ({p.returncode}); see {log}")
    rec = {"who": who, "seed": seed, **json.loads(out_json.read_text())}
    with open(runs / "results.jsonl", "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)
    return rec


def report(runs: Path) -> None:
    recs = {}
    for line in (runs / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        recs[(r["who"], r["seed"])] = r  # a rerun replaces
    for who in sorted({w for w, _ in recs if w != "peer"}):
        table(recs, who)


def table(recs: dict, who: str) -> None:
    seeds = sorted({s for _, s in recs if (who, s) in recs and ("peer", s) in recs})
    print(f"\n{who} against the peer:")
    print("\n| seed | bertkit F1 | peer F1 | difference (points) | bertkit words/s | peer words/s | ratio (wall) "
          "| ratio (CPU) |\n|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for s in seeds:
        b, p = recs[(who, s)], recs[("peer", s)]
        row = (b["f1"], p["f1"], b["words_per_second"], p["words_per_second"],
               b["words_per_second"] / p["words_per_second"], b["words_per_cpu_second"] / p["words_per_cpu_second"])
        rows.append(row)
        print(f"| {s} | {row[0]:.4f} | {row[1]:.4f} | {(row[0] - row[1]) * 100:+.2f} | {row[2]:,.0f} | {row[3]:,.0f} "
              f"| {row[4]:.2f}x | {row[5]:.2f}x |")
    if rows:
        m = [sum(r[i] for r in rows) / len(rows) for i in range(6)]
        print(f"| **mean of {len(rows)}** | **{m[0]:.4f}** | **{m[1]:.4f}** | **{(m[0] - m[1]) * 100:+.2f}** | "
              f"{m[2]:,.0f} | {m[3]:,.0f} | **{m[4]:.2f}x** | **{m[5]:.2f}x** |")
        print("\ntargets: F1 >= peer - 0.3 points (mean) and >= 1.3x its training words/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--runs-dir", default=str(ROOT.parent / "runs" / "ner_parity"))
    ap.add_argument("--smoke", action="store_true", help="40 steps each side, to check the script")
    who = ap.add_mutually_exclusive_group()
    who.add_argument("--no-peer", action="store_true")
    who.add_argument("--peer-only", action="store_true")
    who.add_argument("--report", action="store_true")
    ap.add_argument("--worker", choices=("peer", "bertkit"), help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out-json", help=argparse.SUPPRESS)
    ap.add_argument("--out-dir", help=argparse.SUPPRESS)
    ap.add_argument("--max-steps", type=int, default=-1, help=argparse.SUPPRESS)
    ap.add_argument("--batching", choices=("window", "length", "random"), default="window",
                    help="bertkit's --batching (window: its default)")
    a = ap.parse_args()
    if a.worker == "peer":
        return peer_run(a.seed, a.out_json, a.max_steps)
    if a.worker == "bertkit":
        return bertkit_run(a.seed, a.out_dir, a.out_json, a.max_steps, a.batching)
    runs = Path(a.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    if not a.report:
        print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs; one torch thread per run; "
              f"{time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
        for seed in [int(s) for s in a.seeds.split(",")]:
            for side in ("bertkit", "peer"):
                if (side == "peer" and a.no_peer) or (side == "bertkit" and a.peer_only):
                    continue
                run_side(side, seed, runs, 40 if a.smoke else -1, a.batching)
    report(runs)


if __name__ == "__main__":
    main()
