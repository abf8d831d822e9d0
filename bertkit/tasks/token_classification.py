"""Token classification (NER, POS, chunking): a tag per word, and the entities the tags mark.

Rows are sentences as words with their character spans in a text:

* **pre-split words** (CoNLL-style files: ``token<TAB>tag`` lines or whitespace columns, the word in the
  first column, a blank line between sentences; .jsonl/.csv/.parquet rows with a list of words in the
  words column): the text is the words joined by one space, except that two CJK characters are joined
  without one (Chinese has no spaces), and offsets point into that text;
* **raw text** (a .txt file or stdin, one sentence per line; or the text column of .jsonl/.csv/.parquet
  rows without a words column): words are the tokenizer's pre-tokenizer pieces (whitespace and
  punctuation), every CJK character a word of its own, and offsets point into the text as given.

A .txt file is read as CoNLL-style when it holds tabs.  Each record is ``{"text", "words", "tags",
"entities": [{"type", "text", "start", "end", "score"}]}``: ``end`` is exclusive, ``score`` the mean
probability of the entity's word tags.  Every word gets a tag: long sentences are windowed as in
training (:mod:`bertkit.ner`), never truncated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import ner
from ..errors import DataError
from .base import ModelFn, Scored, Task, Windows, predict_records


@dataclass
class Sentence:
    """A row: its text, words, and each word's character span in the text."""

    text: str
    words: list[str]
    spans: list[tuple[int, int]]

    @classmethod
    def from_words(cls, words: Sequence[str]) -> Sentence:
        text, spans = ner.join_words(words)
        return cls(text, list(words), spans)

    @classmethod
    def from_text(cls, text: str, tok) -> Sentence:
        words, spans = ner.split_words(text, tok)
        return cls(text, words, spans)


