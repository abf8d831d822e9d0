"""Extractive question answering: an answer span of the context for each question, contexts of any
length (overlapping windows, as the model was fine-tuned: ``bertkit_doc_stride`` and the other settings
stamped in its config).  Reading, windows, post-processing and metrics live in :mod:`bertkit.qa`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from .. import qa
from .base import ModelFn, Scored, Task, Windows, run_chunks


class QuestionAnsweringTask(Task):
    name = "question-answering"
    auto_model = "AutoModelForQuestionAnswering"
    architectures = ("ForQuestionAnswering",)
    outputs = ("start_logits", "end_logits")
    per_token = True
    unit = "questions"
    fields = ("question", "context")
    description = "extractive question answering"

    def __init__(self, config, tokenizer, max_len: int, path=None):
        super().__init__(config, tokenizer, max_len, path)
        self.settings = qa.inference_settings(config, max_len)
        qa.check_windows(self.settings["max_seq_length"], self.settings["doc_stride"],
                         self.settings["max_question_length"])

    # -- inference ----------------------------------------------------------------------------

    def read_inputs(self, cfg) -> list[dict]:
        from ..log import get_logger

        rows = qa.read_questions(cfg.input, cfg.question_column, cfg.context_column)
        empty = qa.empty_context_rows([r["context"] for r in rows])
        if empty:
            get_logger().warning(f"--input {cfg.input}: {len(empty):,} questions have an empty context (rows "
                                 f"{', '.join(str(i + 1) for i in empty[:10])}{', ...' if len(empty) > 10 else ''}); "
                                 'they are not answered: their records have "error": "empty context"')
        return rows

    def encode(self, rows: Sequence[dict]) -> Windows:
        s = self.settings
        return qa.encode_windows(self.tokenizer, [r["question"] for r in rows], [r["context"] for r in rows],
                                 s["max_seq_length"], s["doc_stride"], s["max_question_length"])

    def answers(self, rows: Sequence[dict], windows: Windows, results: list, top_k: int = 1) -> list[dict]:
        s = self.settings
        return qa.postprocess([r["start_logits"] for r in results], [r["end_logits"] for r in results], windows,
                              [r["context"] for r in rows], n_best=s["n_best"],
                              max_answer_length=s["max_answer_length"], null_threshold=s["null_threshold"],
                              top_k=top_k)

    def decode(self, rows: Sequence[dict], windows: Windows, results: list, cfg) -> list[dict]:
        """One answer record per question (``id`` for a SQuAD-format input, ``answer``, ``score``,
        ``start``/``end`` character offsets into the context, and ``alternatives`` with --top-k > 1)."""
        top_k = getattr(cfg, "top_k", 1)
        empty = set(qa.empty_context_rows([r["context"] for r in rows]))
        out = []
        for i, (row, r) in enumerate(zip(rows, self.answers(rows, windows, results, top_k), strict=True)):
            key = {"id": row["id"]} if "id" in row else {}
            if i in empty:  # nothing to answer from: no answer, not a confident empty one
                out.append({**key, "question": row["question"], "answer": None, "score": None, "start": None,
                            "end": None, "error": "empty context"})
                continue
            rec = {**key, "question": row["question"], "answer": r["answer"], "score": r["score"],
                   "start": r["start"], "end": r["end"]}
            if top_k > 1:
                rec["alternatives"] = r["alternatives"]
            out.append(rec)
        return out

    def flatten(self, record: dict) -> dict:
        out = {k: v for k, v in record.items() if k != "alternatives"}
        if "alternatives" in record:
            out["alternatives"] = json.dumps(record["alternatives"], ensure_ascii=False)
        return out

    # -- scoring ------------------------------------------------------------------------------

    def read_labelled(self, path: str, cfg, flag: str = "--data") -> qa.QAData:
        return qa.read_qa(path, flag, cfg.question_column, cfg.context_column, cfg.answer_column)

    def score(self, model_fn: ModelFn, labelled: qa.QAData, cfg, progress=None) -> Scored:
        """EM/F1 (v2 has-answer/no-answer splits where present) with the metric convention the model was
        trained with, and a per-question predictions file."""
        rows = [{"question": q, "context": c} for q, c in zip(labelled.questions, labelled.contexts, strict=True)]
        results = [a for part, w, res in run_chunks(self, model_fn, rows, cfg.batch_size, progress)
                   for a in self.answers(part, w, res)]
        language = getattr(self.config, "bertkit_qa_language", None) or qa.detect_language(labelled.contexts)
        metrics, _ = qa.evaluate_predictions(results, labelled, language,
                                             null_threshold=self.settings["null_threshold"])
        metrics = {"metric": qa.metric_name(language), "qa_language": language, **metrics,
                   "skipped_answers": labelled.bad_answers}
        records = [{"id": labelled.ids[i], "question": labelled.questions[i], "answer": r["answer"],
                    "score": r["score"], "start": r["start"], "end": r["end"], "gold": labelled.answers[i]["text"]}
                   for i, r in enumerate(results)]
        return Scored(metrics, "f1", np.array([r["answer"] for r in results], dtype=object), records, scale=1.0)

    def agreement(self, a: Scored, b: Scored) -> dict:
        """Share of questions given the same answer."""
        x, y = a.outputs, b.outputs
        return {"answer_agreement": float((x == y).mean()) if len(x) else 1.0}

    def summary(self, scored: Scored) -> list[tuple[str, str]]:
        m = scored.metrics
        return [(k, f"{v:.2f}") for k, v in m.items() if isinstance(v, float) and k != "null_threshold"]

    # -- export -------------------------------------------------------------------------------

    def sample_rows(self, texts: Sequence[str]) -> list[dict]:
        return [{"question": "what is it about?", "context": t} for t in texts]


TASK = QuestionAnsweringTask
