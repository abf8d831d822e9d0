"""Question answering in ``bertkit predict`` and ``bertkit evaluate`` (called from those commands when the
model is a ``*ForQuestionAnswering``): rows with a question and a context in, answers out, through
:func:`bertkit.qa.answer_questions` with the settings the model was fine-tuned with (saved in config.json)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .. import qa
from ..data import load_inputs
from ..errors import DataError, UsageError
from ..log import quiet


def qa_settings(config, max_len: int) -> dict:
    """``answer_questions`` keyword arguments from a fine-tuned model's config (defaults for others)."""
    get = lambda k: getattr(config, f"bertkit_{k}", None)  # noqa: E731
    return {"max_seq_length": max_len,
            "doc_stride": get("doc_stride") or min(qa.DEFAULTS["doc_stride"], max_len // 4),
            "max_question_length": get("max_question_length") or min(qa.DEFAULTS["max_question_length"], max_len // 4),
            "n_best": get("n_best") or qa.DEFAULTS["n_best"],
            "max_answer_length": get("max_answer_length") or qa.DEFAULTS["max_answer_length"],
            "null_threshold": get("null_threshold")}


def load_qa_model(mdir: Path, device):
    from transformers import AutoModelForQuestionAnswering

    try:
        model = AutoModelForQuestionAnswering.from_pretrained(str(mdir), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"--model {mdir}: cannot load for question answering ({str(e).splitlines()[0]})") from None
    return model.eval().to(device)


def _answer(cfg, mdir, config, tok, device, max_len, questions, contexts, top_k: int = 1):
    from .predict import _Progress

    settings = qa_settings(config, max_len)
    qa.check_windows(settings["max_seq_length"], settings["doc_stride"], settings["max_question_length"])
    model = load_qa_model(mdir, device)
    progress = _Progress(len(questions))
    t0 = time.time()
    results = qa.answer_questions(qa.torch_model_fn(model, device), tok, questions, contexts, top_k=top_k,
                                  batch_size=cfg.batch_size, progress=None, **settings)
    progress.update(len(questions))
    progress.close()
    return results, time.time() - t0, settings


def read_questions(source: str, question_column: str, context_column: str) -> tuple[list[str], list[str], list | None]:
    """(questions, contexts, ids or None) from a .jsonl/.csv/... file or stdin (``question<TAB>context`` lines)."""
    if source == "-":
        data = sys.stdin.buffer.read()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise DataError(f"stdin: line {line} is not valid UTF-8") from None
        qs, cs = [], []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if "\t" not in line:
                raise DataError(f"stdin: line {i}: expected question<TAB>context")
            q, c = line.split("\t", 1)
            qs.append(q)
            cs.append(c)
        if not qs:
            raise DataError("stdin: no input (one question<TAB>context per line)")
        return qs, cs, None
    ds, _ = load_inputs([source], "--input", {"--question-column": question_column, "--context-column": context_column})
    return [str(x) for x in ds[question_column]], [str(x) for x in ds[context_column]], None


def predict(cfg, mdir, config, tok, device, max_len) -> dict:
    from .predict import write_results

    questions, contexts, _ = read_questions(cfg.input, cfg.question_column, cfg.context_column)
    results, elapsed, _ = _answer(cfg, mdir, config, tok, device, max_len, questions, contexts, top_k=cfg.top_k)
    csv_out = Path(cfg.output).suffix.lower() in (".csv", ".tsv") if cfg.output != "-" else False
    rows = []
    for q, r in zip(questions, results):
        rec = {"question": q, "answer": r["answer"], "score": r["score"], "start": r["start"], "end": r["end"]}
        if cfg.top_k > 1:
            alts = r["alternatives"]
            rec["alternatives"] = json.dumps(alts, ensure_ascii=False) if csv_out else alts
        rows.append(rec)
    n = write_results(rows, cfg.output, "question-answering")
    rate = n / max(elapsed, 1e-9)
    if not quiet():
        print(f"predict: {n:,} questions in {elapsed:.1f}s ({rate:,.1f} questions/s), task question-answering"
              + (f" -> {cfg.output}" if cfg.output != "-" else ""), file=sys.stderr)
    return {"rows": n, "seconds": elapsed, "rows_per_second": rate, "task": "question-answering"}


def evaluate(cfg, mdir, config, tok, device, max_len, out: Path) -> dict:
    data = qa.read_qa(cfg.data, "--data", cfg.question_column, cfg.context_column, cfg.answer_column)
    results, elapsed, settings = _answer(cfg, mdir, config, tok, device, max_len, data.questions, data.contexts)
    language = getattr(config, "bertkit_qa_language", None) or qa.detect_language(data.contexts)
    metrics, _ = qa.evaluate_predictions(results, data, language, null_threshold=settings["null_threshold"])
    out.mkdir(parents=True, exist_ok=True)
    preds = out / "predictions.jsonl"
    tmp = preds.with_name(f".{preds.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for i, r in enumerate(results):
            fh.write(json.dumps({"id": data.ids[i], "question": data.questions[i], "answer": r["answer"],
                                 "score": r["score"], "start": r["start"], "end": r["end"],
                                 "gold": data.answers[i]["text"]}, ensure_ascii=False) + "\n")
    tmp.replace(preds)
    return {"task": "question-answering", "examples": len(data), "metric": qa.metric_name(language),
            "qa_language": language, **metrics, "skipped_answers": data.bad_answers,
            "questions_per_second": round(len(data) / max(elapsed, 1e-9), 2), "predictions_file": str(preds)}


__all__ = ["predict", "evaluate", "qa_settings"]
