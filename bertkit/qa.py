"""Extractive question answering without a Trainer: reading QA data, windows over long contexts,
post-processing of start/end logits into character spans, null-answer thresholds and the metrics.

Used by ``bertkit finetune-qa`` (training features, evaluation) and by the question-answering task kind
(:mod:`bertkit.tasks.question_answering`: predict, evaluate, export).  Everything here is plain numpy + the
fast tokenizer, so it can be tested without training anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, UsageError
from .log import get_logger
from .tasks.base import Windows

log = get_logger()

DEFAULTS = {"max_seq_length": 384, "doc_stride": 128, "max_question_length": 64, "n_best": 20,
            "max_answer_length": 30}


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

@dataclass
class QAData:
    """Questions in one split.  ``answers[i]`` is ``{"text": [...], "answer_start": [...]}``; empty lists
    mean the question has no answer in its context (SQuAD v2 ``is_impossible``)."""

    ids: list[str]
    questions: list[str]
    contexts: list[str]
    answers: list[dict]
    bad_answers: int = 0
    bad_ids: list[str] | None = None
    dropped: int = 0
    marked_v2: bool = False  # the file says it is SQuAD v2.0 ("is_impossible" keys or "version": "v2.0")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_no_answer(self) -> bool:
        return any(not a["text"] for a in self.answers)

    @property
    def unanswered(self) -> int:
        return sum(1 for a in self.answers if not a["text"])

    def select(self, idx: Sequence[int]) -> QAData:
        return QAData([self.ids[i] for i in idx], [self.questions[i] for i in idx], [self.contexts[i] for i in idx],
                      [self.answers[i] for i in idx], marked_v2=self.marked_v2)

    def answered(self) -> QAData:
        """The questions that have an answer."""
        return self.select([i for i, a in enumerate(self.answers) if a["text"]])

    def to_dataset(self):
        import datasets

        return datasets.Dataset.from_dict({"id": self.ids, "question": self.questions, "context": self.contexts,
                                           "answers": self.answers},
                                          features=datasets.Features({
                                              "id": datasets.Value("string"), "question": datasets.Value("string"),
                                              "context": datasets.Value("string"),
                                              "answers": {"text": datasets.Sequence(datasets.Value("string")),
                                                          "answer_start": datasets.Sequence(datasets.Value("int64"))}}))


def _is_squad(obj: Any) -> bool:
    return (isinstance(obj, dict) and isinstance(obj.get("data"), list) and bool(obj["data"])
            and isinstance(obj["data"][0], dict) and "paragraphs" in obj["data"][0])


def _squad_rows(obj: dict, path: Path) -> list[dict]:
    rows = []
    v2 = str(obj.get("version", "")).lstrip("v").startswith("2")
    for art in obj["data"]:
        for para in art.get("paragraphs") or []:
            ctx = para.get("context")
            if not isinstance(ctx, str):
                raise DataError(f"{path}: a paragraph without a 'context' string (article {art.get('title', '?')!r})")
            for qa in para.get("qas") or []:
                answers = [] if qa.get("is_impossible") else (qa.get("answers") or [])
                rows.append({"id": str(qa.get("id", len(rows))), "question": qa.get("question") or "",
                             "context": ctx, "answers": answers, "v2": v2 or "is_impossible" in qa})
    if not rows:
        raise DataError(f"{path}: a SQuAD-format file without questions (data[].paragraphs[].qas[] is empty)")
    return rows


def _parse_answers(value: Any, context: str) -> tuple[list[str], list[int | None]]:
    """Answers of one row, in any of the accepted shapes, as (texts, starts); a start of None means 'find it'."""
    if value is None:
        return [], []
    if isinstance(value, float) and value != value:  # NaN from a CSV/parquet cell
        return [], []
    if isinstance(value, str):
        s = value.strip()
        if s[:1] in ("{", "["):
            try:
                return _parse_answers(json.loads(s), context)
            except json.JSONDecodeError:
                pass
        return ([value], [None]) if value != "" else ([], [])
    if isinstance(value, dict):
        texts = value.get("text", [])
        starts = value.get("answer_start", None)
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        if starts is None:
            starts = [None] * len(texts)
        starts = [starts] if isinstance(starts, (int, np.integer)) else list(starts)
        if len(starts) != len(texts):
            starts = (starts + [None] * len(texts))[:len(texts)]
        return [str(t) for t in texts], [None if s is None or int(s) < 0 else int(s) for s in starts]
    if isinstance(value, (list, tuple)):
        texts, starts = [], []
        for v in value:
            t, s = _parse_answers(v, context)
            texts += t
            starts += s
        return texts, starts
    return [str(value)], [None]


def read_qa(path: str | None, flag: str, question_column: str = "question", context_column: str = "context",
            answer_column: str | None = "answers", need_answers: bool = True) -> QAData:
    """Read a QA split: SQuAD-format JSON (v1.1/v2.0, nested ``data/paragraphs/qas``) or a flat
    .jsonl/.json/.csv/.tsv/.parquet file with question, context and answer columns.

    Answers are checked against their context: one whose text is not at its ``answer_start`` (or, given
    without a start, not in the context at all) is reported and skipped, and a question left with no valid
    answer is dropped rather than trained on as unanswerable."""
    from .data import expand_inputs

    if not path:
        raise UsageError(f"{flag} is required: a SQuAD-format .json or a .jsonl/.csv/.parquet file with "
                         "question, context and answers columns")
    rows: list[dict] = []
    for p in expand_inputs([path], flag):
        squad = _squad_file_rows(p)
        rows += squad if squad is not None else _flat_file_rows(p, len(rows), question_column, context_column,
                                                                answer_column, need_answers)
    return _checked(rows, path, flag)


def _squad_file_rows(p: Path) -> list[dict] | None:
    """The questions of a SQuAD-format .json file, or None when ``p`` is not one."""
    from .data import read_text

    if not (p.is_file() and p.suffix.lower() == ".json"):
        return None
    text = read_text(p)
    if text.lstrip()[:1] != "{":
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None  # JSON lines in a .json file: read as flat rows
    return _squad_rows(obj, p) if _is_squad(obj) else None


def _flat_file_rows(p: Path, offset: int, question_column: str, context_column: str, answer_column: str | None,
                    need_answers: bool) -> list[dict]:
    """The questions of a flat file (one row each); ids from an ``id`` column, else the row number."""
    from .data import JSON_EXTS, read_json, read_rows

    if p.is_file() and p.suffix.lower() in JSON_EXTS:
        # raw objects: answers may be a dict in one row and a string in the next, which Arrow refuses
        raw = read_json(p)
        names = list(dict.fromkeys(k for r in raw[:100] for k in r))

        def col(c):
            return [r.get(c) for r in raw]
    else:
        ds = read_rows(p, [question_column, context_column, answer_column])
        names, raw = ds.column_names, ds

        def col(c):
            return ds[c]
    missing = [(f, c) for f, c in (("--question-column", question_column), ("--context-column", context_column),
                                   ("--answer-column", answer_column if need_answers else None))
               if c and c not in names]
    if missing:
        f, c = missing[0]
        raise DataError(f"{p}: no column '{c}' ({f}); columns found: {', '.join(names)}")
    n = len(raw)
    ids = col("id") if "id" in names else None
    qs, cs = col(question_column), col(context_column)
    ans = col(answer_column) if answer_column and answer_column in names else [None] * n
    return [{"id": str(ids[i]) if ids is not None else str(offset + i), "question": qs[i], "context": cs[i],
             "answers": ans[i]} for i in range(n)]


def _checked(rows: list[dict], path: str, flag: str) -> QAData:
    """Rows -> QAData with each answer checked against its context (bad ones counted and skipped)."""
    data = QAData([], [], [], [], bad_ids=[], marked_v2=any(r.get("v2") for r in rows))
    for r in rows:
        ctx = "" if r["context"] is None else str(r["context"])
        q = "" if r["question"] is None else str(r["question"])
        if not ctx.strip():
            raise DataError(f"{path}: question {r['id']} has an empty context ({flag})")
        texts, starts = _parse_answers(r["answers"], ctx)
        good_t, good_s, bad = [], [], 0
        for t, s in zip(texts, starts, strict=True):
            if s is None:
                s = ctx.find(t) if t else -1
            if t and s >= 0 and ctx[s:s + len(t)] == t:
                good_t.append(t)
                good_s.append(s)
            else:
                bad += 1
        if bad:
            data.bad_answers += bad
            if len(data.bad_ids) < 5:
                data.bad_ids.append(r["id"])
        if texts and not good_t:
            data.dropped += 1  # had answers, none valid: not an unanswerable question
            continue
        data.ids.append(r["id"])
        data.questions.append(q)
        data.contexts.append(ctx)
        data.answers.append({"text": good_t, "answer_start": good_s})
    if data.bad_answers:
        log.warning(f"{flag} {path}: {data.bad_answers:,} answers do not match the context at answer_start "
                    f"(first question ids: {', '.join(data.bad_ids)}); skipped"
                    + (f", and {data.dropped:,} questions left without a valid answer dropped" if data.dropped else ""))
    if not data.ids:
        raise DataError(f"{flag} {path}: no usable questions")
    return data


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------

def window_problems(max_seq_length: int, doc_stride: int, max_question_length: int,
                    max_positions: int | None = None) -> list[str]:
    """Stride/length combinations that would break windowing (the tokenizer raises mid-run, or a window
    holds no context), each naming the limit."""
    if max_positions and max_seq_length > max_positions:
        return [f"--max-seq-length {max_seq_length}: the model has {max_positions} positions; use at most that"]
    found = []
    if max_question_length < 1:
        found.append(f"--max-question-length {max_question_length}: must be at least 1")
    if doc_stride < 0:
        found.append(f"--doc-stride {doc_stride}: must be at least 0")
    budget = max_seq_length - max_question_length - 3  # [CLS] question [SEP] context [SEP]
    if budget < 8:
        found.append(f"--max-seq-length {max_seq_length}: leaves {budget} context tokens per window after "
                     f"--max-question-length {max_question_length} and 3 special tokens; raise it or lower "
                     "--max-question-length")
    elif doc_stride >= budget:
        found.append(f"--doc-stride {doc_stride}: must be less than the context tokens of a window, "
                     f"--max-seq-length {max_seq_length} - --max-question-length {max_question_length} - 3 = {budget}")
    return found


def check_windows(max_seq_length: int, doc_stride: int, max_question_length: int,
                  max_positions: int | None = None) -> None:
    """:func:`window_problems` as a usage error."""
    found = window_problems(max_seq_length, doc_stride, max_question_length, max_positions)
    if found:
        raise UsageError("; ".join(found))


def truncate_questions(tok, questions: Sequence[str], max_question_length: int) -> list[str]:
    """Questions cut to ``max_question_length`` tokens (at a token boundary of the original text), so a
    long question never crowds the context out of the window.  Leading whitespace goes: some SQuAD
    questions start with dozens of spaces."""
    qs = [q.lstrip() for q in questions]
    enc = tok(qs, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for q, offs in zip(qs, enc["offset_mapping"], strict=True):
        out.append(q[:offs[max_question_length - 1][1]] if len(offs) > max_question_length else q)
    return out


def _encode(tok, questions, contexts, max_seq_length: int, doc_stride: int, max_question_length: int):
    return tok(truncate_questions(tok, questions, max_question_length), list(contexts), truncation="only_second",
               max_length=max_seq_length, stride=doc_stride, return_overflowing_tokens=True,
               return_offsets_mapping=True, padding=False)


def train_features(batch: dict, tok, max_seq_length: int, doc_stride: int, max_question_length: int) -> dict:
    """``datasets.map`` function (batched): every window of every context becomes a training example
    with ``start_positions``/``end_positions``; a window that does not hold the answer (or a question
    without one) points both at its [CLS] token, as BERT's SQuAD recipe does."""
    enc = _encode(tok, batch["question"], batch["context"], max_seq_length, doc_stride, max_question_length)
    sample = enc.pop("overflow_to_sample_mapping")
    offsets = enc.pop("offset_mapping")
    starts, ends = [], []
    for i, offs in enumerate(offsets):
        ids = enc["input_ids"][i]
        cls = ids.index(tok.cls_token_id) if tok.cls_token_id in ids else 0
        seq = enc.sequence_ids(i)
        ans = batch["answers"][sample[i]]
        if not ans["text"]:
            starts.append(cls)
            ends.append(cls)
            continue
        s_char = ans["answer_start"][0]
        e_char = s_char + len(ans["text"][0])
        ts = seq.index(1)
        te = len(seq) - 1 - seq[::-1].index(1)
        if not (offs[ts][0] <= s_char and offs[te][1] >= e_char):
            starts.append(cls)
            ends.append(cls)
            continue
        while ts < len(offs) and seq[ts] == 1 and offs[ts][0] <= s_char:
            ts += 1
        while te >= 0 and seq[te] == 1 and offs[te][1] >= e_char:
            te -= 1
        starts.append(ts - 1)
        ends.append(te + 1)
    enc["start_positions"] = starts
    enc["end_positions"] = ends
    return dict(enc)


