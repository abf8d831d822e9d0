"""Metrics: the ``evaluate`` modules shipped in ``bertkit/metric_modules`` (they load offline by
local path; ``evaluate.load("accuracy")`` would need the Hub), and the Trainer ``compute_metrics``
functions built from them.
"""

from __future__ import annotations

import math
import uuid
from functools import cache
from pathlib import Path

import numpy as np

METRIC_DIR = Path(__file__).parent / "metric_modules"

DEFAULT_METRIC = {"single": "accuracy", "multi": "f1_micro", "regression": "pearsonr"}
METRICS_BY_PROBLEM = {
    "single": ["accuracy", "f1", "matthews_correlation"],
    "multi": ["f1_micro", "f1_macro"],
    "regression": ["mse", "pearsonr", "spearmanr"],
}


@cache
def load_metric(name: str, config_name: str | None = None):
    """Load a shipped metric module (never the Hub).  A unique experiment id keeps concurrent
    processes of a distributed run from sharing evaluate's cache files."""
    import evaluate

    path = METRIC_DIR / name
    if not (path / f"{name}.py").is_file():
        have = sorted(p.name for p in METRIC_DIR.iterdir() if p.is_dir())
        raise KeyError(f"no shipped metric {name!r}; have: {', '.join(have)}")
    return evaluate.load(str(path), config_name, experiment_id=uuid.uuid4().hex)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def mean_by_group(values: np.ndarray, groups, n_groups: int) -> np.ndarray:
    """Row ``g`` of the result is the mean of the ``values`` rows whose group is ``g`` (sliding-window
    scores of one text); groups without rows stay 0."""
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups, dtype=np.int64)
    out = np.zeros((n_groups,) + values.shape[1:], dtype=np.float64)
    np.add.at(out, groups, values)
    counts = np.bincount(groups, minlength=n_groups).reshape((n_groups,) + (1,) * (values.ndim - 1))
    return (out / np.maximum(counts, 1)).astype(np.float32)


def per_text(logits: np.ndarray, labels: np.ndarray, example_ids) -> tuple[np.ndarray, np.ndarray]:
    """Sliding-window rows -> one row per text: window logits averaged (as ``bertkit predict`` does),
    the text's label.  ``example_ids`` holds each window's text, in the rows' order."""
    ids = np.asarray(example_ids, dtype=np.int64)
    uniq, inv = np.unique(ids, return_inverse=True)
    first = np.full(len(uniq), len(ids), dtype=np.int64)
    np.minimum.at(first, inv, np.arange(len(ids)))
    return mean_by_group(logits, inv, len(uniq)), np.asarray(labels)[first]


def classification_metrics(problem: str, logits: np.ndarray, labels: np.ndarray, num_labels: int,
                           threshold: float = 0.5) -> dict[str, float]:
    """All metrics for a problem from raw logits and encoded labels."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if problem == "regression":
        preds = logits.reshape(-1).astype(float)
        refs = labels.reshape(-1).astype(float)
        out = {"mse": float(np.mean((preds - refs) ** 2))}
        out.update(load_metric("pearsonr").compute(predictions=preds, references=refs))
        out.update(load_metric("spearmanr").compute(predictions=preds, references=refs))
        return out
    if problem == "multi":
        preds = (sigmoid(logits) >= threshold).astype(int)
        refs = labels.astype(int)
        f1 = load_metric("f1", "multilabel")
        return {
            "f1_micro": f1.compute(predictions=preds, references=refs, average="micro")["f1"],
            "f1_macro": f1.compute(predictions=preds, references=refs, average="macro")["f1"],
            "exact_match": float((preds == refs).all(1).mean()),
        }
    preds = logits.argmax(-1)
    refs = labels.astype(int)
    average = "binary" if num_labels == 2 else "macro"
    out = load_metric("accuracy").compute(predictions=preds, references=refs)
    out["f1"] = load_metric("f1").compute(predictions=preds, references=refs, average=average,
                                          labels=list(range(num_labels)))["f1"]
    out.update(load_metric("matthews_correlation").compute(predictions=preds, references=refs))
    return out


def best_threshold(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Multi-label: the threshold (0.05..0.95) maximising micro-F1; returns (threshold, f1)."""
    probs = sigmoid(np.asarray(logits))
    refs = np.asarray(labels).astype(bool)
    best = (0.5, -1.0)
    for t in np.arange(0.05, 0.96, 0.05):
        p = probs >= t
        tp, fp, fn = (p & refs).sum(), (p & ~refs).sum(), (~p & refs).sum()
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        if f1 > best[1]:
            best = (round(float(t), 2), float(f1))
    return best


