#!/usr/bin/env python
"""Benchmark: fine-tuning quality on real data, through the bertkit CLI (each step a subprocess).

Tasks (``--tasks``, comma-separated; default all but the two long ones):

| task | model | data | metric | target |
|---|---|---|---|---|
| sst2 | MiniLM-L6 | GLUE SST-2 | dev accuracy | >= 0.89 |
| mrpc | MiniLM-L6 | GLUE MRPC (pairs) | dev F1 | >= 0.85 |
| stsb | MiniLM-L6 | GLUE STS-B (pairs, regression) | dev Pearson | >= 0.84 |
| cola | MiniLM-L6 | GLUE CoLA (headerless) | dev MCC | reported |
| goemotions | MiniLM-L6 | GoEmotions (multi-label, 28) | dev micro-F1 | >= 0.50 |
| chinese | BERT-tiny (``--zh-preset``) pretrained here | zhwiki -> ChnSentiCorp | dev acc | >= 0.85, +3 over random |

``chinese`` trains a WordPiece tokenizer and tokenizes zhwiki_sample (``bertkit tokenize``), pretrains a
BERT-tiny (``--zh-preset``) with ``bertkit pretrain-mlm`` within ``--time-budget`` (default 30m), fine-tunes it on
ChnSentiCorp, and fine-tunes the same architecture from random initialisation (the pretrained
model's config and tokenizer, fresh weights, saved by this script) with the same command for comparison.
Its "ok" is at that one command; random init may prefer another learning rate (docs/benchmarks.md
"Fine-tuning quality on real data" compares each at its better one).

    .venv/bin/python benchmarks/finetune_quality.py --tasks mrpc,stsb,cola
    .venv/bin/python benchmarks/finetune_quality.py --tasks all --smoke      # a few steps each, end to end

``--smoke`` runs every step with a handful of optimizer steps (and a 2,000-line zhwiki slice), to
prove the pipeline works end to end; its metric values mean nothing.  Results are printed as a
markdown table and written as JSON to ``--out``.
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

from bertkit.summary import fmt_duration

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"
ALL_TASKS = ("sst2", "mrpc", "stsb", "cola", "goemotions", "chinese")
DEFAULT_TASKS = "sst2,mrpc,stsb,cola"


def show(cmd: list[str]) -> str:
    parts = list(cmd)
    if parts[:2] == [sys.executable, "-m"]:
        parts = parts[2:]
    elif parts and parts[0].endswith(("/bertkit", "/torchrun")):
        parts[0] = Path(parts[0]).name
    return " ".join(shlex.quote(p) for p in parts)


class Runner:
    def __init__(self, a):
        self.a = a
        self.log_dir = Path(a.runs_dir) / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def bertkit(self, name: str, args: list[str], processes: int = 1) -> tuple[float, str]:
        """Run one bertkit command (under torchrun with ``processes`` > 1, one share of the cores each);
        returns (seconds, shown command).  Its stderr goes to a log file."""
        env = self.env()
        if processes > 1:
            threads = str(max(1, (os.cpu_count() or processes) // processes))
            env["OMP_NUM_THREADS"] = threads
            cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(processes),
                   "--master_port", "29561", "-m", "bertkit"] + args
            shown = f"OMP_NUM_THREADS={threads} " + show(cmd)
        else:
            cmd = bertkit_cmd() + args
            shown = show(cmd)
        log = self.log_dir / f"{name}.log"
        print(f"$ {shown}\n  (log: {log})", flush=True)
        t0 = time.time()
        with open(log, "w", encoding="utf-8") as fh:
            fh.write(f"$ {shown}\n")
            fh.flush()
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        seconds = time.time() - t0
        if proc.returncode != 0:
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            raise RuntimeError(f"{name}: exit {proc.returncode} after {seconds:.0f}s\n" + "\n".join(tail))
        return seconds, shown

    def env(self) -> dict:
        env = dict(os.environ)
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            env[k] = "1"
        if self.a.threads:
            env["OMP_NUM_THREADS"] = str(self.a.threads)
        return env


def data_file(a, path: Path, rows: int = 200) -> Path:
    """The file itself; with --smoke, a copy of its first ``rows`` lines (+1 for a header) in the runs dir."""
    if not a.smoke:
        return path
    dst = Path(a.runs_dir) / "smoke-data" / path.parent.name / path.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "rb") as src, open(dst, "wb") as out:
        for i, line in enumerate(src):
            if i > rows:
                break
            out.write(line)
    return dst


def metrics_of(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def finetune_args(a, *, train: Path, validation: Path, out: Path, model: str, text: str, label: str,
                  pair: str | None = None, max_len: int, epochs: float, lr: float, batch: int, extra=()) -> list[str]:
    train, validation = data_file(a, train, 400), data_file(a, validation, 100)
    args = ["finetune-cls", "--model", model, "--train", str(train), "--validation", str(validation),
            "--text-column", text, "--label-column", label, "--max-seq-length", str(max_len),
            "--batch-size", str(batch), "--lr", str(lr), "--warmup-ratio", "0.1", "--seed", str(a.seed),
            "--output", str(out), "--overwrite"]
    if pair:
        args += ["--text-pair-column", pair]
    if a.smoke:
        args += ["--max-steps", str(a.smoke_steps), "--logging-steps", "1"]
    else:
        args += ["--epochs", str(epochs), "--logging-steps", "50"]
    return args + list(extra)


# --------------------------------------------------------------------------------------------
# Tasks: each returns a list of result rows
# --------------------------------------------------------------------------------------------

def glue_task(a, r: Runner, task: str) -> list[dict]:
    glue = Path(a.data_dir) / "glue"
    spec = {
        # task: (folder, columns, metric key, target, max_len, epochs, lr, batch, extra flags)
        "sst2": ("SST-2", dict(text="sentence", label="label"), "accuracy", 0.89, 64, 2, 5e-5, 32,
                 ["--eval-steps", "500"]),
        "mrpc": ("MRPC", dict(text="#1 String", pair="#2 String", label="Quality"), "f1", 0.85, 128, 4, 5e-5, 32,
                 ["--metric", "f1"]),
        "stsb": ("STS-B", dict(text="sentence1", pair="sentence2", label="score"), "pearsonr", 0.84, 128, 5, 5e-5, 32,
                 ["--problem", "regression"]),
        "cola": ("CoLA", dict(text="3", label="1"), "matthews_correlation", None, 64, 3, 5e-5, 32,
                 ["--metric", "matthews_correlation"]),
    }[task]
    folder, cols, metric, target, max_len, epochs, lr, batch, extra = spec
    d = glue / folder
    out = Path(a.runs_dir) / task
    args = finetune_args(a, train=d / "train.tsv", validation=d / "dev.tsv", out=out, model="minilm-l6",
                         max_len=max_len, epochs=epochs, lr=lr, batch=batch, extra=extra, **cols)
    seconds, shown = r.bertkit(task, args)
    m = metrics_of(out)
    return [row(task, f"dev {metric}", m.get(f"eval_{metric}"), target, seconds, [shown], m)]


def goemotions_task(a, r: Runner) -> list[dict]:
    d = Path(a.data_dir) / "goemotions"
    out = Path(a.runs_dir) / "goemotions"
    args = finetune_args(a, train=d / "train.tsv", validation=d / "dev.tsv", out=out, model="minilm-l6",
                         text="text", label="label", max_len=64, epochs=a.goemotions_epochs, lr=a.goemotions_lr,
                         batch=32,
                         extra=["--problem", "multi", "--labels", str(d / "labels.txt"), "--tune-threshold",
                                "--metric", "f1_micro"])
    seconds, shown = r.bertkit("goemotions", args)
    m = metrics_of(out)
    return [row("goemotions", "dev micro-F1", m.get("eval_f1_micro"), 0.50, seconds, [shown], m)]


def random_init_copy(src: Path, dst: Path, seed: int) -> None:
    """The architecture, config and tokenizer of ``src`` with freshly initialised weights."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoTokenizer, BertForMaskedLM

    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(str(src), local_files_only=True)
    config.architectures = ["BertForMaskedLM"]
    model = BertForMaskedLM(config)
    if dst.exists():
        shutil.rmtree(dst)
    model.save_pretrained(str(dst), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(src), local_files_only=True).save_pretrained(str(dst))


