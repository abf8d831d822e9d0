"""CMRC2018 exact match and F1 (the official CMRC2018 evaluation convention), shipped with bertkit so
it loads offline: evaluate.load(<this dir>).

Chinese is scored by character, not by whitespace word: text is lowercased and segmented into single
CJK characters and runs of other characters (Latin words, numbers), Chinese and ASCII punctuation is
dropped, and F1 is computed from the longest common substring of the two segment lists (precision =
LCS / predicted segments, recall = LCS / gold segments).  EM compares the texts with punctuation
removed.  Each prediction scores the maximum over its gold answers; percentages (0-100).  A question
with an empty gold list has no answer: only an empty prediction is right (HasAns_/NoAns_ splits)."""
import re

import datasets
import evaluate

# the official script's list, plus the full-width forms and quotes common in CMRC contexts
_PUNCT = set("-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』‘【】〔〕〈〉…—,.!?;'\"()[]{}<>@#$%&|")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def segment(text, rm_punc=True):
    """'2008年北京奥运会 Beijing' -> ['2008', '年', '北', '京', '奥', '运', '会', 'beijing']."""
    out, word = [], ""
    for ch in str(text).lower().strip():
        if rm_punc and ch in _PUNCT:
            if word:
                out.append(word)
                word = ""
            continue
        if _CJK.match(ch) or ch in _PUNCT:
            if word:
                out.append(word)
                word = ""
            out.append(ch)
        elif ch.isspace():
            if word:
                out.append(word)
                word = ""
        else:
            word += ch
    if word:
        out.append(word)
    return out


def remove_punctuation(text):
    return "".join(ch for ch in str(text).lower().strip() if ch not in _PUNCT and not ch.isspace())


def _lcs(a, b):
    """Length of the longest common contiguous run of segments."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best = cur[j]
        prev = cur
    return best


def f1(pred, gold):
    p, g = segment(pred), segment(gold)
    if not p or not g:
        return float(p == g)
    n = _lcs(g, p)
    if n == 0:
        return 0.0
    precision, recall = n / len(p), n / len(g)
    return 2 * precision * recall / (precision + recall)


def exact(pred, gold):
    return float(remove_punctuation(pred) == remove_punctuation(gold))


class Cmrc2018(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="CMRC2018 exact match and character-level F1 (longest common substring over mixed "
                        "segmentation, punctuation stripped).",
            citation="Cui et al., A Span-Extraction Dataset for Chinese Machine Reading Comprehension, EMNLP 2019.",
            inputs_description="predictions: answer strings ('' = no answer); references: lists of gold answer "
                               "strings (empty = unanswerable); per_example: also return per-question scores",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Sequence(datasets.Value("string"))}),
        )

    def _compute(self, predictions, references, per_example=False):
        # the same aggregation as squad/squad.py, on purpose: evaluate loads each module as one standalone file
        ems, f1s, has = [], [], []
        for pred, golds in zip(predictions, references, strict=True):
            golds = [g for g in golds if remove_punctuation(g)] or [""]
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
