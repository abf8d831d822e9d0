"""Matthews correlation coefficient (multi-class form), shipped with bertkit so it loads offline."""
import datasets
import evaluate
import numpy as np


class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Matthews correlation coefficient between predicted and reference label ids.",
            citation="",
            inputs_description="predictions, references: label ids",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        p, r = np.asarray(predictions), np.asarray(references)
        classes = np.unique(np.concatenate([p, r]))
        cm = np.array([[np.sum((r == a) & (p == b)) for b in classes] for a in classes], dtype=float)
        t, pk = cm.sum(1), cm.sum(0)
        c, s = np.trace(cm), cm.sum()
        denom = np.sqrt((s * s - (pk * pk).sum()) * (s * s - (t * t).sum()))
        return {"matthews_correlation": float((c * s - (t * pk).sum()) / denom) if denom > 0 else 0.0}
