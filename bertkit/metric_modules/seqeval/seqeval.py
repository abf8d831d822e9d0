"""Entity-level precision, recall and F1 (micro and per type) and token accuracy of tag sequences, shipped
with bertkit so it loads offline: evaluate.load(<this dir>).

The scores equal the ``seqeval`` package's default mode (``seqeval.metrics.classification_report`` /
``f1_score`` / ``accuracy_score``), which follows conlleval: an entity is a (type, first word, last word)
span found by the lenient chunk rules, so an ``I-`` after ``O`` or after another type starts an entity
(IOB1, IOB2); ``E-``/``S-`` end one (BIOES); BMES's ``M-`` counts as ``I-``.  Scores are in [0, 1], as
seqeval reports them; a type with no predicted (or gold) entity has precision (recall) 0.

Output: ``{TYPE: {"precision", "recall", "f1", "number"}, "overall_precision", "overall_recall",
"overall_f1", "overall_accuracy"}`` (``number``: gold entities of the type)."""
from collections import Counter

import datasets
import evaluate

from bertkit.ner import entities


def _prf(tp, n_pred, n_true):
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


class Seqeval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Entity-level precision/recall/F1 (conlleval rules, as seqeval's default mode) and token "
                        "accuracy of tag sequences.",
            citation="",
            inputs_description="predictions, references: one list of tags per sentence (e.g. ['B-PER', 'I-PER', 'O'])",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references):
        true, pred, hit = Counter(), Counter(), Counter()
        right = total = 0
        for p_tags, g_tags in zip(predictions, references, strict=True):
            if len(p_tags) != len(g_tags):
                raise ValueError(f"a sentence has {len(p_tags)} predicted tags but {len(g_tags)} gold tags")
            gold, found = set(entities(g_tags)), set(entities(p_tags))
            true.update(t for t, _, _ in gold)
            pred.update(t for t, _, _ in found)
            hit.update(t for t, _, _ in gold & found)
            right += sum(a == b for a, b in zip(p_tags, g_tags, strict=True))
            total += len(g_tags)
        out = {}
        for kind in sorted(set(true) | set(pred)):
            p, r, f = _prf(hit[kind], pred[kind], true[kind])
            out[kind] = {"precision": p, "recall": r, "f1": f, "number": true[kind]}
        p, r, f = _prf(sum(hit.values()), sum(pred.values()), sum(true.values()))
        out.update(overall_precision=p, overall_recall=r, overall_f1=f,
                   overall_accuracy=right / total if total else 0.0)
        return out
