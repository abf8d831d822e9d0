#!/usr/bin/env python
"""Benchmark: ``bertkit export`` (ONNX fp32 and int8) and ``bertkit predict`` on ONNX Runtime against
``transformers.pipeline("text-classification")`` and ``bertkit predict`` on torch.

Model: an SST-2 classifier fine-tuned from MiniLM-L6 (``bertkit finetune-cls --model minilm-l6`` on the
first ``--train-rows`` rows of GLUE SST-2 train.tsv, 1 epoch, max length 64), trained here unless
``--model`` names one.  Data: SST-2 dev (872 rows) repeated to at least ``--rows`` rows.

Every path runs in its own subprocess with the same thread count (``--threads``; OMP_NUM_THREADS, torch
and ONNX Runtime intra-op threads), the pipeline at batch 8 and at 32, bertkit predict at its default batch
size, timed from before the model is loaded to the last prediction (bertkit:
``bertkit.commands.predict.run``, the command itself, writing its JSON lines; the pipeline: ``pipeline(...)``
then its call), in wall time and in CPU time of the process.  The paths alternate for ``--rounds`` rounds; a
ratio is the median over rounds of the per-round ratio against the pipeline's faster batch size (the fairest
peer).  On a shared machine the CPU-time ratio is the one to read (waiting for a core is not the program's
cost; with one thread CPU time equals wall time on an idle machine).  Dev accuracy and the argmax
agreement with the torch model are taken on the predictions themselves.

Targets: fp32 ONNX >= 2x the pipeline with the argmax equal on every row; int8 >= 3x, dev
accuracy within 0.5 point of torch, model.onnx <= 40% of the fp32 size.

    nohup .venv/bin/python benchmarks/onnx_speed.py --threads 1 > onnx_speed.log 2>&1 &
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import bertkit_cmd, cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"
FP32_TARGET, INT8_TARGET, INT8_ACC_POINTS, INT8_SIZE = 2.0, 3.0, 0.5, 0.40


def read_tsv(path: Path) -> list[tuple[str, int]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if lines[0].split("\t")[:2] != ["sentence", "label"]:
        raise SystemExit(f"{path}: expected columns sentence, label")
    return [(t, int(y)) for t, y in (ln.rsplit("\t", 1) for ln in lines[1:] if ln.strip())]


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def run(cmd: list[str], threads: int, what: str) -> subprocess.CompletedProcess:
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(threads))
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{what} failed ({proc.returncode}): {' '.join(cmd)}")
    print(f"[{what}: {time.time() - t0:.0f}s]", file=sys.stderr, flush=True)
    return proc


# ------------------------------------------------------------------------------------------------
# The pipeline, in its own process (this script with --worker pipeline)
# ------------------------------------------------------------------------------------------------

def worker(a) -> None:
    import torch

    torch.set_num_threads(a.threads)
    texts = [json.loads(ln)["text"] for ln in Path(a.input).read_text(encoding="utf-8").splitlines()]
    w0, c0 = time.perf_counter(), time.process_time()
    if a.worker == "pipeline":
        from transformers import pipeline

        pipe = pipeline("text-classification", model=a.model, tokenizer=a.model, device=-1,
                        batch_size=a.batch_size or 32)
        labels = [o["label"] for o in pipe(texts)]
    else:
        from bertkit.commands.predict import run as predict
        from bertkit.log import setup
        from bertkit.schemas import PredictConfig

        setup(-1)
        out = Path(a.output)
        predict(PredictConfig(model=a.model, input=a.input, output=str(out), batch_size=a.batch_size or None,
                              threads=a.threads, backend=a.worker, device="cpu"))
        labels = [json.loads(ln)["label"] for ln in out.read_text(encoding="utf-8").splitlines()]
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print("RESULT " + json.dumps({"rows": len(texts), "wall": wall, "cpu": cpu, "labels": labels}))


def measure(a, kind: str, model: Path, inp: Path, out: Path, script: str = __file__, batch: int = 32) -> dict:
    """One path (``kind``: a worker of ``script``, this one by default) in its own process, ``batch`` rows per
    forward pass (0: ``bertkit predict``'s default for the backend); its rows/s."""
    proc = run([sys.executable, str(Path(script).resolve()), "--worker", kind, "--model", str(model),
                "--input", str(inp), "--output", str(out), "--threads", str(a.threads), "--batch-size", str(batch)],
               a.threads, f"{kind}, batch {batch or 'default'}")
    res = json.loads(next(ln for ln in proc.stdout.splitlines()[::-1] if ln.startswith("RESULT "))[7:])
    res["rows_per_s"], res["rows_per_cpu_s"] = res["rows"] / res["wall"], res["rows"] / res["cpu"]
    return res


def train(a, out: Path) -> None:
    rows = (a.sst2 / "train.tsv").read_text(encoding="utf-8").splitlines()[: a.train_rows + 1]
    train_file = out.parent / "sst2-train-head.tsv"
    train_file.write_text("\n".join(rows) + "\n", encoding="utf-8")
    run(bertkit_cmd() + ["finetune-cls", "--model", "minilm-l6", "--train", str(train_file),
                         "--validation", str(a.sst2 / "dev.tsv"), "--text-column", "sentence", "--label-column",
                         "label", "--output", str(out), "--epochs", "1", "--batch-size", "32",
                         "--max-seq-length", "64", "--overwrite", "--quiet"], a.threads, "finetune-cls")


def export(a, model: Path, out: Path, *extra: str) -> dict:
    run(bertkit_cmd() + ["export", "--model", str(model), "--output", str(out), "--overwrite", "--validation",
                         str(a.sst2 / "dev.tsv"), "--text-column", "sentence", "--threads", str(a.threads), *extra],
        a.threads, f"bertkit export {' '.join(extra)}".strip())
    return json.loads((out / "export.json").read_text(encoding="utf-8"))


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model and data flags of the benchmarks that fine-tune and export an SST-2 classifier."""
    p.add_argument("--model", help="a fine-tuned SST-2 classifier dir (default: train one into --workdir)")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="the shared data folder (holds glue/SST-2)")
    p.add_argument("--train-rows", type=int, default=4000, help="first N rows of SST-2 train.tsv to fine-tune on")
    p.add_argument("--reuse", action="store_true", help="reuse exports already in --workdir")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--rows", type=int, default=5000, help="dev set repeated to at least this many rows")
    p.add_argument("--threads", type=int, default=1, help="threads of every path (one count for all)")
    p.add_argument("--workdir", help="where the model, exports and predictions go (default: a temp dir)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of the four paths, alternating")
    p.add_argument("--dev-limit", type=int, help="only the first N dev rows (a quick check of the script)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=32, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a)

    a.sst2 = Path(a.data_dir) / "glue" / "SST-2"
    if not (a.sst2 / "dev.tsv").is_file():
        raise SystemExit(f"SST-2 not found under {a.sst2}; pass --data-dir")
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bertkit-onnx-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.strftime("%Y-%m-%d %H:%M %Z")

    model = Path(a.model) if a.model else work / "sst2-minilm"
    if not (model / "config.json").is_file():
        train(a, model)
    reps_ = {}
    for name, extra in (("fp32", ()), ("int8", ("--quantize", "int8"))):
        d = work / f"onnx-{name}"
        reps_[name] = (json.loads((d / "export.json").read_text(encoding="utf-8")) if a.reuse and
                       (d / "export.json").is_file() else export(a, model, d, *extra))
    fp32_rep, int8_rep = reps_["fp32"], reps_["int8"]

    dev = read_tsv(a.sst2 / "dev.tsv")[: a.dev_limit]
    reps = -(-a.rows // len(dev))
    inp = work / "dev-repeated.jsonl"
    inp.write_text("".join(json.dumps({"text": t}) + "\n" for _ in range(reps) for t, _ in dev), encoding="utf-8")
    n = reps * len(dev)
    gold = [y for _ in range(reps) for _, y in dev]

    import statistics

    # the pipeline at batch 8 and 32 (each round's faster is the ratios' base: the fairest peer), bertkit
    # predict at its defaults (64 rows per pass on torch, 8 on ONNX Runtime on a CPU)
    paths = {"pipeline8": ("pipeline", model, 8), "pipeline32": ("pipeline", model, 32), "torch": ("torch", model, 0),
             "fp32": ("onnx", work / "onnx-fp32", 0), "int8": ("onnx", work / "onnx-int8", 0)}
    rounds: dict[str, list[dict]] = {k: [] for k in paths}
    for i in range(a.rounds):
        order = list(paths) if i % 2 == 0 else list(paths)[::-1]
        for k in order:
            kind, mdir, batch = paths[k]
            rounds[k].append(measure(a, kind, mdir, inp, work / f"pred-{k}.jsonl", batch=batch))
    best = [max(x, y, key=lambda r: r["rows_per_cpu_s"]) for x, y in zip(rounds["pipeline8"], rounds["pipeline32"],
                                                                          strict=True)]
    res = {}
    for k, rs in rounds.items():
        r = dict(rs[-1])
        r["rows_per_s"] = statistics.median(x["rows_per_s"] for x in rs)
        r["rows_per_cpu_s"] = statistics.median(x["rows_per_cpu_s"] for x in rs)
        r["ratio"] = statistics.median(x["rows_per_s"] / p["rows_per_s"] for x, p in zip(rs, best, strict=True))
        r["cpu_ratio"] = statistics.median(x["rows_per_cpu_s"] / p["rows_per_cpu_s"]
                                           for x, p in zip(rs, best, strict=True))
        r["all"] = [(round(x["rows_per_s"], 1), round(x["rows_per_cpu_s"], 1)) for x in rs]
        res[k] = r
    ref = res["torch"]["labels"]
    for r in res.values():
        r["accuracy"] = sum(int(lab) == y for lab, y in zip(r["labels"], gold, strict=True)) / n
        r["agree"] = sum(x == y for x, y in zip(r["labels"], ref, strict=True))

    size = {"fp32": fp32_rep["files"]["model.onnx"], "int8": int8_rep["files"]["model.onnx"]}
    q = int8_rep["int8"]
    cands = {(c["per_channel"], c["embeddings"]): c for c in q["candidates"]}
    lin = cands[(q["per_channel"], False)]
    emb = cands[(q["per_channel"], True)]
    import onnxruntime
    import torch
    import transformers

    print(f"\n## bertkit export / predict on ONNX Runtime vs pipeline (SST-2 dev x{reps} = {n:,} rows)\n")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores, shared with other jobs (load average at start "
          f"{load0}, at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}); {a.threads} thread(s) for every path; "
          f"pipeline at batch 8 and 32, bertkit predict at its default batch; {a.rounds} rounds; python "
          f"{platform.python_version()}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, onnxruntime {onnxruntime.__version__}; {started}.\n")
    print("| path | rows/s (wall) | vs the pipeline's best | rows per CPU-s | vs the pipeline's best (CPU) | "
          "dev accuracy | argmax = torch | model file |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    names = {"pipeline8": 'pipeline("text-classification", batch_size=8)',
             "pipeline32": 'pipeline("text-classification", batch_size=32)', "torch": "bertkit predict (torch)",
             "fp32": "bertkit predict, ONNX fp32", "int8": "bertkit predict, ONNX int8"}
    st_bytes = sum(f.stat().st_size for f in model.glob("*.safetensors"))
    files = {"pipeline8": st_bytes, "pipeline32": st_bytes, "torch": st_bytes, "fp32": size["fp32"],
             "int8": size["int8"]}
    for k, r in res.items():
        print(f"| {names[k]} | {r['rows_per_s']:,.1f} | {r['ratio']:.2f}x | {r['rows_per_cpu_s']:,.1f} | "
              f"{r['cpu_ratio']:.2f}x | {r['accuracy'] * 100:.2f} | {r['agree']:,}/{n:,} | {files[k] / 1e6:.1f} MB |")
    print("\nper round (rows/s wall, rows per CPU-s): " + "; ".join(f"{k} {r['all']}" for k, r in res.items()))
    print(f"\nint8: {'per-channel' if q['per_channel'] else 'per-tensor'} weights (chosen on the dev metric), "
          f"embeddings {'quantized' if q['embeddings'] else 'kept fp32'}: {q['embeddings_choice']}. Quantizing the "
          f"embeddings takes the file from {lin['bytes'] / 1e6:.1f} MB to {emb['bytes'] / 1e6:.1f} MB "
          f"(saves {(lin['bytes'] - emb['bytes']) / size['fp32'] * 100:.1f}% of the fp32 size), dev accuracy "
          f"{lin['metrics']['accuracy'] * 100:.2f} -> {emb['metrics']['accuracy'] * 100:.2f}.")
    print("int8 candidates: " + "; ".join(
        f"{'pc' if c['per_channel'] else 'pt'}{'+emb' if c['embeddings'] else ''} {c['bytes'] / 1e6:.1f} MB "
        f"acc {c['metrics']['accuracy'] * 100:.2f}" for c in q["candidates"]))
    v = fp32_rep["validation"]
    print(f"export checks: fp32 max |logit diff| vs torch {fp32_rep['sample_inputs']['max_abs_logit_difference']:.2g}"
          f" (64 dev texts); dev accuracy torch {v['torch']['accuracy'] * 100:.2f}, fp32 "
          f"{v['onnx_fp32']['accuracy'] * 100:.2f}, int8 {int8_rep['validation']['onnx_int8']['accuracy'] * 100:.2f}")
    ok = {
        "fp32 >= 2x pipeline (CPU time)": res["fp32"]["cpu_ratio"] >= FP32_TARGET,
        "fp32 argmax = torch on every row": res["fp32"]["agree"] == n,
        "int8 >= 3x pipeline (CPU time)": res["int8"]["cpu_ratio"] >= INT8_TARGET,
        "int8 dev accuracy within 0.5 point": abs(res["int8"]["accuracy"] - res["torch"]["accuracy"]) * 100
        <= INT8_ACC_POINTS,
        "int8 file <= 40% of fp32": size["int8"] <= INT8_SIZE * size["fp32"],
    }
    print(f"int8 file: {size['int8'] / size['fp32'] * 100:.1f}% of fp32")
    print("\nTargets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in ok.items()))
    print(f"\n(work dir: {work})")


if __name__ == "__main__":
    main()