def confusion_matrix(preds: np.ndarray, refs: np.ndarray, n: int) -> list[list[int]]:
    cm = np.zeros((n, n), dtype=int)
    np.add.at(cm, (np.asarray(refs, dtype=int), np.asarray(preds, dtype=int)), 1)
    return cm.tolist()


class MLMEvalAccumulator:
    """``compute_metrics`` for ``batch_eval_metrics=True``: counts correct masked tokens batch by batch,
    so no logits are kept whatever the size of the eval set.  The loss comes from the Trainer."""

    def __init__(self):
        self.correct = 0
        self.total = 0

    def __call__(self, eval_pred, compute_result: bool = False):
        preds = eval_pred.predictions
        if isinstance(preds, tuple):
            preds = preds[0]
        labels = eval_pred.label_ids
        mask = labels != -100
        self.correct += int(((preds == labels) & mask).sum())
        self.total += int(mask.sum())
        if compute_result:
            acc = self.correct / max(self.total, 1)
            self.correct = self.total = 0
            return {"masked_accuracy": acc}
        return {}


def perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    try:
        return float(math.exp(min(loss, 50)))
    except OverflowError:
        return float("inf")


# Metrics where lower is better; every other one (accuracy, F1, MCC, Pearson, exact match...) is maximised.
LOWER_IS_BETTER = {"loss", "mse", "perplexity"}


def greater_is_better(metric: str) -> bool:
    return metric.removeprefix("eval_") not in LOWER_IS_BETTER


def choose_metric(requested: str | None, problem: str, flag: str = "--metric") -> str:
    """The metric that picks the best checkpoint: ``requested`` (with or without ``eval_``) if this
    problem computes it, else the problem's default; an unknown name is a usage error listing the valid ones."""
    from .errors import UsageError

    metric = (requested or DEFAULT_METRIC[problem]).removeprefix("eval_")
    known = METRICS_BY_PROBLEM[problem] + ["loss"]
    if metric not in known:
        raise UsageError(f"{flag} {requested}: not computed for {problem} problems; use one of {', '.join(known)}")
    return metric


class ClassificationScorer:
    """``compute_metrics`` for sequence classification, scored per text: with sliding windows the
    window logits of a text are averaged (as ``bertkit predict`` does), matched through the
    ``example_id`` column of ``dataset``, the set being predicted (evaluation reads it in order)."""

    def __init__(self, problem: str, num_labels: int, threshold: float, windowed: bool, dataset=None):
        self.problem, self.num_labels, self.threshold, self.windowed = problem, num_labels, threshold, windowed
        self.dataset = dataset

    def text_scores(self, pred, dataset=None) -> tuple[np.ndarray, np.ndarray]:
        """(logits, labels) of a prediction over ``dataset``, one row per text."""
        ds = dataset if dataset is not None else self.dataset
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        if not self.windowed:
            return logits, pred.label_ids
        if len(logits) != len(ds):  # cannot happen with in-order evaluation; never mis-group windows
            raise RuntimeError(f"{len(logits)} predictions for {len(ds)} windows")
        return per_text(logits, pred.label_ids, ds["example_id"])

    def __call__(self, pred) -> dict[str, float]:
        logits, labels = self.text_scores(pred)
        return classification_metrics(self.problem, logits, labels, self.num_labels, self.threshold)
