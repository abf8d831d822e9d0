"""Spearman rank correlation (average ranks for ties), shipped with bertkit so it loads offline."""
import datasets
import evaluate
import numpy as np


def _rank(x):
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return (sums / counts)[inv]


class Spearmanr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Spearman rank correlation between predictions and references.",
            citation="",
            inputs_description="predictions, references: floats",
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references):
        p, r = _rank(np.asarray(predictions, dtype=float)), _rank(np.asarray(references, dtype=float))
        if len(p) < 2 or p.std() == 0 or r.std() == 0:
            return {"spearmanr": 0.0}
        return {"spearmanr": float(np.corrcoef(p, r)[0, 1])}
