#!/usr/bin/env python
"""Benchmark: the Chinese comparisons of docs/benchmarks.md (pretrained against random-init BERT-tiny on
ChnSentiCorp, MSRA NER and Resume NER) as two ``bertkit sweep`` commands per task, best against best.

The pretrained model comes from ``pretrain-mlm --config pretrain-tiny-zhwiki`` (``--pretrained DIR``);
the random-init model is the same config and tokenizer with fresh weights (seeded).  Each model is swept
over lr x epochs with the task's recipe (``finetune-chnsenticorp``, ``finetune-msra``, ``finetune-resume``)
fixing everything else, TPE with median pruning at each epoch's evaluation, same seed, so the comparison
no longer depends on which learning rate a person happened to try for each model.  The objective is the
validation metric (accuracy; entity F1 for NER, on MSRA a tenth of train held out by the recipe); the best
trial of each sweep is then read for its test figure, scored once.

    .venv/bin/python benchmarks/sweep_chinese.py --pretrained runs/bert-tiny-zh --runs-dir runs/sweep-zh
    .venv/bin/python benchmarks/sweep_chinese.py --task resume --pretrained DIR --runs-dir runs/sweep-resume
    .venv/bin/python benchmarks/sweep_chinese.py --task msra --train-rows 5000 ...   # the first 5,000 sentences
    .venv/bin/python benchmarks/sweep_chinese.py --pretrained DIR --smoke   # 200 rows, 2 trials of 4 steps
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _machine import bertkit_cmd, cpu_name  # benchmarks/_machine.py (scripts run from this folder)
from finetune_quality import random_init_copy

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
# task: (command, recipe, data folder, train / validation / test files, the objective's name); validation None:
# the recipe holds part of train out
TASKS = {
    "chnsenticorp": ("finetune-cls", "finetune-chnsenticorp", DATA / "chinese" / "ChnSentiCorp",
                     ("train.tsv", "dev.tsv", "test.tsv"), "accuracy"),
    "msra": ("finetune-ner", "finetune-msra", DATA / "ner" / "msra", ("train.txt", None, "test.txt"), "f1"),
    "resume": ("finetune-ner", "finetune-resume", DATA / "ner" / "resume", ("train.txt", "dev.txt", "test.txt"), "f1"),
}


def head_rows(src: Path, dst: Path, rows: int) -> Path:
    """The first ``rows`` rows of ``src``: TSV rows after the header line, or CoNLL sentences (blank-line
    separated)."""
    text = src.read_text(encoding="utf-8")
    if src.suffix == ".tsv":
        kept = "\n".join(text.splitlines()[:rows + 1]) + "\n"
    else:
        kept = "\n\n".join(text.strip().split("\n\n")[:rows]) + "\n"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(kept, encoding="utf-8")
    return dst


def sweep(name: str, model: Path, a, runs: Path, train: Path, dev: Path | None, test: Path, env: dict) -> dict:
    out = runs / name
    command, recipe = TASKS[a.task][:2]
    cmd = bertkit_cmd() + ["sweep", command, "--config", recipe, "--model", str(model),
                           "--train", str(train), "--test", str(test), "--output", str(out),
                           "--param", f"lr={a.lr}", "--param", f"epochs={a.epochs}", "--trials", str(a.trials),
                           "--pruner", "median", "--seed", str(a.seed), "--threads", str(a.threads),
                           "--logging-steps", "100", "--no-keep-best"]
    if dev is not None:
        cmd += ["--validation", str(dev)]
    if a.smoke:
        cmd += ["--max-steps", "4"]
    log = runs / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    shown = " ".join(shlex.quote(c) for c in cmd)
    print(f"$ {shown}\n  (log: {log})", flush=True)
    t0 = time.time()
    with open(log, "a", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        sys.exit(f"{name}: exit {proc.returncode}, see {log}")
    s = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    best_test = None
    if s["best"]:  # the best trial's model was scored once on test by the command itself
        m = json.loads((out / "trials" / str(s["best"]["number"]) / "metrics.json").read_text(encoding="utf-8"))
        best_test = m.get(f"test_{TASKS[a.task][4]}")
    return {"seconds": round(time.time() - t0, 1), "best": s["best"], "best_test": best_test,
            "steps_total": s["steps_total"],
            "rows": [{k: r[k] for k in ("number", "params", "objective", "state", "steps", "seconds")}
                     for r in s["rows"]]}


def fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrained", required=True, help="a model dir from pretrain-mlm (pretrain-tiny-zhwiki)")
    ap.add_argument("--task", choices=sorted(TASKS), default="chnsenticorp",
                    help="the data set and its recipe: ChnSentiCorp sentiment, MSRA or Resume NER")
    ap.add_argument("--data-dir", help="the task's data folder (default: ../shared/data/...)")
    ap.add_argument("--train-rows", type=int, help="train on the first N rows (sentences) only")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "sweep-zh"))
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--lr", default="log:3e-5:1e-3")
    ap.add_argument("--epochs", default="int:2:8")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", default="", help="comma-separated: pretrained, random-init")
    ap.add_argument("--smoke", action="store_true", help="200 rows, 2 trials of 4 steps: the pipeline only")
    a = ap.parse_args()
    runs = Path(a.runs_dir)
    _, _, folder, files, objective = TASKS[a.task]
    data = Path(a.data_dir or folder)
    train, dev, test = (data / f if f else None for f in files)
    if a.smoke:
        a.trials = 2
        a.train_rows = 200
        dev = dev and head_rows(dev, runs / "data" / f"dev-100{dev.suffix}", 100)
        test = head_rows(test, runs / "data" / f"test-100{test.suffix}", 100)
    if a.train_rows:
        train = head_rows(train, runs / "data" / f"train-{a.train_rows}{train.suffix}", a.train_rows)
    rand = runs / "random-init-model"
    if not (rand / "config.json").exists():
        random_init_copy(Path(a.pretrained), rand, a.seed)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               OMP_NUM_THREADS=str(a.threads))
    results = {"machine": f"{cpu_name()}, {os.cpu_count()} cores (shared), {a.threads} torch thread(s)",
               "space": {"lr": a.lr, "epochs": a.epochs}, "trials": a.trials, "seed": a.seed}
    skip = set(filter(None, a.skip.split(",")))
    for name, model in (("pretrained", Path(a.pretrained)), ("random-init", rand)):
        if name not in skip:
            results[name] = sweep(name, model, a, runs, train, dev, test, env)

    what = f"validation {objective}"
    print(f"\nmachine: {results['machine']}; {a.task} {train.name} -> "
          f"{dev.name if dev else 'a held-out part of train'} ({what})")
    for name in ("pretrained", "random-init"):
        r = results.get(name)
        if not r:
            continue
        print(f"\n#### {name}: {len(r['rows'])} trials, {r['steps_total']:,} training steps, {r['seconds']:.0f} s\n")
        print(f"| trial | lr | epochs | {what} | state | steps | seconds |")
        print("|---:|---:|---:|---:|---|---:|---:|")
        for row in r["rows"]:
            p = row["params"]
            obj = f"{row['objective']:.4f}" if row["objective"] is not None else "-"
            print(f"| {row['number']} | {fmt(p.get('lr'))} | {p.get('epochs')} | {obj} | {row['state'].lower()} | "
                  f"{row['steps']} | {row['seconds']:.0f} |")
    best = {n: results[n]["best"] for n in ("pretrained", "random-init") if results.get(n) and results[n]["best"]}
    print()
    for n, b in best.items():
        t = results[n]["best_test"]
        print(f"best {n}: {what} {b['objective']:.4f}" + (f", test {objective} {t:.4f}" if t is not None else "")
              + " at " + ", ".join(f"{k}={fmt(v)}" for k, v in b["params"].items()))
    if len(best) == 2:
        gain = 100 * (best["pretrained"]["objective"] - best["random-init"]["objective"])
        results["gain_points_best_vs_best"] = round(gain, 2)
        print(f"pretrained - random init, best against best: {gain:+.2f} points ({what})")
        tests = [results[n]["best_test"] for n in ("pretrained", "random-init")]
        if None not in tests:
            results["test_gain_points"] = round(100 * (tests[0] - tests[1]), 2)
            print(f"  on test: {results['test_gain_points']:+.2f} points")
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results: {runs / 'results.json'}")


if __name__ == "__main__":
    main()
