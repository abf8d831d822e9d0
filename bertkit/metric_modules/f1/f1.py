"""F1 (binary, macro, micro, weighted; multi-label with config 'multilabel'), shipped with bertkit
so it loads offline: evaluate.load(<this dir>) or evaluate.load(<this dir>, "multilabel")."""
import datasets
import evaluate
import numpy as np


def _f1(tp, fp, fn):
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


class F1(evaluate.Metric):
    def _info(self):
        if self.config_name == "multilabel":
            feats = {"predictions": datasets.Sequence(datasets.Value("int64")),
                     "references": datasets.Sequence(datasets.Value("int64"))}
        else:
            feats = {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
        return evaluate.MetricInfo(
            description="Harmonic mean of precision and recall.",
            citation="",
            inputs_description="predictions, references: label ids (multilabel: 0/1 indicator rows); "
                               "average: binary | macro | micro | weighted; pos_label; labels",
            features=datasets.Features(feats),
        )

    def _compute(self, predictions, references, average="binary", pos_label=1, labels=None):
        p, r = np.asarray(predictions), np.asarray(references)
        if self.config_name == "multilabel":
            p, r = p.astype(bool), r.astype(bool)
            tp = (p & r).sum(0).astype(float)
            fp = (p & ~r).sum(0).astype(float)
            fn = (~p & r).sum(0).astype(float)
        else:
            if average == "binary":
                pp, rr = p == pos_label, r == pos_label
                tp, fp, fn = float((pp & rr).sum()), float((pp & ~rr).sum()), float((~pp & rr).sum())
                return {"f1": float(_f1(np.array(tp), np.array(fp), np.array(fn)))}
            classes = np.asarray(labels) if labels is not None else np.unique(np.concatenate([p, r]))
            tp = np.array([float(((p == c) & (r == c)).sum()) for c in classes])
            fp = np.array([float(((p == c) & (r != c)).sum()) for c in classes])
            fn = np.array([float(((p != c) & (r == c)).sum()) for c in classes])
        if average == "micro":
            return {"f1": float(_f1(tp.sum(), fp.sum(), fn.sum()))}
        per = _f1(tp, fp, fn)
        if average == "weighted":
            support = tp + fn
            return {"f1": float((per * support).sum() / max(support.sum(), 1))}
        return {"f1": float(per.mean()) if len(per) else 0.0}
