"""bertkit evaluate: a saved model's metrics on a labelled file (classification) or on text (MLM),
without training.  Classification adds a confusion matrix (JSON and PNG)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .. import qa
from ..data import join_text, load_inputs, split_columns
from ..inference import RowProgress, batches, classification_logits, open_model
from ..labels import LabelSpace
from ..loading import DATASET_DIR
from ..metrics import classification_metrics, confusion_matrix, perplexity
from ..errors import UsageError
from ..outputs import check_writable, write_json, write_records
from ..reporting import plot_confusion
from ..schemas import DataConfig, EvaluateConfig, TokenizerConfig
from ..summary import print_summary
from ..tokenization import build_tokenized, is_tokenized_dir


def run(cfg: EvaluateConfig) -> dict:
    cfg.validate()
    opened = open_model(cfg)
    out = Path(cfg.output) if cfg.output else opened.path / f"eval-{Path(cfg.data).stem}"
    if problems := check_writable(out, "--output"):  # the default, in the model dir, is checked here
        raise UsageError(problems[0])
    report = REPORTS[opened.task](cfg, opened, out)
    paths = write_report(report, out)
    print(json.dumps(report, ensure_ascii=False))
    shown = [(k, f"{v:.4f}") for k, v in report.items() if isinstance(v, float)]
    print_summary("evaluate", [("model", str(opened.path)), ("data", f"{cfg.data} ({report['examples']:,} examples)"),
                               *shown, ("written", ", ".join(paths))])
    return report


def write_report(report: dict, out: Path) -> list[str]:
    """metrics.json, and for a single-label classifier confusion_matrix.json/.png; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    cm = report.pop("confusion_matrix", None)
    write_json(out / "metrics.json", report)
    paths = [str(out / "metrics.json")] + ([report["predictions_file"]] if "predictions_file" in report else [])
    if cm is not None:
        write_json(out / "confusion_matrix.json", {"labels": report["labels"], "matrix": cm,
                                                   "rows": "reference", "columns": "prediction"})
        paths.append(str(out / "confusion_matrix.json"))
        if plot_confusion(cm, report["labels"], out / "confusion_matrix.png"):
            paths.append(str(out / "confusion_matrix.png"))
    return paths


def classification_report(cfg: EvaluateConfig, opened, out: Path) -> dict:
    space = LabelSpace.from_model_config(opened.config)
    cols = {"--text-column": cfg.text_column, "--text-pair-column": cfg.text_pair_column,
            "--label-column": cfg.label_column}
    ds, _ = load_inputs([cfg.data], "--data", cols)
    labels = np.asarray(space.encode(ds[cfg.label_column], source=cfg.data, column=cfg.label_column))
    texts = join_text(ds.to_dict(), split_columns(cfg.text_column), len(ds))
    pairs = [str(x) for x in ds[cfg.text_pair_column]] if cfg.text_pair_column else None
    logits = classification_logits(opened.load(), opened.tokenizer, texts, pairs, cfg.batch_size, opened.max_len,
                                   opened.device, RowProgress(len(texts), "Evaluating"), **opened.long_text)
    metrics = classification_metrics(space.problem, logits, labels, space.num_labels, space.threshold)
    report = {"task": "classification", "problem": space.problem, "examples": len(texts), **metrics}
    if space.problem == "single":
        report["labels"] = space.names
        report["confusion_matrix"] = confusion_matrix(logits.argmax(-1), labels, space.num_labels)
    return report


def mlm_report(cfg: EvaluateConfig, opened, out: Path) -> dict:
    """Loss, perplexity and masked-token accuracy at a fixed, seeded 15% masking."""
    import datasets
    import torch

    from ..masking import MLMCollator
    from ..modeling import load_mlm_model

    tmp = None
    if is_tokenized_dir(cfg.data):
        ds = datasets.load_from_disk(str(Path(cfg.data) / DATASET_DIR))
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bertkit-eval-"))
        dcfg = DataConfig(inputs=[cfg.data], text_column=cfg.text_column, max_seq_length=cfg.max_seq_length or 128)
        build_tokenized(dcfg, TokenizerConfig(path=str(opened.path)), "mlm", tmp / "tok", flag="--data")
        ds = datasets.load_from_disk(str(tmp / "tok" / DATASET_DIR))
    try:
        # on ONNX Runtime, called with labels, the export returns what the sparse model does (loss, predictions)
        model = opened.load() if opened.backend == "onnx" else load_mlm_model(opened.path).to(opened.device).eval()
        collator = MLMCollator(opened.tokenizer, eval_seed=cfg.seed)
        total_loss, total_tokens, correct = 0.0, 0, 0
        progress = RowProgress(len(ds), "Evaluating")
        with collator.evaluation(), torch.inference_mode():
            for idx in batches(list(range(len(ds))), cfg.batch_size):
                rows = ds[idx[0]:idx[-1] + 1]["input_ids"]
                batch = {k: v.to(opened.device) for k, v in collator([{"input_ids": r} for r in rows]).items()}
                outp = model(**batch)
                n = int((batch["labels"] != -100).sum())
                total_loss += float(outp.loss) * n
                total_tokens += n
                correct += int(((outp.logits == batch["labels"]) & (batch["labels"] != -100)).sum())
                progress.update(len(rows))
        progress.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    loss = total_loss / max(total_tokens, 1)
    return {"task": "fill-mask", "examples": len(ds), "masked_tokens": total_tokens, "loss": loss,
            "perplexity": perplexity(loss), "masked_accuracy": correct / max(total_tokens, 1)}


def qa_report(cfg: EvaluateConfig, opened, out: Path) -> dict:
    """EM/F1 (v2 has-answer/no-answer splits where present) with the metric convention the model was
    trained with, and a per-question predictions file."""
    import time

    data = qa.read_qa(cfg.data, "--data", cfg.question_column, cfg.context_column, cfg.answer_column)
    settings = qa.inference_settings(opened.config, opened.max_len)
    qa.check_windows(settings["max_seq_length"], settings["doc_stride"], settings["max_question_length"])
    progress = RowProgress(len(data), "Evaluating")
    t0 = time.time()
    results = qa.answer_questions(qa.torch_model_fn(opened.load(), opened.device), opened.tokenizer, data.questions,
                                  data.contexts, batch_size=cfg.batch_size, **settings)  # (progress: windows)
    progress.update(len(data))
    elapsed = time.time() - t0
    progress.close()
    language = getattr(opened.config, "bertkit_qa_language", None) or qa.detect_language(data.contexts)
    metrics, _ = qa.evaluate_predictions(results, data, language, null_threshold=settings["null_threshold"])
    out.mkdir(parents=True, exist_ok=True)
    preds = out / "predictions.jsonl"
    write_records([{"id": data.ids[i], "question": data.questions[i], "answer": r["answer"], "score": r["score"],
                    "start": r["start"], "end": r["end"], "gold": data.answers[i]["text"]}
                   for i, r in enumerate(results)], str(preds))
    return {"task": "question-answering", "examples": len(data), "metric": qa.metric_name(language),
            "qa_language": language, **metrics, "skipped_answers": data.bad_answers,
            "questions_per_second": round(len(data) / max(elapsed, 1e-9), 2), "predictions_file": str(preds)}


REPORTS = {"classification": classification_report, "fill-mask": mlm_report, "question-answering": qa_report}