def encode_train(data: QAData, tok, max_seq_length: int, doc_stride: int, max_question_length: int,
                 num_proc: int | None = None):
    """Training windows as a ``datasets.Dataset`` of model inputs and start/end positions (unpadded:
    the collator pads each batch to its own longest window)."""
    ds = data.to_dataset()
    return ds.map(train_features, batched=True, batch_size=1000, remove_columns=ds.column_names, num_proc=num_proc,
                  fn_kwargs=dict(tok=tok, max_seq_length=max_seq_length, doc_stride=doc_stride,
                                 max_question_length=max_question_length),
                  desc="QA training windows" if len(ds) > 5000 else None)


def encode_windows(tok, questions: Sequence[str], contexts: Sequence[str], max_seq_length: int = 384,
                   doc_stride: int = 128, max_question_length: int = 64, chunk: int = 2000) -> Windows:
    """Inference windows over every context: model inputs, each window's question (``row``) and, in
    ``meta["offsets"]``, the character span of every token in its context (``None`` for question and
    special tokens)."""
    inputs: dict[str, list] = {}
    index: list[int] = []
    offsets: list[list] = []
    for lo in range(0, len(questions), chunk):
        enc = _encode(tok, questions[lo:lo + chunk], contexts[lo:lo + chunk], max_seq_length, doc_stride,
                      max_question_length)
        sample = enc.pop("overflow_to_sample_mapping")
        offs = enc.pop("offset_mapping")
        for k in tok.model_input_names:
            if k in enc:
                inputs.setdefault(k, []).extend(enc[k])
        for i, o in enumerate(offs):
            seq = enc.sequence_ids(i)
            offsets.append([tuple(o[t]) if seq[t] == 1 else None for t in range(len(o))])
            index.append(lo + sample[i])
    return Windows(inputs, np.asarray(index, dtype=np.int64), {"offsets": offsets})


