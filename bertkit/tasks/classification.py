"""Sequence classification: single-label, multi-label, regression, text pairs.

Long texts are handled as the model was fine-tuned (``bertkit_long_text`` in its config): truncated,
head + tail, or sliding windows whose logits are averaged per text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .base import FEATURES, ModelFn, Scored, Task, Windows, run_chunks


class ClassificationTask(Task):
    name = "classification"
    auto_model = "AutoModelForSequenceClassification"
    architectures = ("ForSequenceClassification",)
    description = "sequence classification (single-label, multi-label, regression, pairs)"
    optional_fields = ("text_pair",)

    def __init__(self, config, tokenizer, max_len: int, path=None):
        from ..labels import LabelSpace

        super().__init__(config, tokenizer, max_len, path)
        self.space = LabelSpace.from_model_config(config)
        self.long_text = getattr(config, "bertkit_long_text", "truncate") or "truncate"
        stride = getattr(config, "bertkit_stride", None)
        self.stride = stride if stride is not None and 0 <= stride < max_len // 2 else min(32, max_len // 4)

    def prepare_torch(self, model):
        from ..modeling import cls_only_last_layer

        cls_only_last_layer(model)  # the same logits, ~1.2x the rows/s (see the function)
        return model

    # -- inference ----------------------------------------------------------------------------

    def read_inputs(self, cfg) -> list[dict]:
        from ..data import read_predict_input

        texts, pairs, _ = read_predict_input(cfg.input, cfg.text_column, cfg.text_pair_column)
        return rows_of(texts, pairs)

    def request_rows(self, inputs) -> list[dict]:
        rows = super().request_rows(inputs)
        paired = ["text_pair" in r for r in rows]
        if any(paired) and not all(paired):
            raise ValueError(f"inputs[{paired.index(not paired[0])}]: every row of a request has a text_pair, or none")
        return rows

    def info(self) -> dict:
        return {"problem": self.space.problem, "labels": self.space.names}

    def encode(self, rows: Sequence[dict]) -> Windows:
        tok = self.tokenizer
        texts = [r["text"] for r in rows]
        pairs = [r["text_pair"] for r in rows] if rows and rows[0].get("text_pair") is not None else None
        if self.long_text == "head-tail" and not pairs:
            from ..tokenization import head_tail

            raw = tok(texts, add_special_tokens=False)["input_ids"]
            ids = [head_tail(x, self.max_len, tok.cls_token_id, tok.sep_token_id) for x in raw]
            inputs = {"input_ids": ids}
            if "token_type_ids" in tok.model_input_names:
                inputs["token_type_ids"] = [[0] * len(x) for x in ids]
            return Windows(inputs, np.arange(len(rows)))
        kwargs: dict = dict(truncation="only_second" if pairs else True, max_length=self.max_len)
        if self.long_text == "sliding-window":
            kwargs.update(return_overflowing_tokens=True, stride=self.stride)
        enc = tok(texts, pairs, **kwargs)
        mapping = enc.get("overflow_to_sample_mapping")
        row = np.asarray(mapping if mapping is not None else range(len(rows)), dtype=np.int64)
        return Windows({k: enc[k] for k in FEATURES if k in enc}, row)

    def row_logits(self, windows: Windows, results: list, n_rows: int) -> np.ndarray:
        """One logit vector per row: the mean over its windows."""
        from ..metrics import mean_by_group

        logits = np.stack([r["logits"] for r in results]) if results else np.zeros((0, 1), dtype=np.float32)
        if len(windows) != n_rows:
            logits = mean_by_group(logits, windows.row, n_rows)
        return logits.astype(np.float32, copy=False)

    def decode(self, rows: Sequence[dict], windows: Windows, results: list, cfg) -> list[dict]:
        logits = self.row_logits(windows, results, len(rows))
        return [self.format(r, logits[i]) for i, r in enumerate(rows)]

    def format(self, row: dict, logits: np.ndarray) -> dict:
        from ..metrics import sigmoid, softmax

        space = self.space
        rec: dict = {"text": row["text"]}
        if row.get("text_pair") is not None:
            rec["text_pair"] = row["text_pair"]
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

    def flatten(self, record: dict) -> dict:
        out = {k: v for k, v in record.items() if k not in ("probabilities", "labels", "scores")}
        if "labels" in record:
            out["labels"] = ",".join(record["labels"])
        for k, v in (record.get("probabilities") or {}).items():
            out[f"p_{k}"] = v
        return out

    # -- scoring ------------------------------------------------------------------------------

    def read_labelled(self, path: str, cfg, flag: str = "--data") -> Labelled:
        from ..data import join_text, load_inputs, split_columns
        from ..errors import DataError

        cols = {"--text-column": cfg.text_column, "--text-pair-column": cfg.text_pair_column,
                "--label-column": cfg.label_column}
        ds, _ = load_inputs([path], flag, cols)
        if len(ds) == 0:
            raise DataError(f"{flag} {path}: no rows")
        labels = np.asarray(self.space.encode(ds[cfg.label_column], source=path, column=cfg.label_column))
        texts = join_text(ds.to_dict(), split_columns(cfg.text_column), len(ds))
        pairs = [str(x) for x in ds[cfg.text_pair_column]] if cfg.text_pair_column else None
        return Labelled(rows_of(texts, pairs), labels)

    def logits(self, model_fn: ModelFn, rows: Sequence[dict], batch_size: int, progress=None) -> np.ndarray:
        """Row logits of ``rows`` (the loop predict runs, without the formatting)."""
        parts = [self.row_logits(w, res, len(part))
                 for part, w, res in run_chunks(self, model_fn, rows, batch_size, progress)]
        return np.concatenate(parts) if parts else np.zeros((0, max(self.space.num_labels, 1)), dtype=np.float32)

    def score(self, model_fn: ModelFn, labelled: Labelled, cfg, progress=None) -> Scored:
        from ..metrics import DEFAULT_METRIC, classification_metrics, confusion_matrix

        sp = self.space
        logits = self.logits(model_fn, labelled.rows, cfg.batch_size, progress)
        metrics = {"problem": sp.problem,
                   **classification_metrics(sp.problem, logits, labelled.labels, sp.num_labels, sp.threshold)}
        extra = {}
        if sp.problem == "single":
            metrics["labels"] = sp.names
            extra["confusion_matrix"] = confusion_matrix(logits.argmax(-1), labelled.labels, sp.num_labels)
        return Scored(metrics, DEFAULT_METRIC[sp.problem], logits, extra=extra)

    def agreement(self, a: Scored, b: Scored) -> dict:
        """Share of rows on which two models decide alike (argmax; multi-label: the same label set)."""
        x, y = a.outputs, b.outputs
        out = {"max_abs_logit_difference": float(np.abs(x - y).max()) if x.size else 0.0}
        if self.space.problem == "single":
            out["argmax_agreement"] = float((x.argmax(-1) == y.argmax(-1)).mean())
        elif self.space.problem == "multi":
            t = np.log(self.space.threshold / (1 - self.space.threshold))  # sigmoid(z) >= thr  <=>  z >= logit(thr)
            out["label_set_agreement"] = float(((x >= t) == (y >= t)).all(-1).mean())
        return out

    def report_files(self, scored: Scored, out: Path) -> list[str]:
        """A single-label classifier's confusion matrix (JSON, and PNG when matplotlib is installed)."""
        cm = scored.extra.get("confusion_matrix")
        if cm is None:
            return []
        from ..outputs import write_json
        from ..reporting import plot_confusion

        names = scored.metrics["labels"]
        write_json(out / "confusion_matrix.json", {"labels": names, "matrix": cm, "rows": "reference",
                                                   "columns": "prediction"})
        paths = [str(out / "confusion_matrix.json")]
        if plot_confusion(cm, names, out / "confusion_matrix.png"):
            paths.append(str(out / "confusion_matrix.png"))
        return paths


class Labelled:
    """Rows and their encoded labels."""

    def __init__(self, rows: list[dict], labels: np.ndarray):
        self.rows, self.labels = rows, labels

    def __len__(self) -> int:
        return len(self.rows)


def rows_of(texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[dict]:
    """Rows as the classification task reads them: ``{"text"}`` or ``{"text", "text_pair"}``."""
    if pairs is None:
        return [{"text": t} for t in texts]
    return [{"text": t, "text_pair": p} for t, p in zip(texts, pairs, strict=True)]


TASK = ClassificationTask
