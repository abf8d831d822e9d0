#!/usr/bin/env python
"""Benchmark: ``bertkit distill`` on CoNLL-2003 NER: a 3-layer student of a MiniLM-L6 tagger against the same
student trained without the teacher (``--alpha 0``), and tagging speed against ``pipeline("token-classification")``.

Teacher: MiniLM-L6 (the minilm extra) fine-tuned by ``bertkit finetune-ner`` on CoNLL-2003 train (1 epoch,
batch 32, lr 5e-5, max length 128), unless ``--teacher`` names one.  Students: the teacher's layers 1, 3, 5 with
its embeddings and head (``--student-layers 3``), trained on the same sentences for ``--epochs`` with soft
targets (``--alpha``, ``--temperature``) and with ``--alpha 0`` (hard labels only: the baseline), for each of
``--seeds``.  Reported:

* entity F1 (conlleval rules, every word scored) on dev and test of the teacher, the distilled students and
  the baselines (mean and each seed);
* predict sentences/s of student and teacher, as ``bertkit distill`` measures them;
* each path in its own process with ``--threads`` threads on the dev sentences as raw text (one sentence per
  row, words joined by spaces): ``pipeline("token-classification", aggregation_strategy="first")`` on the
  teacher (what a user runs today: first sub-token labels, as bertkit trains), ``bertkit predict`` on the
  teacher, on the student and on the student's int8 ONNX export; sentences/s, and for the teacher the share of
  sentences whose entities (type, start, end) bertkit predict and the pipeline agree on, among those that fit
  the model (the pipeline cuts longer ones);
* the cost of a distillation epoch (the teacher's pass plus training) against an epoch of the student trained
  alone (``--alpha 0``).

The pipeline runs at batch 8 and 32 (the ratios are against the faster), ``bertkit predict`` at its default
batch size.  With ``--unlabeled-wiki N`` the distilled students also learn the teacher's tags on N untagged
sentences of English Wikipedia (``pretrain/enwiki_sample.txt``, paragraphs cut at sentence ends, 5 to 60
words; ``bertkit distill --unlabeled``), and each baseline trains on the tagged sentences for as many steps as
the distilled student of its seed took; ``--no-speed`` skips the export and the inference timings.

    nohup .venv/bin/python benchmarks/distill_conll.py --teacher runs/conll --seeds 0 1 > distill_conll.log 2>&1 &

A quick check that the script runs (minutes on 2 cores; the numbers mean nothing):

    .venv/bin/python benchmarks/distill_conll.py --limit 64 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import bertkit_cmd  # noqa: E402
from distill_sst2 import PIPELINE_BATCHES, pipeline_peer, print_epoch_cost, print_machine  # noqa: E402
from onnx_speed import measure, run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"


def read_conll(path: Path) -> list[list[str]]:
    """Sentences as lists of words (``token<TAB>tag`` lines, a blank line between sentences)."""
    sents, cur = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            cur.append(line.split("\t")[0])
        elif cur:
            sents.append(cur)
            cur = []
    if cur:
        sents.append(cur)
    return sents


def head(src: Path, dst: Path, limit: int | None) -> Path:
    """The first ``limit`` sentences of a CoNLL file (all of it without a limit)."""
    if limit is None:
        return src
    blocks = src.read_text(encoding="utf-8").strip().split("\n\n")[:limit]
    dst.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return dst


def metrics(d: Path) -> dict:
    return json.loads((d / "metrics.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------
# One inference path, in its own process (this script with --worker)
# ------------------------------------------------------------------------------------------------

def worker(a) -> None:
    import torch

    torch.set_num_threads(a.threads)
    texts = [json.loads(ln)["text"] for ln in Path(a.input).read_text(encoding="utf-8").splitlines()]
    w0, c0 = time.perf_counter(), time.process_time()
    if a.worker == "pipeline":
        from transformers import pipeline

        pipe = pipeline("token-classification", model=a.model, tokenizer=a.model, device=-1,
                        aggregation_strategy="first")
        ents = [[[e["entity_group"], int(e["start"]), int(e["end"])] for e in out]
                for out in pipe(texts, batch_size=a.batch_size or 32)]
    else:
        from bertkit.commands.predict import run as predict
        from bertkit.log import setup
        from bertkit.schemas import PredictConfig

        setup(-1)
        out = Path(a.output)
        predict(PredictConfig(model=a.model, input=a.input, output=str(out), batch_size=a.batch_size or None,
                              threads=a.threads, backend=a.worker, device="cpu"))
        ents = [[[e["type"], e["start"], e["end"]] for e in json.loads(ln)["entities"]]
                for ln in out.read_text(encoding="utf-8").splitlines()]
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print("RESULT " + json.dumps({"rows": len(texts), "wall": wall, "cpu": cpu, "entities": ents}))


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------

def train_teacher(a, out: Path) -> None:
    run(bertkit_cmd() + ["finetune-ner", "--model", "minilm-l6", "--train", str(a.train_file), "--validation",
                         str(a.dev_file), "--test", str(a.test_file), "--output", str(out), "--epochs", "1",
                         "--batch-size", "32", "--lr", "5e-5", "--max-seq-length", "128", "--overwrite", "--quiet"],
        a.threads, "finetune-ner (teacher)")


def distill(a, teacher: Path, out: Path, alpha: float, seed: int, steps: int | None = None) -> dict:
    """One student: distilled (``alpha`` > 0; with ``--unlabeled`` sentences when given) or the baseline
    (``--alpha 0``; for ``steps`` optimizer steps when given, else ``--epochs``)."""
    if not (out / "metrics.json").is_file():
        extra = ["--max-steps", str(steps)] if steps else ["--epochs", str(a.epochs)]
        if a.unlabeled and alpha > 0:
            extra += ["--unlabeled", str(a.unlabeled)]
        if a.hidden_loss_weight and alpha > 0:
            extra += ["--hidden-loss-weight", str(a.hidden_loss_weight)]
        run(bertkit_cmd() + ["distill", "--teacher", str(teacher), "--train", str(a.train_file), "--validation",
                             str(a.dev_file), "--test", str(a.test_file), "--output", str(out), "--student-layers",
                             "3", "--alpha", str(alpha), "--temperature", str(a.temperature), *extra, "--lr",
                             str(a.lr), "--batch-size", "32", "--seed", str(seed), "--overwrite", "--quiet"],
            a.threads, f"distill --alpha {alpha:g} --seed {seed}")
    return metrics(out)


def wiki_sentences(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` sentences of 5 to 60 words of a one-paragraph-per-line text (cut after . ! or ? before
    a capital), one per line."""
    import re

    found = []
    for para in src.read_text(encoding="utf-8").splitlines():
        for sent in re.split(r"(?<=[.!?])\s+(?=[A-Z])", para.strip()):
            if 5 <= len(sent.split()) <= 60:
                found.append(sent)
        if len(found) >= n:
            break
    dst.write_text("\n".join(found[:n]) + "\n", encoding="utf-8")
    return dst