# --------------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------------

def _softmax(x: np.ndarray) -> np.ndarray:
    if x.size == 0:
        return x
    e = np.exp(x - x.max())
    return e / e.sum()


def postprocess(start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray], windows: Windows,
                contexts: Sequence[str], n_best: int = 20, max_answer_length: int = 30,
                null_threshold: float | None = None, top_k: int = 1) -> list[dict]:
    """Answers from per-window start/end logits.

    In each window the ``n_best`` start and end tokens of the context are paired (end not before start,
    at most ``max_answer_length`` tokens); candidates from all windows of a question are pooled (the same
    span seen by two overlapping windows keeps its best score) and mapped to character offsets of the
    original context.  The null score is the lowest [CLS] start+end over the question's windows; with a
    ``null_threshold`` (SQuAD v2) the answer is empty when null - best span > threshold.  ``score`` is a
    softmax over the pooled n-best (and the null when thresholds apply).

    Returns, per question in input order: answer, score, start, end (characters, end exclusive; None when
    empty), null_diff (null - best span logit) and ``alternatives`` (the top_k spans)."""
    n_q = len(contexts)
    cands: list[dict[tuple[int, int], float]] = [dict() for _ in range(n_q)]
    null = np.full(n_q, np.inf)
    for w in range(len(windows)):
        q = int(windows.row[w])
        offs = windows.meta["offsets"][w]
        L = len(offs)
        s = np.asarray(start_logits[w][:L], dtype=np.float64)
        e = np.asarray(end_logits[w][:L], dtype=np.float64)
        null[q] = min(null[q], s[0] + e[0])
        ctx = np.fromiter((o is not None for o in offs), dtype=bool, count=L)
        if not ctx.any():
            continue
        sm = np.where(ctx, s, -np.inf)
        em = np.where(ctx, e, -np.inf)
        k = min(n_best, int(ctx.sum()))
        si = np.argpartition(-sm, k - 1)[:k]
        ei = np.argpartition(-em, k - 1)[:k]
        length = ei[None, :] - si[:, None] + 1
        ok = (length >= 1) & (length <= max_answer_length)
        if not ok.any():
            continue
        scores = s[si][:, None] + e[ei][None, :]
        rows, cols = np.nonzero(ok)
        sc = scores[rows, cols]
        best = np.argsort(-sc)[:n_best]
        pool = cands[q]
        for b in best:
            span = (offs[si[rows[b]]][0], offs[ei[cols[b]]][1])
            v = float(sc[b])
            if v > pool.get(span, -np.inf):
                pool[span] = v
    out = []
    for q in range(n_q):
        items = sorted(cands[q].items(), key=lambda kv: -kv[1])[:n_best]
        logits = np.array([v for _, v in items], dtype=np.float64)
        nul = float(null[q]) if np.isfinite(null[q]) else 0.0
        with_null = null_threshold is not None
        probs = _softmax(np.append(logits, nul) if with_null else logits)
        alts = [{"answer": contexts[q][a:b], "score": round(float(probs[j]), 6), "start": a, "end": b}
                for j, ((a, b), _) in enumerate(items[:max(top_k, 1)])]
        diff = nul - float(logits[0]) if len(items) else float("inf")
        if not items or (with_null and diff > null_threshold):
            rec = {"answer": "", "score": round(float(probs[-1]), 6) if with_null and len(probs) else 1.0,
                   "start": None, "end": None}
        else:
            rec = dict(alts[0])
        rec["null_diff"] = diff if np.isfinite(diff) else None
        rec["best_span"] = alts[0]["answer"] if alts else ""
        rec["alternatives"] = alts[:top_k]
        out.append(rec)
    return out


