#!/usr/bin/env python
"""Benchmark: ``bertkit distill`` on SST-2: a 3-layer student of a MiniLM-L6 teacher against the same student
trained without the teacher (``--alpha 0``), and what it buys at inference.

Teacher: MiniLM-L6 (the minilm extra) fine-tuned by ``bertkit finetune-cls`` on the first ``--train-rows``
rows of GLUE SST-2 train.tsv (``--epochs``, max length 64), unless ``--teacher`` names one.  Students: the
teacher's layers 1, 3, 5 with its embeddings and head (``--student-layers 3``), trained on the same rows for
the same epochs with soft targets (``--alpha``, ``--temperature``) and with ``--alpha 0`` (hard labels
only: the baseline), for each of ``--seeds``.  Reported:

* dev accuracy (SST-2 dev, 872 rows) of the teacher, the distilled students and the baselines (mean and
  each seed);
* predict rows/s of student and teacher, as ``bertkit distill`` measures them (the same loop, in process);
* the int8 ONNX export of the first distilled student (``bertkit export --quantize int8``) run by
  ``bertkit predict``, against ``transformers.pipeline("text-classification")`` on the teacher at batch 8 and
  32 (ratios against the faster): each in its own process with ``--threads`` threads, on SST-2 dev repeated
  to ``--rows`` rows (the workers of ``benchmarks/onnx_speed.py``; bertkit predict at its default batch
  size);
* the cost of a distillation epoch (the teacher's pass over the training set plus training) against a
  fine-tuning epoch of the teacher.

    nohup .venv/bin/python benchmarks/distill_sst2.py --seeds 0 1 > distill_sst2.log 2>&1 &

With ``--unlabeled FILE`` (texts under a ``sentence`` header) the distilled students also learn the teacher's
outputs on those texts, and the baselines train on the labelled rows for as many steps; ``--no-speed`` skips
the export and the inference timings (the students' architecture, hence their speed, does not change).

A quick check that the script runs (minutes on 2 cores; the numbers mean nothing):

    .venv/bin/python benchmarks/distill_sst2.py --train-rows 64 --dev-limit 64 --rows 64 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import bertkit_cmd, cpu_name  # noqa: E402
from onnx_speed import measure, read_tsv, run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"
COLUMNS = ["--text-column", "sentence", "--label-column", "label"]
BATCH = 32  # teacher and students
PIPELINE_BATCHES = (8, 32)  # the peer's batch sizes; its faster one is the ratios' base


def metrics(d: Path) -> dict:
    return json.loads((d / "metrics.json").read_text(encoding="utf-8"))


def train_teacher(a, out: Path) -> None:
    run(bertkit_cmd() + ["finetune-cls", "--model", "minilm-l6", "--train", str(a.train_file), "--validation",
                         str(a.dev_file), *COLUMNS, "--output", str(out), "--epochs", str(a.epochs),
                         "--batch-size", str(BATCH), "--max-seq-length", "64", "--overwrite", "--quiet"],
        a.threads, "finetune-cls (teacher)")


def distill(a, teacher: Path, out: Path, alpha: float, seed: int) -> dict:
    """One student: distilled (``alpha`` > 0, with ``--unlabeled`` when given) or the baseline (``--alpha 0``,
    the labelled rows alone; with ``--unlabeled``, for as many steps as the distilled student takes)."""
    if (out / "metrics.json").is_file():  # a finished run (a rerun of the script goes on where it stopped)
        return metrics(out)
    length = ["--epochs", str(a.epochs)]
    if a.unlabeled and alpha > 0:
        length += ["--unlabeled", str(a.unlabeled)]
    elif a.unlabeled:
        length = ["--max-steps", str(same_steps(a))]
    run(bertkit_cmd() + ["distill", "--teacher", str(teacher), "--train", str(a.train_file), "--validation",
                         str(a.dev_file), *COLUMNS, "--output", str(out), "--student-layers", "3", "--alpha",
                         str(alpha), "--temperature", str(a.temperature), *length, "--lr",
                         str(a.lr), "--batch-size", str(BATCH), "--seed", str(seed), "--overwrite", "--quiet"],
        a.threads, f"distill --alpha {alpha:g} --seed {seed}")
    return metrics(out)


def same_steps(a) -> int:
    """The distilled student's optimizer steps with ``--unlabeled``: batches of ``BATCH`` over the labelled
    and the unlabeled rows, for ``--epochs``."""
    rows = a.train_rows + len(Path(a.unlabeled).read_text(encoding="utf-8").splitlines()) - 1  # less the header
    return int(math.ceil(rows / BATCH) * a.epochs)


def print_machine(a, load0: str, started: str) -> None:
    import torch
    import transformers

    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores, shared (load average at start {load0}, at end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}); {a.threads} thread(s); torch {torch.__version__}, "
          f"transformers {transformers.__version__}; {started}. Students: lr {a.lr:g}, distilled at alpha "
          f"{a.alpha:g}, T {a.temperature:g}.\n")


def print_epoch_cost(runs: dict, seeds: list[int], teacher_epoch: float | None = None) -> None:
    """Seconds per epoch of the distilled and the baseline students (the teacher's pass counted in), and the
    ratio the target is on: a distillation epoch against an epoch of the student trained alone (``--alpha 0``)."""
    print("\n### Training cost per epoch\n")
    if teacher_epoch:
        print(f"- fine-tuning the teacher: {teacher_epoch:.1f}s per epoch")
    for name in ("distilled", "baseline"):
        m = [runs[(name, s)] for s in seeds]
        epoch = statistics.median((x["train_seconds"] + x["teacher_seconds"]) / max(x["epochs"], 1e-9) for x in m)
        teach = statistics.median(x["teacher_seconds"] for x in m)
        print(f"- {name} student: {epoch:.1f}s per epoch (teacher pass {teach:.1f}s, once per run)"
              + (f", {epoch / teacher_epoch:.2f}x the teacher's fine-tuning epoch" if teacher_epoch else ""))
    ratio = [(runs[("distilled", s)]["train_seconds"] + runs[("distilled", s)]["teacher_seconds"])
             / max(runs[("baseline", s)]["train_seconds"], 1e-9) for s in seeds]
    print(f"- distillation (teacher pass included) / training the student alone: {statistics.median(ratio):.2f}x "
          "(target <= 1.3x)")
    cpu = [runs[(name, s)] for name in ("distilled", "baseline") for s in seeds]
    if all("train_cpu_seconds" in x for x in cpu):  # CPU time: the figure to trust on a shared machine
        d = {s: runs[("distilled", s)] for s in seeds}
        b = {s: runs[("baseline", s)] for s in seeds}
        with_pass = statistics.median((d[s]["train_cpu_seconds"] + d[s]["teacher_cpu_seconds"])
                                      / max(b[s]["train_cpu_seconds"], 1e-9) for s in seeds)
        cached = statistics.median(d[s]["train_cpu_seconds"] / max(b[s]["train_cpu_seconds"], 1e-9) for s in seeds)
        teach = statistics.median(d[s]["teacher_cpu_seconds"] for s in seeds)
        print(f"- in CPU seconds of the process: distillation / the student alone {with_pass:.2f}x with the teacher "
              f"pass ({teach:.1f} CPU-s, once per run), {cached:.2f}x for the training on the cached outputs "
              "(target <= 1.3x per epoch; with unlabeled texts both runs take the same steps over data of "
              "different lengths)")


def inference_speed(a, teacher: Path, first: Path, work: Path) -> tuple[dict, list, int]:
    """The int8 export of the first distilled student, then each inference path in its own process on SST-2
    dev repeated to ``--rows``: (timings by path, gold labels, repeats)."""
    run(bertkit_cmd() + ["export", "--model", str(first), "--output", str(work / "student-int8"), "--quantize",
                         "int8", "--validation", str(a.dev_file), "--text-column", "sentence", "--threads",
                         str(a.threads), "--overwrite"], a.threads, "export --quantize int8")

    dev = read_tsv(a.dev_file)
    reps = -(-a.rows // len(dev))
    inp = work / "dev-repeated.jsonl"
    inp.write_text("".join(json.dumps({"text": t}) + "\n" for _ in range(reps) for t, _ in dev), encoding="utf-8")
    gold = [y for _ in range(reps) for _, y in dev]
    # the pipeline at two batch sizes, its best the peer; bertkit predict at its defaults (64 rows per forward
    # pass on torch, 8 on ONNX Runtime on a CPU)
    speed = {f"teacher, pipeline, batch {b}": measure(a, "pipeline", teacher, inp, work / f"pred-pipeline{b}.jsonl",
                                                      batch=b) for b in PIPELINE_BATCHES}
    speed.update({
        "teacher, bertkit predict (torch)": measure(a, "torch", teacher, inp, work / "pred-teacher.jsonl", batch=0),
        "student, bertkit predict (torch)": measure(a, "torch", first, inp, work / "pred-student.jsonl", batch=0),
        "student int8 ONNX, bertkit predict": measure(a, "onnx", work / "student-int8", inp, work / "pred-int8.jsonl",
                                                      batch=0)})
    return speed, gold, reps


def pipeline_peer(speed: dict) -> float:
    """The pipeline's rows per CPU-second at its best measured batch size: the fairest peer."""
    return max(r["rows_per_cpu_s"] for k, r in speed.items() if ", pipeline," in k)


def print_speed(speed: dict, gold: list, reps: int) -> None:
    n = len(gold)
    print(f"\n### Inference, each path in its own process (SST-2 dev x{reps} = {n:,} rows)\n")
    print("| path | rows/s (wall) | rows per CPU-s | vs the pipeline's best (CPU) | dev accuracy |")
    print("|---|---:|---:|---:|---:|")
    base = pipeline_peer(speed)
    for k, r in speed.items():
        acc = sum(int(lab) == y for lab, y in zip(r["labels"], gold, strict=True)) / n
        print(f"| {k} | {r['rows_per_s']:,.1f} | {r['rows_per_cpu_s']:,.1f} | {r['rows_per_cpu_s'] / base:.2f}x | "
              f"{acc * 100:.2f} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", help="a fine-tuned SST-2 classifier dir (default: fine-tune MiniLM-L6 into --workdir)")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="the shared data folder (holds glue/SST-2)")
    p.add_argument("--train-rows", type=int, help="first N rows of SST-2 train.tsv (teacher and students; default: "
                                                  "all 67,349)")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs of the teacher and of every student")
    p.add_argument("--lr", type=float, default=1e-4, help="the students' peak learning rate")
    p.add_argument("--alpha", type=float, default=0.5, help="the distilled students' --alpha")
    p.add_argument("--temperature", type=float, default=2.0, help="the distilled students' --temperature")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="student seeds")
    p.add_argument("--unlabeled", help="a TSV of texts under a 'sentence' header: the distilled students' "
                   "--unlabeled transfer data; the baselines then train for as many steps on the labelled rows")
    p.add_argument("--no-speed", action="store_true", help="accuracy only: skip the int8 export and the "
                   "inference timings")
    p.add_argument("--rows", type=int, default=5000, help="dev set repeated to at least this many rows (speed)")
    p.add_argument("--threads", type=int, default=1, help="threads of every process")
    p.add_argument("--dev-limit", type=int, help="only the first N dev rows (a quick check of the script)")
    p.add_argument("--workdir", help="where models, exports and predictions go (default: a temp dir)")
    a = p.parse_args(argv)

    sst2 = Path(a.data_dir) / "glue" / "SST-2"
    if not (sst2 / "dev.tsv").is_file():
        raise SystemExit(f"SST-2 not found under {sst2}; pass --data-dir")
    if a.unlabeled and not Path(a.unlabeled).is_file():
        raise SystemExit(f"--unlabeled {a.unlabeled}: no such file")
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bertkit-distill-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started, load0 = time.strftime("%Y-%m-%d %H:%M %Z"), " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = (sst2 / "train.tsv").read_text(encoding="utf-8").splitlines()
    a.train_file = work / "sst2-train-head.tsv"
    a.train_rows = min(a.train_rows or len(lines) - 1, len(lines) - 1)
    a.train_file.write_text("\n".join(lines[: a.train_rows + 1]) + "\n", encoding="utf-8")
    dev_lines = (sst2 / "dev.tsv").read_text(encoding="utf-8").splitlines()
    a.dev_file = work / "sst2-dev.tsv"
    a.dev_file.write_text("\n".join(dev_lines[: (a.dev_limit or len(dev_lines)) + 1]) + "\n", encoding="utf-8")

    teacher = Path(a.teacher) if a.teacher else work / "teacher"
    if not (teacher / "config.json").is_file():
        train_teacher(a, teacher)
    runs = {(name, s): distill(a, teacher, work / f"{name}-seed{s}", alpha, s)
            for s in a.seeds for name, alpha in (("distilled", a.alpha), ("baseline", 0.0))}
    first = work / f"distilled-seed{a.seeds[0]}"
    speed, gold, reps = {}, [], 0
    if not a.no_speed:
        speed, gold, reps = inference_speed(a, teacher, first, work)

    t = metrics(teacher)
    print(f"\n## bertkit distill on SST-2: MiniLM-L6 teacher -> 3-layer student ({a.train_rows:,} training rows, "
          f"{a.epochs:g} epoch(s), seeds {', '.join(map(str, a.seeds))})\n")
    print_machine(a, load0, started)
    print("| model | dev accuracy (mean) | per seed | parameters | predict rows/s (in distill) |")
    print("|---|---:|---|---:|---:|")
    comp = runs[("distilled", a.seeds[0])]["comparison"]
    print(f"| teacher (6 layers) | {t['eval_accuracy'] * 100:.2f} | | {comp['teacher']['parameters'] / 1e6:.1f}M | "
          f"{comp['teacher']['rows_per_second']:,.1f} |")
    for name in ("distilled", "baseline"):
        accs = [runs[(name, s)]["eval_accuracy"] * 100 for s in a.seeds]
        rps = statistics.median(runs[(name, s)]["comparison"]["student"]["rows_per_second"] for s in a.seeds)
        label = f"student, alpha {a.alpha:g}" if name == "distilled" else "student, alpha 0 (no teacher)"
        label += f", {runs[(name, a.seeds[0])]['steps']:,} steps"
        print(f"| {label} | {statistics.mean(accs):.2f} | {', '.join(f'{x:.2f}' for x in accs)} | "
              f"{comp['student']['parameters'] / 1e6:.1f}M | {rps:,.1f} |")

    if speed:
        print_speed(speed, gold, reps)

    print_epoch_cost(runs, a.seeds, t["train_seconds"] / max(t["epochs"], 1e-9))
    (work / "results.json").write_text(json.dumps({"teacher": t, "runs": {f"{k[0]}-seed{k[1]}": v
                                                                          for k, v in runs.items()},
                                                   "speed": {k: {x: v[x] for x in ("rows_per_s", "rows_per_cpu_s")}
                                                             for k, v in speed.items()}}, indent=2, default=str))
    print(f"\nresults: {work / 'results.json'}")


if __name__ == "__main__":
    main()