def evaluate_f1(a, model: Path, data: Path) -> float:
    out = a.work / f"eval-{model.name}-{data.stem}"
    run(bertkit_cmd() + ["evaluate", "--model", str(model), "--data", str(data), "--output", str(out), "--threads",
                         str(a.threads), "--quiet"], a.threads, f"evaluate {model.name} on {data.stem}")
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))["f1"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", help="a CoNLL-2003 tagger dir (default: fine-tune MiniLM-L6 into --workdir)")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="the shared data folder (holds ner/conll2003)")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs of every student")
    p.add_argument("--lr", type=float, default=1e-4, help="the students' peak learning rate")
    p.add_argument("--alpha", type=float, default=0.5, help="the distilled students' --alpha")
    p.add_argument("--temperature", type=float, default=2.0, help="the distilled students' --temperature")
    p.add_argument("--hidden-loss-weight", type=float, default=0.0, help="the distilled students' "
                   "--hidden-loss-weight (hidden states matched to the teacher's; 0: logits only)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="student seeds")
    p.add_argument("--threads", type=int, default=1, help="threads of every process")
    p.add_argument("--limit", type=int, help="only the first N sentences of each split (a quick check)")
    p.add_argument("--workdir", help="where models, exports and predictions go (default: a temp dir)")
    p.add_argument("--unlabeled-wiki", type=int, metavar="N", help="distil with N untagged English Wikipedia "
                   "sentences too (--unlabeled); the baselines then train for as many steps")
    p.add_argument("--no-speed", action="store_true", help="F1 only: skip the int8 export and the timings")
    p.add_argument("--batch-size", type=int, default=32, help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a)

    conll = Path(a.data_dir) / "ner" / "conll2003"
    if not (conll / "dev.txt").is_file():
        raise SystemExit(f"CoNLL-2003 not found under {conll}; pass --data-dir")
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bertkit-distill-conll-"))
    work.mkdir(parents=True, exist_ok=True)
    a.work = work
    started, load0 = time.strftime("%Y-%m-%d %H:%M %Z"), " ".join(f"{x:.2f}" for x in os.getloadavg())
    a.train_file = head(conll / "train.txt", work / "train.txt", a.limit)
    a.dev_file = head(conll / "dev.txt", work / "dev.txt", a.limit)
    a.test_file = head(conll / "test.txt", work / "test.txt", a.limit)

    teacher = Path(a.teacher) if a.teacher else work / "teacher"
    if not (teacher / "config.json").is_file():
        train_teacher(a, teacher)
    a.unlabeled = wiki_sentences(Path(a.data_dir) / "pretrain" / "enwiki_sample.txt", work / "unlabeled.txt",
                                 a.unlabeled_wiki) if a.unlabeled_wiki else None
    runs = {}
    for s in a.seeds:
        runs[("distilled", s)] = distill(a, teacher, work / f"distilled-seed{s}", a.alpha, s)
        same = runs[("distilled", s)]["steps"] if a.unlabeled else None
        runs[("baseline", s)] = distill(a, teacher, work / f"baseline-seed{s}", 0.0, s, same)
    first = work / f"distilled-seed{a.seeds[0]}"
    t = metrics(teacher)
    if a.no_speed:
        print_students(a, t, runs, None, load0, started)
        (work / "results.json").write_text(json.dumps({"teacher": t, "runs": {f"{k[0]}-seed{k[1]}": v
                                                                               for k, v in runs.items()}},
                                                      indent=2, default=str))
        print(f"\nresults: {work / 'results.json'}")
        return
    int8 = work / "student-int8"
    run(bertkit_cmd() + ["export", "--model", str(first), "--output", str(int8), "--quantize", "int8",
                         "--validation", str(a.dev_file), "--threads", str(a.threads), "--overwrite", "--quiet"],
        a.threads, "export --quantize int8")
    f1 = {name: {split: evaluate_f1(a, d, data) for split, data in (("dev", a.dev_file), ("test", a.test_file))}
          for name, d in (("teacher", teacher), ("student int8", int8))}

    sents = read_conll(a.dev_file)
    inp = work / "dev-text.jsonl"
    inp.write_text("".join(json.dumps({"text": " ".join(s)}) + "\n" for s in sents), encoding="utf-8")
    # the pipeline at two batch sizes, its faster the peer; bertkit predict at its defaults
    paths = {f"teacher, pipeline, batch {b}": ("pipeline", teacher, b) for b in PIPELINE_BATCHES}
    paths.update({"teacher, bertkit predict (torch)": ("torch", teacher, 0),
                  "student, bertkit predict (torch)": ("torch", first, 0),
                  "student int8 ONNX, bertkit predict": ("onnx", int8, 0)})
    speed = {k: measure(a, kind, model, inp, work / f"pred-{i}.jsonl", __file__, batch=b)
             for i, (k, (kind, model, b)) in enumerate(paths.items())}

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(teacher))
    max_len = json.loads((teacher / "config.json").read_text()).get("bertkit_max_seq_length", 128)
    fits = [len(tok(" ".join(s))["input_ids"]) <= max_len for s in sents]
    pipe_ents = speed[f"teacher, pipeline, batch {PIPELINE_BATCHES[-1]}"]["entities"]
    ours = speed["teacher, bertkit predict (torch)"]["entities"]
    same = sum(sorted(map(tuple, x)) == sorted(map(tuple, y))
               for x, y, ok in zip(pipe_ents, ours, fits, strict=True) if ok)

    print_students(a, t, runs, f1, load0, started)
    print(f"\n### Inference, each path in its own process (CoNLL-2003 dev, {len(sents):,} sentences as raw text)\n")
    print("| path | sentences/s (wall) | sentences per CPU-s | vs the pipeline's best (CPU) |")
    print("|---|---:|---:|---:|")
    base = pipeline_peer(speed)
    for k, r in speed.items():
        print(f"| {k} | {r['rows_per_s']:,.1f} | {r['rows_per_cpu_s']:,.1f} | {r['rows_per_cpu_s'] / base:.2f}x |")
    print(f"\nTeacher: bertkit predict and the pipeline give the same entities (type, start, end) on {same:,} of "
          f"{sum(fits):,} sentences that fit {max_len} tokens ({same / max(sum(fits), 1) * 100:.2f}%).")

    print_epoch_cost(runs, a.seeds)
    (work / "results.json").write_text(json.dumps({"teacher": t, "f1": f1, "runs": {f"{k[0]}-seed{k[1]}": v
                                                                                     for k, v in runs.items()},
                                                   "agreement": [same, sum(fits)],
                                                   "speed": {k: {x: v[x] for x in ("rows_per_s", "rows_per_cpu_s")}
                                                             for k, v in speed.items()}}, indent=2, default=str))
    print(f"\nresults: {work / 'results.json'}")


