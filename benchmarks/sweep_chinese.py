#!/usr/bin/env python
"""Benchmark: the Chinese comparison of docs/benchmarks.md (pretrained against random-init BERT-tiny on ChnSentiCorp) as
two ``bertkit sweep`` commands, best against best.

The pretrained model comes from ``pretrain-mlm --config pretrain-tiny-zhwiki`` (``--pretrained DIR``);
the random-init model is the same config and tokenizer with fresh weights (seeded).  Each model is swept
over lr x epochs with the ``finetune-chnsenticorp`` recipe fixing everything else (max length 128,
head-tail long texts, batch 32), TPE with median pruning at each epoch's evaluation, same seed, so the
comparison no longer depends on which learning rate a person happened to try for each model.

    .venv/bin/python benchmarks/sweep_chinese.py --pretrained runs/bert-tiny-zh --runs-dir runs/sweep-zh
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
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "chinese" / "ChnSentiCorp"


def head_rows(src: Path, dst: Path, rows: int) -> Path:
    lines = src.read_text(encoding="utf-8").splitlines()[:rows + 1]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


def sweep(name: str, model: Path, a, runs: Path, train: Path, dev: Path, test: Path, env: dict) -> dict:
    out = runs / name
    cmd = bertkit_cmd() + ["sweep", "finetune-cls", "--config", "finetune-chnsenticorp", "--model", str(model),
                           "--train", str(train), "--validation", str(dev), "--test", str(test), "--output", str(out),
                           "--param", f"lr={a.lr}", "--param", f"epochs={a.epochs}", "--trials", str(a.trials),
                           "--pruner", "median", "--seed", str(a.seed), "--threads", str(a.threads),
                           "--logging-steps", "100", "--no-keep-best"]
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
    return {"seconds": round(time.time() - t0, 1), "best": s["best"], "steps_total": s["steps_total"],
            "rows": [{k: r[k] for k in ("number", "params", "objective", "state", "steps", "seconds")}
                     for r in s["rows"]]}


def fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrained", required=True, help="a model dir from pretrain-mlm (pretrain-tiny-zhwiki)")
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA), help="the ChnSentiCorp folder")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "sweep-zh"))
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--lr", default="log:3e-5:1e-3")
    ap.add_argument("--epochs", default="int:2:8")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", default="", help="comma-separated: pretrained, random-init")
    ap.add_argument("--smoke", action="store_true", help="200 rows, 2 trials of 4 steps: the pipeline only")
    a = ap.parse_args()
    runs, data = Path(a.runs_dir), Path(a.data_dir)
    train, dev, test = data / "train.tsv", data / "dev.tsv", data / "test.tsv"
    if a.smoke:
        a.trials = 2
        train = head_rows(train, runs / "data" / "train-200.tsv", 200)
        dev = head_rows(dev, runs / "data" / "dev-100.tsv", 100)
        test = head_rows(test, runs / "data" / "test-100.tsv", 100)
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

    print(f"\nmachine: {results['machine']}; ChnSentiCorp {train.name} -> {dev.name} (dev accuracy)")
    for name in ("pretrained", "random-init"):
        r = results.get(name)
        if not r:
            continue
        print(f"\n#### {name}: {len(r['rows'])} trials, {r['steps_total']:,} training steps, {r['seconds']:.0f} s\n")
        print("| trial | lr | epochs | dev accuracy | state | steps | seconds |")
        print("|---:|---:|---:|---:|---|---:|---:|")
        for row in r["rows"]:
            p = row["params"]
            obj = f"{row['objective']:.4f}" if row["objective"] is not None else "-"
            print(f"| {row['number']} | {fmt(p.get('lr'))} | {p.get('epochs')} | {obj} | {row['state'].lower()} | "
                  f"{row['steps']} | {row['seconds']:.0f} |")
    best = {n: results[n]["best"] for n in ("pretrained", "random-init") if results.get(n) and results[n]["best"]}
    print()
    for n, b in best.items():
        print(f"best {n}: dev accuracy {b['objective']:.4f} at "
              + ", ".join(f"{k}={fmt(v)}" for k, v in b["params"].items()))
    if len(best) == 2:
        gain = 100 * (best["pretrained"]["objective"] - best["random-init"]["objective"])
        results["gain_points_best_vs_best"] = round(gain, 2)
        print(f"pretrained - random init, best against best: {gain:+.2f} points")
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results: {runs / 'results.json'}")


if __name__ == "__main__":
    main()
