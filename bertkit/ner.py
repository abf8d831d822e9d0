"""Token classification (NER, POS, chunking: any per-word tagging): reading tagged files, tag schemes,
entity spans, and the sub-token windows a model reads.

Used by ``bertkit finetune-ner`` (training windows, evaluation inside training) and by the
token-classification task kind (:mod:`bertkit.tasks.token_classification`: predict, evaluate, export).

* **Files**: CoNLL-style text (one ``token<TAB>tag`` per line, or whitespace columns with the tag in
  ``tag_column``, default the last; a blank line ends a sentence; ``-DOCSTART-`` lines are skipped), or
  .jsonl/.json/.csv/.parquet rows with a list of words and a list of tags (CSV cells: a JSON list or
  space-separated items).
* **Tags**: ``O`` or ``PREFIX-TYPE``, split on the *first* ``-`` only (``B-geo-loc`` is ``B`` + ``geo-loc``).
  Schemes IOB1, IOB2, BIOES (``B I E S``) and BMES (``B M E S``, ``M`` = inside).
* **Entities**: the conlleval chunk rules (those of ``seqeval``'s default mode, lenient: an ``I-`` after
  ``O`` or after another type starts an entity), with ``M`` read as ``I``; one function for every scheme.
* **Windows**: each word's sub-tokens (a word the tokenizer turns into nothing gets [UNK], so every word
  has a first sub-token and a prediction); a sentence longer than the model is cut into overlapping
  windows (``stride`` sub-tokens shared), never truncated; a word is scored from the window where its
  first sub-token has the most context on both sides.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError, UsageError

SCHEMES = ("IOB1", "IOB2", "BIOES", "BMES")
PREFIXES = {"IOB1": "BI", "IOB2": "BI", "BIOES": "BIES", "BMES": "BMES"}
COLUMNAR_EXTS = {".json", ".jsonl", ".ndjson", ".csv", ".parquet"}
IGNORE = -100  # the label of sub-tokens the loss skips (transformers' convention)


# ------------------------------------------------------------------------------------------------
# Tags
# ------------------------------------------------------------------------------------------------

def split_tag(tag: str) -> tuple[str, str] | None:
    """``"B-geo-loc"`` -> ``("B", "geo-loc")``; ``"O"`` -> ``("O", "")``; None when malformed."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or not kind or len(prefix) != 1 or prefix not in "BIMES":
        return None
    return prefix, kind


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entity spans ``(type, first word, last word + 1)`` of one sentence's tags, by the conlleval rules
    (as ``seqeval``'s default mode): a chunk ends at ``O``, at ``B``/``S``, after ``E``/``S`` and where
    the type changes; it starts at ``B``/``S``, at an ``I``/``E`` that follows ``O``/``E``/``S``, and where
    the type changes.  ``M`` (BMES) counts as ``I``, so one function serves IOB1, IOB2, BIOES and BMES."""
    out: list[tuple[str, int, int]] = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, chunk in enumerate([*tags, "O"]):
        tag = chunk[0] if chunk else "O"
        if tag == "M":
            tag = "I"
        kind = chunk[1:].split("-", 1)[-1] or "_"
        end = (prev_tag in "ES" or (prev_tag in "BI" and tag in "BSO")
               or (prev_tag != "O" and prev_type != kind))
        if end:
            out.append((prev_type, begin, i))
        start = (tag in "BS" or (prev_tag in "ESO" and tag in "IE") or (tag != "O" and prev_type != kind))
        if start:
            begin = i
        prev_tag, prev_type = tag, kind
    return out


def detect_scheme(tag_seqs: Sequence[Sequence[str]]) -> str:
    """The scheme of well-formed tags: BMES when any ``M-``, BIOES when any ``E-``/``S-``; IOB1 when some
    entity starts with ``I-`` and ``B-`` only ever separates two entities of one type; else IOB2."""
    prefixes: set[str] = set()
    i_starts = False
    b_after_other = False
    for tags in tag_seqs:
        prev = ("O", "")
        for t in tags:
            parts = split_tag(t) or ("O", "")
            prefixes.add(parts[0])
            if parts[0] == "I" and (prev[0] == "O" or prev[1] != parts[1]):
                i_starts = True
            elif parts[0] == "B" and (prev[0] == "O" or prev[1] != parts[1]):
                b_after_other = True
            prev = parts
    if "M" in prefixes:
        return "BMES"
    if prefixes & {"E", "S"}:
        return "BIOES"
    return "IOB1" if i_starts and not b_after_other else "IOB2"


def continuation(tag: str, scheme: str) -> str:
    """The tag of a word's later sub-tokens with --label-all-subtokens: ``B-X`` -> ``I-X`` (BMES: ``M-X``);
    every other tag stays (the sub-tokens of an inside word are inside)."""
    parts = split_tag(tag)
    if parts is None or parts[0] != "B":
        return tag
    return ("M" if scheme == "BMES" else "I") + "-" + parts[1]


def label_names(train_tags: Sequence[Sequence[str]]) -> list[str]:
    """The label set: every training tag, sorted, ``O`` first (present or not: it is the outside class)."""
    found = {t for tags in train_tags for t in tags}
    found.discard("O")
    return ["O", *sorted(found)]


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------

@dataclass
class Tagged:
    """Sentences of one file: ``words[i]``, ``tags[i]`` (None for unlabelled input), and where each word
    came from (``where[i][j]``: the line of a CoNLL file, the row of a columnar file) for error messages."""

    path: str
    words: list[list[str]]
    tags: list[list[str]] | None
    where: list[list[int]]
    unit: str = "line"

    def __len__(self) -> int:
        return len(self.words)

    def at(self, i: int, j: int = 0) -> str:
        """Where word ``j`` of sentence ``i`` came from: ``FILE:LINE`` or ``FILE: row N``."""
        n = self.where[i][j]
        return f"{self.path}:{n}" if self.unit == "line" else f"{self.path}: row {n}"

    def select(self, idx: Sequence[int]) -> Tagged:
        return Tagged(self.path, [self.words[i] for i in idx], [self.tags[i] for i in idx] if self.tags else None,
                      [self.where[i] for i in idx], self.unit)


def read_tagged(path: str, flag: str, words_column: str = "tokens", tags_column: str | None = "tags",
                tag_column: int | None = None) -> Tagged:
    """A tagged (or, with ``tags_column=None``, an untagged) file as sentences of words.  CoNLL-style text
    unless the extension is .json/.jsonl/.csv/.parquet; malformed lines and rows whose word and tag counts
    differ are DataErrors naming the file and line/row."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{flag} {path}: no such file")
    if p.stat().st_size == 0:
        raise DataError(f"{flag} {path}: the file is empty")
    if p.suffix.lower() in COLUMNAR_EXTS:
        out = _read_columnar(p, words_column, tags_column)
    else:
        out = _read_conll(p, tags_column is not None, tag_column)
    if not out.words:
        raise DataError(f"{flag} {path}: no sentences")
    return out