def print_students(a, t: dict, runs: dict, f1: dict | None, load0: str, started: str) -> None:
    """The F1 table: teacher, distilled students, baselines (and the int8 student when ``f1`` has it)."""
    unl = f", distilled with {a.unlabeled_wiki:,} untagged Wikipedia sentences" if a.unlabeled_wiki else ""
    print(f"\n## bertkit distill on CoNLL-2003: MiniLM-L6 tagger -> 3-layer student ({t['train_examples']:,} training "
          f"sentences{unl}, {a.epochs:g} epoch(s), seeds {', '.join(map(str, a.seeds))})\n")
    print_machine(a, load0, started)
    print("| model | steps | dev F1 (mean) | per seed | test F1 (mean) | per seed | predict sentences/s (in distill) |")
    print("|---|---:|---:|---|---:|---|---:|")
    comp = runs[("distilled", a.seeds[0])]["comparison"]
    print(f"| teacher (6 layers, {comp['teacher']['parameters'] / 1e6:.1f}M) | {t['steps']:,} | "
          f"{t['eval_f1'] * 100:.2f} | | {t['test_f1'] * 100:.2f} | | {comp['teacher']['rows_per_second']:,.1f} |")
    for name in ("distilled", "baseline"):
        dev = [runs[(name, s)]["eval_f1"] * 100 for s in a.seeds]
        test = [runs[(name, s)]["test_f1"] * 100 for s in a.seeds]
        rps = statistics.median(runs[(name, s)]["comparison"]["student"]["rows_per_second"] for s in a.seeds)
        hidden = f", hidden states x {a.hidden_loss_weight:g}" if a.hidden_loss_weight else ""
        label = f"student, alpha {a.alpha:g}{hidden}" if name == "distilled" else "student, alpha 0 (no teacher)"
        print(f"| {label} | {runs[(name, a.seeds[0])]['steps']:,} | {statistics.mean(dev):.2f} | "
              f"{', '.join(f'{x:.2f}' for x in dev)} | {statistics.mean(test):.2f} | "
              f"{', '.join(f'{x:.2f}' for x in test)} | {rps:,.1f} |")
    if f1:
        print(f"| student int8 ONNX (seed {a.seeds[0]}) | | {f1['student int8']['dev'] * 100:.2f} | | "
              f"{f1['student int8']['test'] * 100:.2f} | | |")


if __name__ == "__main__":
    main()
