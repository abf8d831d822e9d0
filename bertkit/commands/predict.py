"""bertkit predict: fill-mask, classification and question-answering inference, files (or stdin) in,
files (or stdout) out.

Rows are sorted by length and batched (little padding), then written back in input order.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from .. import qa
from ..data import read_predict_input
from ..inference import RowProgress, classification_logits, fill_mask, open_model
from ..labels import LabelSpace
from ..log import quiet
from ..metrics import sigmoid, softmax
from ..outputs import write_records
from ..schemas import PredictConfig


def run(cfg: PredictConfig) -> dict:
    cfg.validate()
    opened = open_model(cfg)
    if opened.task == "question-answering":
        questions, contexts = qa.read_questions(cfg.input, cfg.question_column, cfg.context_column)
        rows = len(questions)
    else:
        texts, pairs, _ = read_predict_input(cfg.input, cfg.text_column, cfg.text_pair_column)
        rows = len(texts)
    model = opened.load()
    t0 = time.time()
    progress = RowProgress(rows)
    if opened.task == "question-answering":
        results = answer_rows(cfg, opened, model, questions, contexts, progress)
    else:
        results = predict_rows(cfg, opened, model, texts, pairs, progress)
    progress.close()
    elapsed = time.time() - t0
    n = write_records(results, cfg.output, flatten=FLATTEN[opened.task])
    rate = n / max(elapsed, 1e-9)
    unit = "questions" if opened.task == "question-answering" else "rows"
    if not quiet():
        print(f"predict: {n:,} {unit} in {elapsed:.1f}s ({rate:,.1f} {unit}/s), task {opened.task}"
              + (f" -> {cfg.output}" if cfg.output != "-" else ""), file=sys.stderr)
    return {"rows": n, "seconds": elapsed, "rows_per_second": rate, "task": opened.task}


def answer_rows(cfg: PredictConfig, opened, model, questions: list[str], contexts: list[str],
                progress: RowProgress | None = None) -> list[dict]:
    """One answer record per question (``answer``, ``score``, ``start``/``end`` character offsets into the
    context, and ``alternatives`` with --top-k > 1), in input order; contexts of any length (windows)."""
    settings = qa.inference_settings(opened.config, opened.max_len)
    qa.check_windows(settings["max_seq_length"], settings["doc_stride"], settings["max_question_length"])
    # answer_questions reports windows, not questions: the count is updated once the questions are answered
    results = qa.answer_questions(qa.torch_model_fn(model, opened.device), opened.tokenizer, questions, contexts,
                                  top_k=cfg.top_k, batch_size=cfg.batch_size, **settings)
    if progress is not None:
        progress.update(len(questions))
    out = []
    for q, r in zip(questions, results, strict=True):
        rec = {"question": q, "answer": r["answer"], "score": r["score"], "start": r["start"], "end": r["end"]}
        if cfg.top_k > 1:
            rec["alternatives"] = r["alternatives"]
        out.append(rec)
    return out


def predict_rows(cfg: PredictConfig, opened, model, texts: list[str], pairs: list[str] | None,
                 progress: RowProgress | None = None) -> list[dict]:
    """One result record per input row, in input order."""
    if opened.task == "fill-mask":
        return fill_mask(model, opened.tokenizer, texts, cfg.batch_size, opened.max_len, opened.device, cfg.top_k,
                         progress)
    space = LabelSpace.from_model_config(opened.config)
    logits = classification_logits(model, opened.tokenizer, texts, pairs, cfg.batch_size, opened.max_len,
                                   opened.device, progress, **opened.long_text)
    return [format_classification(t, pairs[i] if pairs else None, logits[i], space) for i, t in enumerate(texts)]


def format_classification(text: str, pair: str | None, logits: np.ndarray, space: LabelSpace) -> dict:
    rec: dict = {"text": text}
    if pair is not None:
        rec["text_pair"] = pair
    if space.problem == "regression":
        rec["label"] = "score"
        rec["score"] = round(float(logits[0]), 6)
        return rec
    if space.problem == "multi":
        probs = sigmoid(logits)
        chosen = sorted(((space.names[j], float(p)) for j, p in enumerate(probs) if p >= space.threshold),
                        key=lambda x: -x[1])
        rec["labels"] = [c[0] for c in chosen]
        rec["scores"] = [round(c[1], 6) for c in chosen]
    else:
        probs = softmax(logits[None, :])[0]
    top = int(probs.argmax())
    rec["label"] = space.names[top]
    rec["score"] = round(float(probs[top]), 6)
    rec["probabilities"] = {space.names[j]: round(float(p), 6) for j, p in enumerate(probs)}
    return rec


def _flatten_fill_mask(r: dict) -> dict:
    out = {"text": r["text"], "filled": r["filled"]}
    for j, m in enumerate(r["masks"]):
        out[f"mask{j + 1}_tokens"] = " ".join(c["token_str"] for c in m)
        out[f"mask{j + 1}_scores"] = " ".join(f"{c['score']:.4f}" for c in m)
    return out


def _flatten_qa(r: dict) -> dict:
    out = {k: v for k, v in r.items() if k != "alternatives"}
    if "alternatives" in r:
        out["alternatives"] = json.dumps(r["alternatives"], ensure_ascii=False)
    return out


def _flatten_cls(r: dict) -> dict:
    out = {k: v for k, v in r.items() if k not in ("probabilities", "labels", "scores")}
    if "labels" in r:
        out["labels"] = ",".join(r["labels"])
    for k, v in (r.get("probabilities") or {}).items():
        out[f"p_{k}"] = v
    return out


# CSV/TSV columns per task (JSON lines keep the records as they are)
FLATTEN = {"fill-mask": _flatten_fill_mask, "classification": _flatten_cls, "question-answering": _flatten_qa}