def chinese_task(a, r: Runner) -> list[dict]:
    data = Path(a.data_dir)
    corpus = data / "pretrain" / "zhwiki_sample.txt"
    chn = data / "chinese" / "ChnSentiCorp"
    runs = Path(a.runs_dir)
    if a.smoke:  # a small slice of the corpus keeps tokenizer training and tokenization short
        sliced = runs / "zhwiki_smoke.txt"
        with open(corpus, encoding="utf-8") as src, open(sliced, "w", encoding="utf-8") as dst:
            for i, line in enumerate(src):
                if i >= 2000:
                    break
                dst.write(line)
        corpus = sliced
    tok_out, mlm_out, rand_out = runs / "zh-tok", runs / "zh-mlm", runs / "zh-random-init"
    if a.zh_pretrained:  # reuse the tokenizer and pretrained model of an earlier run (fine-tune settings only)
        prev = Path(a.zh_pretrained)
        tok_out, mlm_out = prev / "zh-tok", prev / "zh-mlm"
        t_tok, c_tok = earlier_run(prev / "logs" / "chinese-tokenize.log")
        t_pre, c_pre = earlier_run(prev / "logs" / "chinese-pretrain.log")
    else:
        t_tok, c_tok, t_pre, c_pre = pretrain_chinese(a, r, corpus, tok_out, mlm_out)
    pm = metrics_of(mlm_out)
    random_init_copy(mlm_out, rand_out, a.seed)
    return finetune_chinese(a, r, chn, runs, mlm_out, rand_out, pm, t_tok, c_tok, t_pre, c_pre)