def _read_conll(path: Path, tagged: bool, tag_column: int | None) -> Tagged:
    from .data import read_text

    words, tags, where = [], [], []
    w: list[str] = []
    t: list[str] = []
    at: list[int] = []

    def flush():
        if w:
            words.append(list(w))
            tags.append(list(t))
            where.append(list(at))
        for part in (w, t, at):
            part.clear()

    for n, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            flush()
            continue
        cols = [c.strip() for c in line.split("\t")] if "\t" in line else line.split()
        if cols[0] == "-DOCSTART-":
            flush()
            continue
        if tagged:
            if len(cols) < 2:
                raise DataError(f"{path}:{n}: expected a token and a tag (token<TAB>tag), got {line.strip()!r}")
            col = -1 if tag_column is None else tag_column
            if not -len(cols) <= col < len(cols) or col == 0:
                raise DataError(f"{path}:{n}: no tag column {tag_column} in a line of {len(cols)} columns")
            t.append(cols[col])
        w.append(cols[0])
        at.append(n)
    flush()
    return Tagged(str(path), words, tags if tagged else None, where)


def _as_list(value, path: Path, row: int, column: str) -> list[str]:
    if isinstance(value, str):  # CSV cells: a JSON list or space-separated items
        s = value.strip()
        if s.startswith("["):
            try:
                value = json.loads(s)
            except json.JSONDecodeError:
                raise DataError(f"{path}: row {row}: column '{column}' is not a valid JSON list") from None
        else:
            value = s.split()
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
        raise DataError(f"{path}: row {row}: column '{column}' must be a list of strings "
                        f"(got {type(value).__name__})")
    return list(value)