def tune_null_threshold(null_diffs: Sequence[float | None], span_f1: Sequence[float], has_answer: Sequence[bool]
                        ) -> tuple[float, float]:
    """The null threshold that maximises mean F1 (SQuAD v2's "best_f1_thresh"): a question is answered
    with its best span when ``null_diff <= t`` (scoring ``span_f1``), left empty otherwise (scoring 100
    when it has no answer).  Returns (threshold, F1 at it)."""
    d = np.array([np.inf if x is None else x for x in null_diffs], dtype=np.float64)
    f = np.asarray(span_f1, dtype=np.float64)
    has = np.asarray(has_answer, dtype=bool)
    n = len(d)
    if n == 0:
        return 0.0, 0.0
    total = float((~has).sum()) * 100.0  # every question left empty
    order = np.argsort(d, kind="stable")
    gain = np.where(has, f, f - 100.0)[order]  # answering instead of leaving empty (f of a no-answer is 0)
    cum = total + np.cumsum(gain)
    finite = np.isfinite(d[order])
    ds = d[order]
    last_of_tie = np.append(ds[1:] != ds[:-1], True)  # t = ds[j] answers every question tied with j too
    cum = np.where(finite & last_of_tie, cum, -np.inf)
    j = int(np.argmax(cum)) if finite.any() else -1
    if j < 0 or cum[j] <= total:
        lowest = float(ds[0]) if finite.any() else 0.0
        return lowest - 1.0, total / n
    # halfway to the next question's diff, not on this one's: the same model rerun in other batches (other
    # padding) moves logits by ~1e-6, which must not flip the question on the threshold
    nxt = ds[j + 1] if j + 1 < n and np.isfinite(ds[j + 1]) else ds[j] + 2.0
    return float((ds[j] + nxt) / 2), float(cum[j]) / n


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")


