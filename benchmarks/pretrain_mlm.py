#!/usr/bin/env python
"""Benchmark: bertkit pretrain-mlm against the standard Hugging Face MLM recipe (run_mlm.py).

The peer is written out here as run_mlm.py does it: ``tokenizer(text, return_special_tokens_mask=True)``
through ``datasets.map``, ``group_texts`` (concatenate, cut into ``block_size`` chunks, drop the tail),
``DataCollatorForLanguageModeling(mlm_probability=0.15)``, a plain ``BertForMaskedLM`` and ``Trainer``.
bertkit uses its own path: what ``bertkit tokenize`` runs (``build_tokenized``: the streaming reader,
encoder and packer of ``bertkit/streaming.py``, writing Arrow shards), ``MLMCollator``,
``SparseBertForMaskedLM`` and the TrainingArguments/callbacks of ``bertkit pretrain-mlm``.

Both sides get the same text slice, the same WordPiece tokenizer (trained once with bertkit),
the same model config and initial weights (same seed), block length, batch, steps, learning-rate
schedule and torch thread count.  Every measurement runs in its own subprocess, and the two sides
alternate, so neither inherits warm caches, thread pools or environment changes from the other.

Reported per model size: training tokens/s (non-padding tokens, after a few warm-up steps), their
ratio, and the MLM loss of each trained model on the same held-out blocks, masked once (15%, fixed
seed) and scored with the full (dense) head on both.  Also the tokenization throughput at num_proc 1
and 2: the peer's ``map`` + ``group_texts`` on the lines in memory against ``bertkit tokenize``'s
pipeline from the same lines in a .txt file (reading, encoding, packing and writing the dataset).

    .venv/bin/python benchmarks/pretrain_mlm.py                      # ~10-15 min on 2 cores
    .venv/bin/python benchmarks/pretrain_mlm.py --sizes tiny --steps 20

Checkpoint saving is off on both sides (it is I/O, not training speed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_name, step_timer  # benchmarks/_machine.py (scripts run from this folder)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "pretrain" / "enwiki_sample.txt"
SIZES = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512)}
TARGETS = {"tiny": 4.0, "mini": 2.5, "small": 1.5}
TOK_TARGETS = {1: 1.0, 2: 1.6}


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def read_slice(path: Path, start: int, n: int) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < start:
                continue
            if i >= start + n:
                break
            out.append(line.rstrip("\n"))
    return out


def recipe_dataset(lines: list[str]):
    """What ``load_dataset("text", ...)`` gives run_mlm.py: one row per line, blank lines included."""
    import datasets

    return datasets.Dataset.from_dict({"text": lines})


def write_slice(lines: list[str], path: Path) -> Path:
    """The slice as the .txt file ``bertkit tokenize`` reads (docs mode: blank lines end documents)."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def recipe_tokenize(ds, tok, block_size: int, num_proc: int):
    """run_mlm.py without --line_by_line."""
    text_column_name = "text"

    def tokenize_function(examples):
        return tok(examples[text_column_name], return_special_tokens_mask=True)

    tokenized = ds.map(tokenize_function, batched=True, num_proc=num_proc if num_proc > 1 else None,
                       remove_columns=[text_column_name], desc="Running tokenizer on every text in dataset")

    def group_texts(examples):
        from itertools import chain

        concatenated_examples = {k: list(chain(*examples[k])) for k in examples.keys()}
        total_length = len(concatenated_examples[list(examples.keys())[0]])
        total_length = (total_length // block_size) * block_size
        result = {
            k: [t[i: i + block_size] for i in range(0, total_length, block_size)]
            for k, t in concatenated_examples.items()
        }
        return result

    return tokenized.map(group_texts, batched=True, num_proc=num_proc if num_proc > 1 else None,
                         desc=f"Grouping texts in chunks of {block_size}")


def bertkit_tokenize(text_file: Path, tokenizer_dir: Path, block_size: int, num_proc: int, out_dir: Path) -> Path:
    """What ``bertkit tokenize TEXT --tokenizer DIR --output OUT`` runs (less the output lock and the saved
    config): returns the dataset directory."""
    from bertkit.schemas import TokenizeConfig
    from bertkit.tokenization import DATASET_DIR, build_tokenized

    cfg = TokenizeConfig(output=str(out_dir))
    cfg.data.inputs, cfg.data.max_seq_length, cfg.data.num_proc = [str(text_file)], block_size, num_proc
    cfg.tokenizer.path = str(tokenizer_dir)
    build_tokenized(cfg.data, cfg.tokenizer, "mlm", out_dir, flag="INPUT")
    return out_dir / DATASET_DIR


# --------------------------------------------------------------------------------------------
# Workers (each in its own process)
# --------------------------------------------------------------------------------------------

def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    torch.set_num_interop_threads(1)


def worker_tokenize(a) -> dict:
    import datasets
    from transformers import AutoTokenizer

    def result(out, seconds: float) -> dict:
        col = out.data.table.column("input_ids")
        n_tokens = sum(len(c.values) for c in col.chunks) if out._indices is None else sum(map(len, out["input_ids"]))
        return {"seconds": seconds, "tokens": n_tokens, "blocks": len(out)}

    work = Path(a.workdir)
    lines = read_slice(Path(a.data), 0, a.tok_lines)
    if a.impl == "recipe":
        tok = AutoTokenizer.from_pretrained(str(work / "tokenizer"), local_files_only=True)
        ds = recipe_dataset(lines)
        t0 = time.perf_counter()
        out = recipe_tokenize(ds, tok, a.seq_len, a.num_proc)
        return result(out, time.perf_counter() - t0)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        text_file = write_slice(lines, Path(tmp) / "slice.txt")
        t0 = time.perf_counter()
        written = bertkit_tokenize(text_file, work / "tokenizer", a.seq_len, a.num_proc, Path(tmp) / "out")
        seconds = time.perf_counter() - t0
        return result(datasets.load_from_disk(str(written)), seconds)


def worker_train(a) -> dict:
    import torch

    set_threads(a.threads)
    import datasets
    from transformers import (
        AutoTokenizer,
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from bertkit.modeling import preset_config
    from bertkit.schemas import PretrainConfig

    work = Path(a.workdir)
    cfg = PretrainConfig()
    layers, hidden = SIZES[a.size]
    cfg.model.preset = a.size
    tr = cfg.train
    tr.batch_size, tr.max_steps, tr.seed, tr.logging_steps = a.batch_size, a.steps, a.seed, max(1, a.steps // 4)
    tr.save_steps = 10 ** 9  # no checkpoints on either side
    tok = AutoTokenizer.from_pretrained(str(work / "tokenizer"), local_files_only=True)
    mconfig = preset_config(cfg.model, vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    train_ds = datasets.load_from_disk(str(work / ("train_recipe" if a.impl == "recipe" else "train_bertkit")))
    out_dir = Path(tempfile.mkdtemp(prefix=f"bench-{a.impl}-{a.size}-", dir=work))

    set_seed(a.seed)
    if a.impl == "compiled":  # bertkit pretrain-mlm --compile
        tr.compile = True
    if a.impl == "recipe":
        model = BertForMaskedLM(mconfig)
        collator = DataCollatorForLanguageModeling(tokenizer=tok, mlm_probability=0.15)
        args = TrainingArguments(
            output_dir=str(out_dir), per_device_train_batch_size=tr.batch_size, learning_rate=tr.lr,
            weight_decay=tr.weight_decay, warmup_steps=tr.warmup_ratio, lr_scheduler_type=tr.scheduler,
            max_steps=tr.max_steps, seed=tr.seed, data_seed=tr.seed, logging_steps=tr.logging_steps,
            save_strategy="no", report_to=[], disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collator,
                          processing_class=tok)
    else:
        from bertkit.commands.pretrain_mlm import MLMData, build_trainer
        from bertkit.modeling import new_mlm_model

        # bertkit pretrain-mlm's own trainer stage, on the same pre-tokenized blocks as the recipe
        model = new_mlm_model(mconfig, sparse=True)
        manifest = {"parameters": {"max_seq_length": a.seq_len}, "counts": {}}
        trainer = build_trainer(cfg, out_dir, model, MLMData(train_ds, None, tok, manifest))

    state = {"tokens": 0, "counting": False, "t0": None, "t1": None}

    def count_tokens(module, args_, kwargs):
        if state["counting"] and module.training:
            am = kwargs.get("attention_mask")
            ids = kwargs.get("input_ids")
            state["tokens"] += int(am.sum()) if am is not None else int(ids.numel())

    model.register_forward_pre_hook(count_tokens, with_kwargs=True)

    trainer.add_callback(step_timer(a.warmup_steps, a.steps, state))
    t_all = time.perf_counter()
    trainer.train()
    t_all = time.perf_counter() - t_all
    seconds = state["t1"] - state["t0"]

    # Held-out loss: the same pre-masked batches for both, scored with the full head.
    batches = torch.load(str(work / "eval_batches.pt"))
    model.eval()
    loss_sum, n = 0.0, 0
    with torch.no_grad():
        for b in batches:
            logits = BertForMaskedLM.forward(model, input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            lab = b["labels"]
            loss_sum += float(torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)).float(), lab.view(-1),
                                                                ignore_index=-100, reduction="sum"))
            n += int((lab != -100).sum())
    return {"tokens": state["tokens"], "seconds": seconds, "tokens_per_s": state["tokens"] / seconds,
            "train_seconds_total": t_all, "eval_loss": loss_sum / n, "eval_masked": n,
            "threads": torch.get_num_threads()}


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------

def run_worker(a, kind: str, **kw) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--workdir", str(a.workdir),
           "--data", str(a.data), "--seq-len", str(a.seq_len), "--threads", str(a.threads),
           "--batch-size", str(a.batch_size), "--steps", str(a.steps), "--seed", str(a.seed),
           "--warmup-steps", str(a.warmup_steps), "--tok-lines", str(a.tok_lines)]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(a.threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"worker {kind} {kw} failed ({proc.returncode})")
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"worker {kind} {kw}: no result\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def machine() -> str:
    import torch

    cpu = cpu_name()
    return (f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} "
            f"({torch.get_num_threads()} default threads), python {platform.python_version()}")


