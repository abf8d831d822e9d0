"""Pearson correlation, shipped with bertkit so it loads offline."""
import datasets
import evaluate
import numpy as np


class Pearsonr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Pearson correlation between predictions and references.",
            citation="",
            inputs_description="predictions, references: floats",
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references):
        p, r = np.asarray(predictions, dtype=float), np.asarray(references, dtype=float)
        if len(p) < 2 or p.std() == 0 or r.std() == 0:
            return {"pearsonr": 0.0}
        return {"pearsonr": float(np.corrcoef(p, r)[0, 1])}
