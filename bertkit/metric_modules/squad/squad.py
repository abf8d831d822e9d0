"""SQuAD exact match and F1 (v1.1 and v2.0), shipped with bertkit so it loads offline:
evaluate.load(<this dir>).

The official SQuAD normalisation: lowercase, punctuation and the articles a/an/the removed,
whitespace collapsed; F1 over the bag of whitespace tokens; each prediction scores the maximum over
its gold answers.  Scores are percentages (0-100), as SQuAD reports them.  A question whose gold list
is empty has no answer (SQuAD v2): only an empty prediction is right.  When such questions are present
HasAns_* and NoAns_* split the scores."""
import collections
import re
import string

import datasets
import evaluate

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s):
    s = str(s).lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact(pred, gold):
    return float(normalize_answer(pred) == normalize_answer(gold))


def f1(pred, gold):
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD exact match and F1 with the official answer normalisation (v1.1 and v2.0).",
            citation="Rajpurkar et al., SQuAD: 100,000+ Questions for Machine Comprehension of Text, 2016; "
                     "Know What You Don't Know: Unanswerable Questions for SQuAD, 2018.",
            inputs_description="predictions: answer strings ('' = no answer); references: lists of gold answer "
                               "strings (empty = unanswerable); per_example: also return per-question scores",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references, per_example=False):
        # the same aggregation as cmrc2018/cmrc2018.py, on purpose: evaluate loads each module as one standalone file
        ems, f1s, has = [], [], []
        for pred, golds in zip(predictions, references, strict=True):
            golds = [g for g in golds if normalize_answer(g)] or [""]
            has.append(golds != [""])
            ems.append(max(exact(pred, g) for g in golds))
            f1s.append(max(f1(pred, g) for g in golds))
        n = len(ems)
        out = {"exact_match": 100.0 * sum(ems) / n if n else 0.0, "f1": 100.0 * sum(f1s) / n if n else 0.0,
               "total": n}
        if n and not all(has):
            for name, want in (("HasAns", True), ("NoAns", False)):
                idx = [i for i in range(n) if has[i] == want]
                out[f"{name}_total"] = len(idx)
                out[f"{name}_exact"] = 100.0 * sum(ems[i] for i in idx) / len(idx) if idx else 0.0
                out[f"{name}_f1"] = 100.0 * sum(f1s[i] for i in idx) / len(idx) if idx else 0.0
        if per_example:
            out["exact_per_example"] = [100.0 * x for x in ems]
            out["f1_per_example"] = [100.0 * x for x in f1s]
        return out