def _read_columnar(path: Path, words_column: str, tags_column: str | None) -> Tagged:
    from .data import read_rows, require_columns

    cols = {"--words-column": words_column, **({"--tags-column": tags_column} if tags_column else {})}
    ds = read_rows(path, cols.values())
    require_columns(ds, path, cols)
    return rows_to_tagged(ds, path, words_column, tags_column)


def rows_to_tagged(ds, path: Path, words_column: str, tags_column: str | None) -> Tagged:
    """Rows of a columnar file (a ``datasets.Dataset`` holding the columns) as sentences."""
    words, tags, where = [], [], []
    for i, row in enumerate(ds.select_columns([c for c in (words_column, tags_column) if c]), 1):
        w = _as_list(row[words_column], path, i, words_column)
        if not w:
            raise DataError(f"{path}: row {i}: no words in column '{words_column}'")
        if tags_column:
            t = _as_list(row[tags_column], path, i, tags_column)
            if len(t) != len(w):
                raise DataError(f"{path}: row {i}: {len(w)} words but {len(t)} tags")
            tags.append(t)
        words.append(w)
        where.append([i] * len(w))
    return Tagged(str(path), words, tags if tags_column else None, where, unit="row")


def check_tags(data: Tagged, scheme: str, known: Sequence[str] | None = None, flag: str = "--train") -> None:
    """Every tag is ``O`` or a prefix of ``scheme`` + ``-TYPE``; with ``known`` (the training label set),
    every tag is one of them.  The first bad tag is a DataError naming its file and line."""
    allowed = PREFIXES[scheme]
    known_set = set(known) if known is not None else None
    for i, tags in enumerate(data.tags or []):
        for j, tag in enumerate(tags):
            parts = split_tag(tag)
            if parts is None or (parts[0] != "O" and parts[0] not in allowed):
                raise DataError(f"{data.at(i, j)}: tag {tag!r} is not O or {'/'.join(allowed)}-TYPE ({scheme}; "
                                f"{flag}, see --tag-scheme)")
            if known_set is not None and tag not in known_set:
                raise DataError(f"{data.at(i, j)}: tag {tag!r} does not occur in the training data ({flag}); "
                                "the model cannot predict it")


def resolve_scheme(requested: str, train: Tagged) -> str:
    if requested != "auto":
        if requested not in SCHEMES:
            raise UsageError(f"--tag-scheme {requested}: use auto or one of {', '.join(SCHEMES)}")
        return requested
    return detect_scheme(train.tags or [])


# ------------------------------------------------------------------------------------------------
# Words of raw text
# ------------------------------------------------------------------------------------------------

