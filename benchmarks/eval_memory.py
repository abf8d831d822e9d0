#!/usr/bin/env python
"""Benchmark: MLM evaluation memory stays flat as the evaluation set grows.

bertkit scores MLM evaluation batch by batch (``batch_eval_metrics`` with a running counter of
correct masked tokens; the sparse head returns only the masked positions' predictions), so no
logits or predictions pile up.  This script measures it: the peak resident memory (``ru_maxrss``
of the process, from ``wait4``) of

* ``bertkit pretrain-mlm`` (one training step, then the Trainer's evaluation) with N and then
  ``--factor`` x N evaluation blocks, the same number of training blocks in both runs;
* ``bertkit evaluate`` of the resulting model on N and ``--factor`` x N blocks.

Every run is its own process, through the real CLI.  The target is a peak-RSS growth under 10%
for 10x the blocks.  For contrast it also prints what the standard recipe would keep: run_mlm.py's
``preprocess_logits_for_metrics`` keeps argmax ids and labels for every token (16 bytes a token),
and a plain ``compute_metrics`` without it would keep vocabulary-sized logits (4 x vocab bytes a
token).

    .venv/bin/python benchmarks/eval_memory.py                 # ~3 min on 2 cores
    .venv/bin/python benchmarks/eval_memory.py --blocks 500 --factor 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from _machine import bertkit_cmd, cpu_name  # benchmarks/_machine.py (scripts run from this folder)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "pretrain" / "enwiki_sample.txt"


def run_measured(args: list[str], env: dict, log: Path) -> tuple[int, float]:
    """Run one bertkit command; return (peak RSS in bytes, seconds).  Exits on failure."""
    t0 = time.time()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(bertkit_cmd() + args, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-10:])
        raise SystemExit(f"bertkit {args[0]} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return usage.ru_maxrss * 1024, time.time() - t0  # ru_maxrss is in KiB on Linux


def subset_dir(src: Path, dst: Path, n_rows: int) -> None:
    """A tokenized dir (manifest, tokenizer, dataset) holding the first ``n_rows`` blocks of ``src``."""
    import datasets

    datasets.disable_progress_bars()
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    shutil.copytree(src / "tokenizer", dst / "tokenizer")
    manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
    ds = datasets.load_from_disk(str(src / "dataset")).select(range(n_rows))
    ds.save_to_disk(str(dst / "dataset"))
    counts = manifest.setdefault("counts", {})
    share = n_rows / max(counts.get("blocks", n_rows), 1)
    counts["blocks"] = n_rows
    if "block_tokens" in counts:
        counts["block_tokens"] = int(counts["block_tokens"] * share)
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="a text corpus (default: ../shared enwiki_sample)")
    p.add_argument("--blocks", type=int, default=300, help="N: evaluation blocks of the small run")
    p.add_argument("--factor", type=int, default=10, help="the large run evaluates factor x N blocks")
    p.add_argument("--train-blocks", type=int, default=256, help="training blocks (same in both runs)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS (0: torch's default)")
    p.add_argument("--workdir", default=str(ROOT / "runs" / "eval_memory"))
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "eval_memory.json"))
    a = p.parse_args(argv)
    if not Path(a.data).is_file():
        raise SystemExit(f"--data {a.data}: not found; "
                         "pass a text corpus (e.g. ../shared/data/pretrain/enwiki_sample.txt)")

    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)
    n_small, n_large = a.blocks, a.blocks * a.factor
    need = a.train_blocks + n_large

    # 1. Tokenize enough of the corpus (one block is ~seq_len tokens, ~4.5 characters a token).
    corpus = work / "corpus.txt"
    want_chars = int(need * a.seq_len * 4.5 * 1.2)
    with open(a.data, encoding="utf-8") as src, open(corpus, "w", encoding="utf-8") as dst:
        got = 0
        for line in src:
            dst.write(line)
            got += len(line)
            if got >= want_chars:
                break
    tok_dir = work / "tok"
    print(f"tokenizing {got:,} characters of {a.data} ...", flush=True)
    run_measured(["tokenize", str(corpus), "--output", str(tok_dir), "--train-tokenizer", "--vocab-size", "8000",
                  "--max-seq-length", str(a.seq_len), "--overwrite", "--quiet"], env, work / "tokenize.log")
    import datasets

    have = len(datasets.load_from_disk(str(tok_dir / "dataset")))
    if have < need:
        raise SystemExit(f"only {have} blocks from the corpus, {need} needed; lower --blocks or --train-blocks")

    rows = []
    for label, n_eval in (("N", n_small), (f"{a.factor}N", n_large)):
        d = work / f"data-{n_eval}"
        subset_dir(tok_dir, d, a.train_blocks + n_eval)
        frac = n_eval / (a.train_blocks + n_eval)
        model = work / f"model-{n_eval}"
        rss, secs = run_measured(
            ["pretrain-mlm", "--data", str(d), "--output", str(model), "--preset", a.preset, "--max-steps", "1",
             "--batch-size", "16", "--eval-fraction", f"{frac:.6f}", "--overwrite", "--quiet", "--seed", "0"],
            env, work / f"pretrain-{n_eval}.log")
        m = json.loads((model / "metrics.json").read_text(encoding="utf-8"))
        rows.append({"command": "pretrain-mlm (Trainer eval)", "run": label, "eval_blocks": m.get("eval_blocks"),
                     "peak_rss": rss, "seconds": secs, "eval_loss": m.get("eval_loss")})
    model = work / f"model-{n_small}"
    for label, n_eval in (("N", n_small), (f"{a.factor}N", n_large)):
        d = work / f"evaldata-{n_eval}"
        subset_dir(tok_dir, d, n_eval)
        rss, secs = run_measured(["evaluate", "--model", str(model), "--data", str(d), "--output",
                                  str(work / f"eval-{n_eval}"), "--quiet"], env, work / f"evaluate-{n_eval}.log")
        m = json.loads((work / f"eval-{n_eval}" / "metrics.json").read_text(encoding="utf-8"))
        rows.append({"command": "evaluate", "run": label, "eval_blocks": m.get("examples"), "peak_rss": rss,
                     "seconds": secs, "eval_loss": m.get("loss")})

    import torch

    print()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}; preset {a.preset}, "
          f"seq len {a.seq_len}, {a.train_blocks} train blocks")
    print()
    print("| command | eval blocks | peak RSS MiB | growth | target | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    result = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__},
              "settings": vars(a), "rows": rows, "growth": {}}
    for i in range(0, len(rows), 2):
        small, large = rows[i], rows[i + 1]
        growth = large["peak_rss"] / small["peak_rss"] - 1
        result["growth"][small["command"]] = growth
        for r, g in ((small, ""), (large, f"{growth * 100:+.1f}%")):
            tgt = "" if not g else ("< +10% (ok)" if growth < 0.10 else "< +10% (MISS)")
            print(f"| {r['command']} | {r['eval_blocks']:,} | {r['peak_rss'] / 2**20:,.0f} | {g} | {tgt} | "
                  f"{r['seconds']:.1f} |")
    vocab = 8000
    tokens = n_large * a.seq_len
    print()
    print(f"For contrast, at {n_large:,} blocks x {a.seq_len} tokens the standard recipe keeps "
          f"{tokens * 16 / 2**20:,.0f} MiB of argmax ids + labels (run_mlm.py's preprocess_logits_for_metrics), "
          f"or {tokens * vocab * 4 / 2**30:,.1f} GiB of logits at this {vocab:,}-token vocabulary without it "
          f"({tokens * 30522 * 4 / 2**30:,.0f} GiB at BERT's 30,522).")
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"JSON: {a.json}")


if __name__ == "__main__":
    main()