def prepare(a) -> None:
    import torch
    from transformers import AutoTokenizer

    from bertkit.masking import MLMCollator
    from bertkit.tokenization import train_wordpiece

    work = Path(a.workdir)
    train_lines = read_slice(Path(a.data), 0, a.slice_lines)
    eval_lines = read_slice(Path(a.data), a.slice_lines, a.eval_lines)
    if not eval_lines:
        raise SystemExit(f"--data {a.data}: fewer than {a.slice_lines} lines; nothing left for the held-out blocks")
    t0 = time.perf_counter()
    nonblank = [s for s in (x.strip() for x in train_lines) if s]
    tok = train_wordpiece((nonblank[i: i + 1000] for i in range(0, len(nonblank), 1000)), a.vocab_size, lowercase=True)
    tok.save_pretrained(str(work / "tokenizer"))
    print(f"tokenizer: {len(tok):,} tokens, trained in {time.perf_counter() - t0:.1f}s", flush=True)
    tok = AutoTokenizer.from_pretrained(str(work / "tokenizer"), local_files_only=True)
    # training sets (not timed)
    recipe_tokenize(recipe_dataset(train_lines), tok, a.seq_len, 1).save_to_disk(str(work / "train_recipe"))
    written = bertkit_tokenize(write_slice(train_lines, work / "train.txt"), work / "tokenizer", a.seq_len, 1,
                               work / "train_bertkit_tokenized")
    written.rename(work / "train_bertkit")
    # held-out blocks: the peer's format (group_texts of the next lines), masked once at 15%
    ev = recipe_tokenize(recipe_dataset(eval_lines), tok, a.seq_len, 1)
    ev = ev.select(range(min(a.eval_blocks, len(ev))))
    coll = MLMCollator(tok, 0.15)
    batches = []
    with coll.evaluation():
        for s in range(0, len(ev), 32):
            rows = [{"input_ids": r} for r in ev[s: s + 32]["input_ids"]]
            batches.append(coll(rows))
    torch.save(batches, str(work / "eval_batches.pt"))
    print(f"held-out: {len(ev)} blocks of {a.seq_len} tokens, "
          f"{sum(int((b['labels'] != -100).sum()) for b in batches):,} masked", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="plain text, one line per paragraph, blank between docs")
    p.add_argument("--slice-lines", type=int, default=20000, help="lines of --data to train on (from the top)")
    p.add_argument("--eval-lines", type=int, default=2000, help="lines after the slice for the held-out blocks")
    p.add_argument("--eval-blocks", type=int, default=64)
    p.add_argument("--tok-lines", type=int, default=20000, help="lines for the tokenization benchmark")
    p.add_argument("--sizes", default="tiny,mini,small")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup-steps", type=int, default=2, help="steps not timed at the start of each run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=1, help="alternating (recipe, bertkit) pairs per size")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--skip-tokenization", action="store_true")
    p.add_argument("--workdir", default=None)
    # worker mode
    p.add_argument("--worker", choices=("tokenize", "train"), help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true",
                   help="also time bertkit with --compile (torch.compile) and print it against plain bertkit")
    p.add_argument("--compile-only", action="store_true",
                   help="with --compile: skip the recipe runs (only plain bertkit against bertkit --compile)")
    p.add_argument("--impl", choices=("recipe", "bertkit", "compiled"), help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    p.add_argument("--num-proc", type=int, default=1, help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.worker:
        import logging

        logging.disable(logging.WARNING)
        res = worker_tokenize(a) if a.worker == "tokenize" else worker_train(a)
        print("RESULT " + json.dumps(res), flush=True)
        return

    if not Path(a.data).is_file():
        raise SystemExit(f"--data {a.data}: no such file")
    if a.compile_only:
        a.compile = True
    sizes = [s.strip() for s in a.sizes.split(",") if s.strip()]
    for s in sizes:
        if s not in SIZES:
            raise SystemExit(f"--sizes: unknown size {s}; choose from {', '.join(SIZES)}")
    tmp = None
    if a.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bertkit-bench-")
        a.workdir = tmp.name
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    print(f"machine: {machine()}", flush=True)
    print(f"data: {a.data} (first {a.slice_lines:,} lines; held-out: next {a.eval_lines:,}); "
          f"seq {a.seq_len}, batch {a.batch_size}, {a.steps} steps ({a.warmup_steps} untimed), "
          f"torch threads {a.threads} on both sides", flush=True)
    prepare(a)

    tok_rows = []
    if not a.skip_tokenization:
        for n_proc in (1, 2):
            res = {"recipe": [], "bertkit": []}
            order = ["recipe", "bertkit"] if n_proc == 1 else ["bertkit", "recipe"]
            for rep in range(2):
                for impl in (order if rep % 2 == 0 else order[::-1]):
                    r = run_worker(a, "tokenize", impl=impl, num_proc=n_proc)
                    res[impl].append(r)
                    print(f"tokenize num_proc={n_proc} {impl}: {r['seconds']:.2f}s ({r['blocks']:,} blocks)",
                          flush=True)
            best = {k: min(v, key=lambda r: r["seconds"]) for k, v in res.items()}
            tok_rows.append((n_proc, best["recipe"], best["bertkit"]))

    train_rows, compile_rows = [], []
    for si, size in enumerate(sizes):
        res = {"recipe": [], "bertkit": []}
        for rep in range(a.repeats):
            order = ["recipe", "bertkit"] if (si + rep) % 2 == 0 else ["bertkit", "recipe"]
            for impl in order:
                if impl == "recipe" and a.compile_only:
                    continue
                r = run_worker(a, "train", impl=impl, size=size)
                res[impl].append(r)
                print(f"train {size} {impl}: {r['tokens_per_s']:,.0f} tokens/s ({r['tokens']:,} tokens in "
                      f"{r['seconds']:.1f}s), eval loss {r['eval_loss']:.4f}", flush=True)
            if a.compile:
                r = run_worker(a, "train", impl="compiled", size=size)
                res.setdefault("compiled", []).append(r)
                print(f"train {size} bertkit --compile: {r['tokens_per_s']:,.0f} tokens/s, "
                      f"{r['train_seconds_total'] - r['seconds']:.1f}s untimed (compilation + warm-up), "
                      f"eval loss {r['eval_loss']:.4f}", flush=True)
        best = {k: max(v, key=lambda r: r["tokens_per_s"]) for k, v in res.items() if v}
        if not a.compile_only:
            train_rows.append((size, best["recipe"], best["bertkit"]))
        if a.compile:
            compile_rows.append((size, best["bertkit"], best["compiled"]))

    print()
    print(f"Machine: {machine()}")
    print(f"Data: {Path(a.data).name}, first {a.slice_lines:,} lines; seq {a.seq_len}, batch {a.batch_size}, "
          f"{a.steps} steps (tokens/s over the last {a.steps - a.warmup_steps}), vocab {a.vocab_size:,} requested, "
          f"{a.threads} torch threads each, best of {a.repeats} alternating run(s)")
    if train_rows:
        print()
        print("| size (layers/hidden) | recipe tokens/s | bertkit tokens/s | ratio | target | recipe eval loss | "
              "bertkit eval loss | loss diff |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for size, r, b in train_rows:
        ratio = b["tokens_per_s"] / r["tokens_per_s"]
        diff = (b["eval_loss"] - r["eval_loss"]) / r["eval_loss"] * 100
        ok = "ok" if ratio >= TARGETS[size] and abs(diff) <= 2 else "MISS"
        print(f"| {size} ({SIZES[size][0]}/{SIZES[size][1]}) | {r['tokens_per_s']:,.0f} | {b['tokens_per_s']:,.0f} "
              f"| {ratio:.2f}x | >={TARGETS[size]}x ({ok}) | {r['eval_loss']:.4f} | {b['eval_loss']:.4f} "
              f"| {diff:+.2f}% |")
    if compile_rows:
        print()
        print("torch.compile (bertkit --compile against plain bertkit; untimed = compilation and the warm-up steps):")
        print()
        print("| size | bertkit tokens/s | --compile tokens/s | ratio | untimed s, plain | untimed s, --compile | "
              "eval loss, --compile |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for size, b, c in compile_rows:
            print(f"| {size} | {b['tokens_per_s']:,.0f} | {c['tokens_per_s']:,.0f} | "
                  f"{c['tokens_per_s'] / b['tokens_per_s']:.2f}x | {b['train_seconds_total'] - b['seconds']:.1f} | "
                  f"{c['train_seconds_total'] - c['seconds']:.1f} | {c['eval_loss']:.4f} |")
    if tok_rows:
        print()
        print(f"Tokenization of {a.tok_lines:,} lines into {a.seq_len}-token blocks (recipe: map + group_texts in "
              f"memory; bertkit: what `bertkit tokenize` runs, from a .txt file to the saved dataset), best of 2:")
        print()
        print("| num_proc | recipe s | bertkit s | recipe tokens/s | bertkit tokens/s | ratio | target |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for n_proc, r, b in tok_rows:
            ratio = r["seconds"] / b["seconds"]
            ok = "ok" if ratio >= TOK_TARGETS[n_proc] else "MISS"
            print(f"| {n_proc} | {r['seconds']:.2f} | {b['seconds']:.2f} | {r['tokens'] / r['seconds']:,.0f} | "
                  f"{b['tokens'] / b['seconds']:,.0f} | {ratio:.2f}x | >={TOK_TARGETS[n_proc]}x ({ok}) |")
    print()
    print(f"total {time.time() - t_start:.0f}s; load average at the end (1/5/15 min): "
          + "/".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