def detect_language(contexts: Sequence[str], sample: int = 200) -> str:
    """``zh`` when CJK characters are at least 30% of the non-space characters of (a sample of) the
    contexts, else ``en``: CMRC2018 contexts are ~85% CJK, SQuAD's 0%."""
    step = max(1, len(contexts) // sample)
    text = "".join(contexts[::step][:sample])
    chars = sum(1 for ch in text if not ch.isspace())
    return "zh" if chars and len(_CJK.findall(text)) / chars >= 0.3 else "en"


def metric_name(language: str) -> str:
    return "cmrc2018" if language == "zh" else "squad"


def qa_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]], language: str,
               per_example: bool = False) -> dict:
    """EM/F1 (0-100, as SQuAD and CMRC2018 report them) from the shipped offline metric module."""
    from .metrics import load_metric

    m = load_metric(metric_name(language))
    return m.compute(predictions=list(predictions), references=[list(r) for r in references], per_example=per_example)


def evaluate_predictions(results: list[dict], data: QAData, language: str, tune: bool = False,
                         null_threshold: float | None = None) -> tuple[dict, float | None]:
    """Metrics of post-processed results against ``data``'s gold answers; with ``tune`` (and a v2 set),
    the null threshold is tuned first and applied.  Returns (metrics, threshold used)."""
    refs = [a["text"] for a in data.answers]
    if tune:
        spans = [r["best_span"] for r in results]
        per = qa_metrics(spans, [r or [""] for r in refs], language, per_example=True)["f1_per_example"]
        null_threshold, _ = tune_null_threshold([r["null_diff"] for r in results], per, [bool(r) for r in refs])
        for r in results:
            empty = r["null_diff"] is None or r["null_diff"] > null_threshold
            r["answer"] = "" if empty else r["best_span"]
    metrics = qa_metrics([r["answer"] for r in results], refs, language)
    if null_threshold is not None:
        metrics["null_threshold"] = null_threshold
    return metrics, null_threshold