def earlier_run(log: Path) -> tuple[float, str]:
    """(seconds, command) of a bertkit run from its log: the first line is the command, the summary
    has a ``time : 12.3s`` line."""
    import re

    lines = log.read_text(encoding="utf-8").splitlines()
    secs = [float(m.group(1)) for ln in lines if (m := re.match(r"^time\s*:\s*([\d.]+)s", ln))]
    return (secs[-1] if secs else 0.0), lines[0].removeprefix("$ ")


def pretrain_chinese(a, r: Runner, corpus: Path, tok_out: Path, mlm_out: Path):
    t_tok, c_tok = r.bertkit("chinese-tokenize", [
        "tokenize", str(corpus), "--output", str(tok_out), "--train-tokenizer",
        "--vocab-size", str(min(8000, a.zh_vocab_size) if a.smoke else a.zh_vocab_size), "--max-seq-length", "128",
        "--num-proc", "2", "--overwrite"])
    pre = ["pretrain-mlm", "--data", str(tok_out), "--output", str(mlm_out), "--preset", a.zh_preset,
           "--mlm-probability", str(a.zh_mlm_probability), "--batch-size", str(max(1, 32 // a.zh_processes)),
           "--lr", str(a.zh_lr),
           "--seed", str(a.seed), "--set", f"model.dropout={a.zh_dropout}",
           "--overwrite"]
    pre += (["--max-steps", str(a.smoke_steps), "--logging-steps", "1"] if a.smoke
            else ["--epochs", "10", "--time-budget", a.time_budget, "--eval-steps", "1000", "--logging-steps", "100"])
    t_pre, c_pre = r.bertkit("chinese-pretrain", pre, processes=a.zh_processes)
    return t_tok, c_tok, t_pre, c_pre


def finetune_chinese(a, r: Runner, chn: Path, runs: Path, mlm_out: Path, rand_out: Path, pm: dict,
                     t_tok: float, c_tok: str, t_pre: float, c_pre: str) -> list[dict]:
    rows = []
    results = {}
    for name, model in (("chinese", mlm_out), ("chinese-random-init", rand_out)):
        out = runs / f"{name}-chnsenticorp"
        args = finetune_args(a, train=chn / "train.tsv", validation=chn / "dev.tsv", out=out, model=str(model),
                             text="text_a", label="label", max_len=128, epochs=a.zh_finetune_epochs,
                             lr=a.zh_finetune_lr, batch=32,
                             extra=["--long-text", "head-tail"]
                             + (["--head-lr", str(a.zh_finetune_head_lr)] if a.zh_finetune_head_lr else [])
                             + (["--dropout", str(a.zh_finetune_dropout)] if a.zh_finetune_dropout is not None else []))
        seconds, shown = r.bertkit(f"{name}-finetune", args)
        m = metrics_of(out)
        results[name] = (seconds, shown, m)
    s_pre, c_ft, m_pre = results["chinese"]
    s_rnd, c_rnd, m_rnd = results["chinese-random-init"]
    acc, acc_rnd = m_pre.get("eval_accuracy"), m_rnd.get("eval_accuracy")
    gain = (acc - acc_rnd) * 100 if acc is not None and acc_rnd is not None else None
    pre_row = row("chinese", "dev accuracy (pretrained here)", acc, 0.85, t_tok + t_pre + s_pre, [c_tok, c_pre, c_ft],
                  m_pre)
    pre_row["pretrain_metrics"] = {k: pm.get(k) for k in ("eval_loss", "perplexity", "masked_accuracy", "steps",
                                                          "train_seconds", "tokens") if k in pm} or pm
    pre_row["gain_points_over_random_init"] = gain
    pre_row["passed"] = bool(pre_row["passed"] and gain is not None and gain >= 3)
    pre_row["target"] = (">= 0.85 and >= +3 points over random init"
                         + (f" (gain {gain:+.1f})" if gain is not None else ""))
    rows.append(pre_row)
    rows.append(row("chinese-random-init", "dev accuracy (random init)", acc_rnd, None, s_rnd, [c_rnd], m_rnd))
    return rows


def row(task, metric, value, target, seconds, commands, metrics) -> dict:
    passed = None if target is None or not isinstance(target, (int, float)) else (value is not None and value >= target)
    return {"task": task, "metric": metric, "value": value,
            "target": (f">= {target}" if isinstance(target, (int, float)) else target or "reported"),
            "passed": passed, "seconds": round(seconds, 1), "commands": commands,
            "steps": metrics.get("steps"), "epochs": metrics.get("epochs"),
            "metrics": {k: v for k, v in metrics.items()
                        if k.startswith(("eval_", "test_")) or k in ("train_loss", "threshold")}}


def print_table(rows: list[dict], smoke: bool) -> None:
    print()
    if smoke:
        print("SMOKE RUN: a few steps per model; the values below only show the pipeline runs end to end.")
        print()
    print("| task | metric | value | target | time | command |")
    print("|---|---|---:|---|---:|---|")
    for rw in rows:
        v = "error" if rw.get("error") else ("n/a" if rw["value"] is None else f"{rw['value']:.4f}")
        status = "" if rw["passed"] is None else (" (ok)" if rw["passed"] else " (MISS)")
        cmds = "<br>".join(f"`{c.replace('|', chr(92) + '|')}`" for c in rw["commands"])
        print(f"| {rw['task']} | {rw['metric']} | {v} | {rw['target']}{status} | {fmt_duration(rw['seconds'])} "
              f"| {cmds} |")


def positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return n


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="the shared data folder (glue/, goemotions/, ...)")
    p.add_argument("--tasks", default=DEFAULT_TASKS, help=f"comma-separated from {', '.join(ALL_TASKS)}, or all")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "finetune_quality"), help="where models and logs go")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "finetune_quality.json"))
    p.add_argument("--time-budget", default="30m", help="chinese: pretraining wall time (bertkit --time-budget)")
    p.add_argument("--zh-preset", default="tiny",
                   help="chinese: model size preset to pretrain (tiny sees ~3x the tokens of mini in the same budget "
                        "on 2 CPU cores, and fine-tunes ~4x faster)")
    p.add_argument("--goemotions-epochs", type=float, default=2)
    p.add_argument("--goemotions-lr", type=float, default=8e-5)
    p.add_argument("--zh-pretrained", metavar="RUNS_DIR",
                   help="chinese: reuse zh-tok/ and zh-mlm/ (and their logs) of an earlier run's --runs-dir")
    p.add_argument("--zh-processes", type=positive_int, default=1, metavar="N",
                   help="chinese: pretraining processes (torchrun; global batch 32, the cores shared between them). "
                        "On 2 CPU cores, 2 processes of one thread see ~1.3x the tokens of one process of two threads")
    p.add_argument("--zh-vocab-size", type=int, default=8000,
                   help="chinese: WordPiece vocabulary (8,000 covers the common characters; the output layer of a "
                        "small model costs more than its encoder at 21,128, BERT-Chinese's size)")
    p.add_argument("--zh-lr", type=float, default=1e-3, help="chinese: pretraining peak learning rate")
    p.add_argument("--zh-dropout", type=float, default=0.1,
                   help="chinese: dropout while pretraining (0 with --zh-lr 2e-3 doubled the masked accuracy "
                        "but did not fine-tune better; docs/benchmarks.md)")
    p.add_argument("--zh-mlm-probability", type=float, default=0.3, help="chinese: pretraining masking rate")
    p.add_argument("--zh-finetune-lr", type=float, default=3e-4, help="chinese: ChnSentiCorp learning rate")
    p.add_argument("--zh-finetune-head-lr", type=float, default=None,
                   help="chinese: ChnSentiCorp learning rate of the new head (default: --zh-finetune-lr)")
    p.add_argument("--zh-finetune-dropout", type=float, default=None,
                   help="chinese: ChnSentiCorp dropout of both models (bertkit --dropout; default: the pretraining's)")
    p.add_argument("--zh-finetune-epochs", type=float, default=5, help="chinese: ChnSentiCorp epochs")
    p.add_argument("--smoke", action="store_true",
                   help="a few optimizer steps per model, to test the script end to end")
    p.add_argument("--smoke-steps", type=int, default=4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for the commands (0: torch's default)")
    p.add_argument("--report", nargs="+", metavar="JSON",
                   help="print one table from the JSON files of earlier runs (e.g. tasks run in parallel) and exit")
    a = p.parse_args(argv)
    if a.report:
        rows, machines = [], []
        for f in a.report:
            saved = json.loads(Path(f).read_text(encoding="utf-8"))
            rows.extend(saved["results"])
            if saved.get("machine") and saved["machine"] not in machines:
                machines.append(saved["machine"])
        print_table(rows, smoke=False)
        print()
        print("machine: " + "; ".join(machines or ["not recorded"]))
        return

    tasks = list(ALL_TASKS) if a.tasks == "all" else [t.strip() for t in a.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in ALL_TASKS]
    if bad:
        raise SystemExit(f"--tasks: unknown {', '.join(bad)}; choose from {', '.join(ALL_TASKS)} or all")
    need = {"sst2": "glue/SST-2/train.tsv", "mrpc": "glue/MRPC/train.tsv", "stsb": "glue/STS-B/train.tsv",
            "cola": "glue/CoLA/train.tsv", "goemotions": "goemotions/labels.txt",
            "chinese": "chinese/ChnSentiCorp/train.tsv"}
    missing = [need[t] for t in tasks if not (Path(a.data_dir) / need[t]).is_file()]
    if "chinese" in tasks and not (Path(a.data_dir) / "pretrain" / "zhwiki_sample.txt").is_file():
        missing.append("pretrain/zhwiki_sample.txt")
    if missing:
        raise SystemExit(f"data not found under {a.data_dir}: {', '.join(missing)}; pass --data-dir pointing at the "
                         "shared data folder (see its README.md)")
    Path(a.runs_dir).mkdir(parents=True, exist_ok=True)
    r = Runner(a)
    import torch

    machine = (f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"
               + (f", OMP_NUM_THREADS={a.threads}" if a.threads else ""))
    print(f"machine: {machine}; tasks {', '.join(tasks)}{' (smoke)' if a.smoke else ''}; runs in {a.runs_dir}",
          flush=True)
    rows: list[dict] = []
    out_path = Path(a.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    for task in tasks:
        t0 = time.time()
        try:
            if task == "goemotions":
                new = goemotions_task(a, r)
            elif task == "chinese":
                new = chinese_task(a, r)
            else:
                new = glue_task(a, r, task)
        except RuntimeError as e:
            print(f"{task}: FAILED: {e}", flush=True)
            new = [{"task": task, "metric": "-", "value": None, "target": "-", "passed": False, "error": str(e),
                    "seconds": round(time.time() - t0, 1), "commands": []}]
        for rw in new:
            v = "n/a" if rw["value"] is None else f"{rw['value']:.4f}"
            print(f"{rw['task']}: {rw['metric']} {v} (target {rw['target']}) in {fmt_duration(rw['seconds'])}",
                  flush=True)
        rows.extend(new)
        out_path.write_text(json.dumps({"smoke": a.smoke, "machine": machine, "data_dir": str(a.data_dir),
                                        "results": rows}, indent=2,
                                       ensure_ascii=False) + "\n", encoding="utf-8")
    print_table(rows, a.smoke)
    print()
    print(f"total {fmt_duration(time.time() - t_start)}; JSON: {out_path}")
    if any(rw.get("error") for rw in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
