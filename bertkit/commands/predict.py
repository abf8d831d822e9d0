"""bertkit predict: fill-mask and classification inference, files (or stdin) in, files (or stdout) out.

Rows are sorted by length and batched (little padding), then written back in input order.
"""

from __future__ import annotations

import sys
import time

import numpy as np

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
    texts, pairs, _ = read_predict_input(cfg.input, cfg.text_column, cfg.text_pair_column)
    model = opened.load()
    t0 = time.time()
    progress = RowProgress(len(texts))
    results = predict_rows(cfg, opened, model, texts, pairs, progress)
    progress.close()
    elapsed = time.time() - t0
    n = write_records(results, cfg.output, flatten=_flatten_fill_mask if opened.task == "fill-mask" else _flatten_cls)
    rate = n / max(elapsed, 1e-9)
    if not quiet():
        print(f"predict: {n:,} rows in {elapsed:.1f}s ({rate:,.1f} rows/s), task {opened.task}"
              + (f" -> {cfg.output}" if cfg.output != "-" else ""), file=sys.stderr)
    return {"rows": n, "seconds": elapsed, "rows_per_second": rate, "task": opened.task}


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


def _flatten_cls(r: dict) -> dict:
    out = {k: v for k, v in r.items() if k not in ("probabilities", "labels", "scores")}
    if "labels" in r:
        out["labels"] = ",".join(r["labels"])
    for k, v in (r.get("probabilities") or {}).items():
        out[f"p_{k}"] = v
    return out