def is_cjk(ch: str) -> bool:
    """A CJK ideograph (BERT's definition: the CJK Unified Ideographs blocks and compatibility ideographs)."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def split_words(text: str, tok) -> tuple[list[str], list[tuple[int, int]]]:
    """Raw text -> words with character offsets: the tokenizer's pre-tokenizer (whitespace and punctuation
    for BERT), then every CJK character a word of its own (Chinese is tagged per character)."""
    pre = getattr(getattr(tok, "backend_tokenizer", None), "pre_tokenizer", None)
    if pre is not None:
        pieces = pre.pre_tokenize_str(text)
    else:
        import re

        pieces = [(m.group(), m.span()) for m in re.finditer(r"\S+", text)]
    words: list[str] = []
    spans: list[tuple[int, int]] = []

    def add(start: int, end: int) -> None:
        words.append(text[start:end])
        spans.append((start, end))

    for _, (s, e) in pieces:  # offsets into the text as given (a pre-tokenizer may rewrite the pieces)
        run = s
        for k in range(s, e):
            if is_cjk(text[k]):
                if run < k:
                    add(run, k)
                add(k, k + 1)
                run = k + 1
        if run < e:
            add(run, e)
    return words, spans


def join_words(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Pre-split words as one text with each word's character span: words joined by one space, except
    between two CJK characters (Chinese text has no spaces between words)."""
    parts: list[str] = []
    spans = []
    pos = 0
    for i, w in enumerate(words):
        if i and not (parts[-1][-1:] and is_cjk(parts[-1][-1]) and w[:1] and is_cjk(w[0])):
            parts.append(" ")
            pos += 1
        spans.append((pos, pos + len(w)))
        parts.append(w)
        pos += len(w)
    return "".join(parts), spans


# ------------------------------------------------------------------------------------------------
# Windows
# ------------------------------------------------------------------------------------------------