# --------------------------------------------------------------------------------------------
# Evaluation during training
# --------------------------------------------------------------------------------------------

@dataclass
class QAEvalSet:
    """A validation split as the Trainer sees it (``dataset``: model inputs only, windows sorted by
    length) and what it does not (questions, gold answers, each window's question and offsets)."""

    data: QAData
    windows: Windows
    language: str
    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float | None = None
    tune: bool = False

    def __post_init__(self):
        self.dataset = self.windows.to_dataset()

    @classmethod
    def build(cls, data: QAData, tok, max_seq_length: int, doc_stride: int, max_question_length: int,
              **kw) -> QAEvalSet:
        win = encode_windows(tok, data.questions, data.contexts, max_seq_length, doc_stride, max_question_length)
        # sorted by length: batches pad little; the QA trainer reads evaluation sets in order
        return cls(data, win.reorder(np.argsort(win.lengths(), kind="stable")), **kw)

    def score(self, start_logits: np.ndarray, end_logits: np.ndarray, tune: bool | None = None
              ) -> tuple[dict, list[dict], float | None]:
        """(metrics, answers, tuned null threshold or None) of the windows' logits."""
        if len(start_logits) != len(self.windows):  # cannot happen with in-order evaluation; never mis-assign
            raise RuntimeError(f"{len(start_logits)} predictions for {len(self.windows)} windows")
        results = postprocess(start_logits, end_logits, self.windows, self.data.contexts, n_best=self.n_best,
                              max_answer_length=self.max_answer_length, null_threshold=self.null_threshold)
        metrics, threshold = evaluate_predictions(results, self.data, self.language,
                                                  tune=self.tune if tune is None else tune,
                                                  null_threshold=self.null_threshold)
        return metrics, results, threshold


# --------------------------------------------------------------------------------------------
# Inference settings and input
# --------------------------------------------------------------------------------------------

def inference_settings(config, max_len: int) -> dict:
    """Window and answer settings of a fine-tuned model's config (defaults for others)."""
    def get(key):
        return getattr(config, f"bertkit_{key}", None)

    return {"max_seq_length": max_len,
            "doc_stride": get("doc_stride") or min(DEFAULTS["doc_stride"], max_len // 4),
            "max_question_length": get("max_question_length") or min(DEFAULTS["max_question_length"], max_len // 4),
            "n_best": get("n_best") or DEFAULTS["n_best"],
            "max_answer_length": get("max_answer_length") or DEFAULTS["max_answer_length"],
            "null_threshold": get("null_threshold")}


def empty_context_rows(contexts: Sequence[str | None]) -> list[int]:
    """Indices (from 0) of the rows whose context is empty or only whitespace: there is nothing to answer
    from, and the model's best span over no context is "" with score 1.0, which reads as a confident
    answer.  Inference reports these rows instead of answering them."""
    return [i for i, c in enumerate(contexts) if c is None or not str(c).strip()]


def read_questions(source: str, question_column: str, context_column: str, flag: str = "--input") -> list[dict]:
    """Rows of ``question`` and ``context`` from a SQuAD-format .json file (with each question's ``id``; its
    answers are not read), a .jsonl/.csv/... file or stdin (``question<TAB>context`` lines); ``flag`` names
    the option in errors."""
    from .data import load_inputs, read_stdin_lines

    if source != "-":
        squad = _squad_file_rows(Path(source))
        if squad is not None:
            return [{"id": r["id"], "question": r["question"], "context": r["context"]} for r in squad]
        ds, _ = load_inputs([source], flag, {"--question-column": question_column,
                                                  "--context-column": context_column})
        return [{"question": str(q), "context": str(c)}
                for q, c in zip(ds[question_column], ds[context_column], strict=True)]
    rows = []
    for i, line in read_stdin_lines():
        if "\t" not in line:
            raise DataError(f"stdin: line {i}: expected question<TAB>context")
        q, c = line.split("\t", 1)
        rows.append({"question": q, "context": c})
    if not rows:
        raise DataError("stdin: no input (one question<TAB>context per line)")
    return rows
