"""Accuracy, shipped with bertkit so it loads offline: evaluate.load(<this dir>)."""
import datasets
import evaluate
import numpy as np


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of predictions equal to the reference.",
            citation="",
            inputs_description="predictions, references: label ids",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        p, r = np.asarray(predictions), np.asarray(references)
        return {"accuracy": float((p == r).mean()) if len(r) else 0.0}