@dataclass
class WordWindows:
    """Model windows of sentences: ``input_ids`` ([CLS] sub-tokens [SEP]); per position the sentence's word
    it belongs to (``word``, -1 at [CLS]/[SEP]) and whether it is that word's first sub-token (``first``);
    the sentence of each window (``row``)."""

    input_ids: list[list[int]]
    word: list[np.ndarray]
    first: list[np.ndarray]
    row: np.ndarray
    n_words: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def select(self, order: Sequence[int]) -> WordWindows:
        return WordWindows([self.input_ids[i] for i in order], [self.word[i] for i in order],
                           [self.first[i] for i in order], self.row[np.asarray(order, dtype=np.int64)], self.n_words)

    def token_type_ids(self) -> list[list[int]]:
        return [[0] * len(x) for x in self.input_ids]

    def labels(self, tag_ids: Sequence[Sequence[int]], cont_ids: Sequence[int] | None = None) -> list[list[int]]:
        """Per window, the label of each position: a word's label at its first sub-token; later sub-tokens
        -100, or (``cont_ids``: label id -> its continuation's id, --label-all-subtokens) the continuation."""
        out = []
        for ids, word, first, r in zip(self.input_ids, self.word, self.first, self.row, strict=True):
            gold = tag_ids[r]
            lab = [IGNORE] * len(ids)
            for p in range(len(ids)):
                w = word[p]
                if w < 0:
                    continue
                if first[p]:
                    lab[p] = gold[w]
                elif cont_ids is not None:
                    lab[p] = cont_ids[gold[w]]
            out.append(lab)
        return out

    def best_positions(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per sentence, for each word: the window and position its prediction is read from (the first
        sub-token, in the window where it has the most context on its nearer side; the earlier window on
        a tie)."""
        n_rows = len(self.n_words)
        best = [(np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64), np.full(n, -1, dtype=np.int64))
                for n in self.n_words]
        for w_idx in range(len(self)):
            word, first = self.word[w_idx], self.first[w_idx]
            pos = np.flatnonzero(first)
            if not len(pos):
                continue
            content = len(word) - 2  # [CLS] and [SEP] aside
            context = np.minimum(pos - 1, content - pos)
            win, at, ctx = best[int(self.row[w_idx])]
            ws = word[pos]
            better = context > ctx[ws]
            win[ws[better]], at[ws[better]], ctx[ws[better]] = w_idx, pos[better], context[better]
        out = []
        for r in range(n_rows):
            win, at, _ = best[r]
            if (win < 0).any():  # cannot happen: every word has a first sub-token in some window
                raise RuntimeError(f"sentence {r}: words without a window")
            out.append((win, at))
        return out

    def gather(self, values: Callable[[int], np.ndarray]) -> list[np.ndarray]:
        """Per sentence, each word's value read at its best position; ``values(w)`` gives window ``w``'s
        per-position values (a label id or a probability row)."""
        out = []
        for win, at in self.best_positions():
            out.append(np.stack([values(int(w))[int(p)] for w, p in zip(win, at, strict=True)]) if len(win)
                       else np.zeros((0,)))
        return out


def sentence_windows(tok, sentences: Sequence[Sequence[str]], max_len: int, stride: int,
                     batch: int = 1000) -> WordWindows:
    """Windows of at most ``max_len`` tokens for each sentence (list of words); consecutive windows of a
    long sentence share ``stride`` sub-tokens.  Words the tokenizer drops (control or zero-width
    characters) become one [UNK], so no word loses its prediction and no prediction shifts."""
    cls_id, sep_id, unk = tok.cls_token_id, tok.sep_token_id, tok.unk_token_id
    if cls_id is None or sep_id is None:
        raise UsageError("the tokenizer has no [CLS]/[SEP] tokens; token classification needs a BERT-style tokenizer")
    span = max_len - 2
    step = max(1, span - stride)
    ids_out, word_out, first_out, rows, n_words = [], [], [], [], []
    for lo in range(0, len(sentences), batch):
        part = [list(s) for s in sentences[lo:lo + batch]]
        enc = tok(part, is_split_into_words=True, add_special_tokens=False) if part else None
        for k, words in enumerate(part):
            per: list[list[int]] = [[] for _ in words]
            for t, w in zip(enc["input_ids"][k], enc.word_ids(k), strict=True):
                if w is not None:
                    per[w].append(t)
            flat, wid, first = [], [], []
            for w, toks in enumerate(per):
                toks = toks or [unk]
                flat += toks
                wid += [w] * len(toks)
                first += [True] + [False] * (len(toks) - 1)
            n = len(flat)
            starts = [0] if n <= span else [*range(0, n - span, step), n - span]
            for s in starts:
                e = min(n, s + span)
                ids_out.append([cls_id, *flat[s:e], sep_id])
                word_out.append(np.array([-1, *wid[s:e], -1], dtype=np.int64))
                first_out.append(np.array([False, *first[s:e], False]))
                rows.append(lo + k)
            n_words.append(len(words))
    return WordWindows(ids_out, word_out, first_out, np.asarray(rows, dtype=np.int64), n_words)


# ------------------------------------------------------------------------------------------------
# Scores
# ------------------------------------------------------------------------------------------------

def tag_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity precision/recall/F1 (micro and per type, in [0, 1] as seqeval reports them) and token
    accuracy, from the shipped seqeval metric module; flat keys (``f1``, ``precision_PER``, ...)."""
    from .metrics import load_metric

    res = load_metric("seqeval").compute(predictions=[list(p) for p in pred], references=[list(g) for g in gold])
    out = {k.removeprefix("overall_"): float(v) for k, v in res.items() if k.startswith("overall_")}
    for kind, scores in sorted((k, v) for k, v in res.items() if isinstance(v, dict)):
        for name in ("precision", "recall", "f1"):
            out[f"{name}_{kind}"] = float(scores[name])
        out[f"number_{kind}"] = int(scores["number"])
    return out


class WordScorer:
    """``compute_metrics`` for token classification: the Trainer's per-position label ids (argmax'd by
    :meth:`argmax` as ``preprocess_logits_for_metrics``) read back at each word's best position and
    scored at word level against the gold tags."""

    def __init__(self, windows: WordWindows, gold: Sequence[Sequence[str]], names: Sequence[str]):
        self.windows, self.gold, self.names = windows, gold, list(names)
        self.last_tags: list[list[str]] | None = None

    @staticmethod
    def argmax(logits, labels):
        return logits.argmax(-1)

    def __call__(self, pred) -> dict[str, float]:
        ids = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        if len(ids) != len(self.windows):  # in-order evaluation makes this impossible; never mis-assign words
            raise RuntimeError(f"{len(ids)} predictions for {len(self.windows)} windows")
        words = self.windows.gather(lambda w: ids[w])
        self.last_tags = [[self.names[int(i)] for i in row] for row in words]
        return tag_metrics(self.gold, self.last_tags)