class TokenClassification(Task):
    name = "token-classification"
    auto_model = "AutoModelForTokenClassification"
    architectures = ("ForTokenClassification",)
    per_token = True
    unit = "sentences"
    description = "a tag per word (NER, POS, chunking) and the entities the tags mark"

    def __init__(self, config, tokenizer, max_len: int, path=None):
        super().__init__(config, tokenizer, max_len, path)
        self.names = [config.id2label[i] for i in range(config.num_labels)]
        # the fine-tuned overlap, kept under half a window when inference runs shorter windows
        stride = getattr(config, "bertkit_stride", None)
        self.stride = max(0, min(32 if stride is None else int(stride), (max_len - 2) // 2 - 1))
        self.scheme = getattr(config, "bertkit_tag_scheme", None) or "IOB2"

    # -- inference ----------------------------------------------------------------------------

    def read_inputs(self, cfg) -> list[Sentence]:
        """Sentences from ``cfg.input``: ``-`` (stdin: a raw sentence per line), a CoNLL-style file, or
        .jsonl/.csv/.parquet rows (``cfg.words_column`` holding words; else ``cfg.text_column`` holding raw
        text)."""
        from ..data import read_stdin_lines

        if cfg.input == "-":
            rows = [Sentence.from_text(line.strip(), self.tokenizer) for _, line in read_stdin_lines()]
            if not rows:
                raise DataError("stdin: no input text (one sentence per line)")
            return rows
        return read_sentences(cfg.input, self.tokenizer, cfg.words_column, cfg.text_column)

    def request_rows(self, inputs) -> list[Sentence]:
        """Rows of a JSON request: raw text (strings, or objects with ``text``; split into words here) or
        pre-split words (objects with ``words``, a list of strings), every row of a request alike."""
        items = [inputs] if isinstance(inputs, dict) else inputs
        if not (isinstance(items, list) and items and all(isinstance(x, dict) and "words" in x for x in items)):
            return [Sentence.from_text(r["text"], self.tokenizer) for r in super().request_rows(inputs)]
        rows = []
        for i, x in enumerate(items):
            if set(x) != {"words"}:
                raise ValueError(f"inputs[{i}].{sorted(set(x) - {'words'})[0]}: unknown field (rows have text, or "
                                 "words)")
            if not isinstance(x["words"], list) or not all(isinstance(w, str) and w for w in x["words"]):
                raise ValueError(f"inputs[{i}].words: expected a list of non-empty strings")
            rows.append(Sentence.from_words(x["words"]))
        return rows

    def info(self) -> dict:
        return {"labels": self.names, "tag_scheme": self.scheme}

    def encode(self, rows: Sequence[Sentence]) -> Windows:
        ww = ner.sentence_windows(self.tokenizer, [r.words for r in rows], self.max_len, self.stride)
        inputs = {"input_ids": ww.input_ids}
        if "token_type_ids" in self.tokenizer.model_input_names:
            inputs["token_type_ids"] = ww.token_type_ids()
        return Windows(inputs, ww.row, {"words": ww})

    def decode(self, rows: Sequence[Sentence], windows: Windows, results: list, cfg) -> list[dict]:
        from ..metrics import softmax

        probs = [softmax(r["logits"].astype(np.float64)) for r in results]
        per_word = windows.meta["words"].gather(lambda w: probs[w])
        out = []
        for row, p in zip(rows, per_word, strict=True):
            ids = p.argmax(-1) if len(row.words) else np.zeros(0, dtype=np.int64)
            score = p.max(-1) if len(row.words) else np.zeros(0)
            tags = [self.names[int(i)] for i in ids]
            ents = []
            for kind, s, e in ner.entities(tags):
                start, end = row.spans[s][0], row.spans[e - 1][1]
                ents.append({"type": kind, "text": row.text[start:end], "start": start, "end": end,
                             "score": round(float(score[s:e].mean()), 4)})
            out.append({"text": row.text, "words": row.words, "tags": tags, "entities": ents})
        return out

    def flatten(self, record: dict) -> dict:
        return {"text": record["text"], "tags": " ".join(record["tags"]),
                "entities": json.dumps(record["entities"], ensure_ascii=False)}

    # -- scoring ------------------------------------------------------------------------------

    def read_labelled(self, path: str, cfg, flag: str = "--data") -> ner.Tagged:
        """Sentences with gold tags (the formats of finetune-ner's --train); tags are checked against the
        model's tag scheme, not its labels (a type the model lacks counts as missed)."""
        data = ner.read_tagged(path, flag, cfg.words_column, cfg.tags_column, cfg.tag_column)
        ner.check_tags(data, self.scheme, flag=flag)
        return data

    def score(self, model_fn: ModelFn, labelled: ner.Tagged, cfg, progress=None) -> Scored:
        rows = [Sentence.from_words(w) for w in labelled.words]
        records = list(predict_records(self, model_fn, rows, cfg.batch_size, cfg, progress))
        pred = [r["tags"] for r in records]
        for r, gold in zip(records, labelled.tags, strict=True):
            r["gold_tags"] = gold
        return Scored(ner.tag_metrics(labelled.tags, pred), "f1", pred, records)

    def agreement(self, a: Scored, b: Scored) -> dict:
        """Share of words given the same tag."""
        same = sum(x == y for ta, tb in zip(a.outputs, b.outputs, strict=True) for x, y in zip(ta, tb, strict=True))
        words = sum(len(t) for t in a.outputs)
        return {"tag_agreement": same / words if words else 1.0}

    def summary(self, scored: Scored) -> list[tuple[str, str]]:
        return [(k, f"{scored.metrics[k]:.4f}") for k in ("f1", "precision", "recall", "accuracy")
                if k in scored.metrics]

    # -- export -------------------------------------------------------------------------------

    def sample_rows(self, texts: Sequence[str]) -> list[Sentence]:
        return [Sentence.from_text(t, self.tokenizer) for t in texts]


TASK = TokenClassification


def read_sentences(source: str, tok, words_column: str, text_column: str, flag: str = "--input") -> list[Sentence]:
    """Untagged sentences from a file: CoNLL-style (a word per line, any tag columns ignored), .jsonl/.csv/
    .parquet rows (``words_column`` holding words, else ``text_column`` holding raw text), or a .txt of raw
    sentences, one per line (split into words as :meth:`Sentence.from_text`)."""
    from ..data import read_rows, read_text

    path = Path(source)
    if not path.is_file():
        raise DataError(f"{flag} {source}: no such file")
    ext = path.suffix.lower()
    if ext in ner.COLUMNAR_EXTS:
        ds = read_rows(path, (words_column,))
        if words_column not in ds.column_names:
            if text_column not in ds.column_names:
                raise DataError(f"{path}: no column '{words_column}' (--words-column) or '{text_column}' "
                                f"(--text-column); columns found: {', '.join(ds.column_names)}")
            return [Sentence.from_text(str(t or ""), tok) for t in ds[text_column]]
        tagged = ner.rows_to_tagged(ds, path, words_column, None)
    elif ext in (".txt", ".text") and "\t" not in (text := read_text(path)):
        return [Sentence.from_text(line.strip(), tok) for line in text.splitlines() if line.strip()]
    else:
        tagged = ner.read_tagged(source, flag, tags_column=None)
    return [Sentence.from_words(w) for w in tagged.words]
