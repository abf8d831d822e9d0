"""bertkit finetune-qa: extractive question answering (SQuAD v1.1/v2.0 style, English and Chinese).

``run`` is the list of stages (the same seams as finetune-cls); the data, windows, post-processing and
metrics live in :mod:`bertkit.qa`, the evaluation inside training in :class:`bertkit.trainers.QATrainer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import qa
from ..distributed import main_process_first
from ..errors import DataError, UsageError
from ..loading import load_model
from ..log import get_logger
from ..modeling import Checkpoint, count_parameters, dropout_overrides, new_parameters, open_checkpoint_for
from ..schemas import FinetuneQAConfig
from ..summary import print_summary
from ..trainers import QATrainer
from ..training import (
    default_callbacks,
    examples_seen,
    finetune_arguments,
    pad_multiple,
    run_metrics,
    save_run,
    start_run,
    train_with_signals,
)

log = get_logger()


def run(cfg: FinetuneQAConfig, callbacks: list | tuple = ()) -> dict:
    """Fine-tune; ``callbacks`` are extra Trainer callbacks (a sweep's pruning, a benchmark's timer)."""
    cfg.validate()
    base = open_checkpoint_for(cfg.model, cfg.allow_pickle, cfg.data.max_seq_length)
    with start_run(cfg, "finetune-qa") as (out, resume_from):
        data = load_splits(cfg, base.tokenizer)
        model, head = load_qa_model(cfg, base)
        trainer = build_trainer(cfg, out, model, base.tokenizer, data, head, callbacks)
    result, train_time = train_with_signals(trainer, out, resume_from)
    metrics = final_metrics(cfg, trainer, data, result, train_time)
    stamp_inference_settings(trainer.model.config, cfg, data.eval)
    save_run(trainer, base.tokenizer, out, "finetune-qa", cfg, metrics, model_card_extra(cfg, data))
    print_summary("finetune-qa", summary_rows(base, data, metrics, out))
    return metrics


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------

@dataclass
class QASplits:
    train: qa.QAData
    validation: qa.QAData
    train_windows: Any  # the encoded training windows (a datasets.Dataset)
    eval: qa.QAEvalSet
    language: str


def read_splits(cfg: FinetuneQAConfig) -> tuple[qa.QAData, qa.QAData]:
    """Train and validation questions (a tenth of train held out when there is no --validation)."""
    d = cfg.data
    cols = dict(question_column=d.question_column, context_column=d.context_column, answer_column=d.answer_column)
    train = qa.read_qa(d.train, "--train", **cols)
    if d.validation:
        return train, qa.read_qa(d.validation, "--validation", **cols)
    if len(train) < 10:
        # the file is too small, as finetune-cls says of too few rows: a data error (exit 1)
        raise DataError(f"--train {d.train}: too few questions to hold out a validation split; pass --validation FILE")
    perm = np.random.default_rng(cfg.train.seed).permutation(len(train))
    n_val = max(1, len(train) // 10)
    log.info(f"No --validation: holding out {n_val:,} training questions for evaluation")
    return train.select(sorted(perm[n_val:])), train.select(sorted(perm[:n_val]))


def settle_unanswerable(cfg: FinetuneQAConfig, train: qa.QAData, val: qa.QAData) -> tuple[qa.QAData, qa.QAData]:
    """Questions without an answer: kept for the model to learn to abstain (--version-2, or by default),
    dropped with --no-version-2.  By default, data that does not say it is SQuAD v2.0 gets a warning: an
    empty answers list in v1.1 data is more often a mistake than a question meant to have no answer."""
    n = train.unanswered + val.unanswered
    if not n:
        return train, val
    if cfg.version_2 is False:
        log.warning(f"--no-version-2: {n:,} questions without an answer dropped ({train.unanswered:,} train, "
                    f"{val.unanswered:,} validation)")
        return train.answered(), val.answered()
    if cfg.version_2 is None and not (train.marked_v2 or val.marked_v2):
        log.warning(f"{n:,} of {len(train) + len(val):,} questions have no answer ({train.unanswered:,} train, "
                    f"{val.unanswered:,} validation) though the data does not say it is SQuAD v2.0: the model "
                    "will learn to abstain (answer empty); pass --version-2 to confirm, or --no-version-2 to "
                    "drop them")
    return train, val


def null_threshold(cfg: FinetuneQAConfig, train: qa.QAData, val: qa.QAData) -> float | None:
    """None (never answer empty) for SQuAD v1-style data; a threshold when any question is unanswerable
    or --version-2 says the model may abstain."""
    if cfg.null_threshold is not None:
        return cfg.null_threshold
    if cfg.version_2 or train.has_no_answer or val.has_no_answer or cfg.tune_null_threshold:
        return 0.0
    return None


def load_splits(cfg: FinetuneQAConfig, tok) -> QASplits:
    d = cfg.data
    if tok.padding_side != "right":
        raise UsageError(f"--model {cfg.model}: the tokenizer pads on the left; "
                         "bertkit's QA windows need right padding")
    train, val = settle_unanswerable(cfg, *read_splits(cfg))
    language = cfg.qa_language if cfg.qa_language != "auto" else qa.detect_language(val.contexts)
    with main_process_first():
        train_windows = qa.encode_train(train, tok, d.max_seq_length, d.doc_stride, d.max_question_length)
    ev = qa.QAEvalSet.build(val, tok, d.max_seq_length, d.doc_stride, d.max_question_length, language=language,
                            n_best=cfg.n_best, max_answer_length=cfg.max_answer_length,
                            null_threshold=null_threshold(cfg, train, val))
    return QASplits(train, val, train_windows, ev, language)


def load_qa_model(cfg: FinetuneQAConfig, base: Checkpoint):
    """The checkpoint with a span head (new unless it has one); returns (model, the new head's names)."""
    from transformers import AutoModelForQuestionAnswering, set_seed

    set_seed(cfg.train.seed)  # the new head's initial weights (two runs of one seed differed by F1 4.0 vs 13.5)
    model, loading = load_model(AutoModelForQuestionAnswering, base.path, "question answering",
                                output_loading_info=True, **dropout_overrides(base.config, cfg.dropout))
    return model, frozenset(new_parameters(loading))


def build_trainer(cfg: FinetuneQAConfig, out, model, tok, data: QASplits, head: frozenset[str] = frozenset(),
                  callbacks=(), trainer_cls: type[QATrainer] = QATrainer, title: str | None = None,
                  **trainer_kwargs) -> QATrainer:
    """The Trainer (``trainer_cls``, given ``trainer_kwargs``: distill's); ``title`` opens the log line."""
    from transformers import DataCollatorWithPadding

    train = cfg.train
    args, extra = finetune_arguments(train, out, cfg.metric)
    trainer = trainer_cls(
        model=model, args=args, train_dataset=data.train_windows, eval_dataset=data.eval.dataset,
        data_collator=DataCollatorWithPadding(tok, pad_to_multiple_of=pad_multiple()), processing_class=tok,
        callbacks=[*default_callbacks(out, "examples", train), *extra, *callbacks], qa_eval=data.eval,
        head_params=head, head_lr=train.head_lr,
        batching_window=train.sampler_window(), **trainer_kwargs)
    log.info(f"{title or f'Fine-tuning {cfg.model}'} ({count_parameters(model) / 1e6:.1f}M parameters) for question "
             "answering: "
             f"{len(data.train):,} train questions ({len(data.train_windows):,} windows), {len(data.validation):,} "
             f"validation ({len(data.eval.windows):,} windows); metric convention {data.language}")
    return trainer


def final_metrics(cfg: FinetuneQAConfig, trainer: QATrainer, data: QASplits, result, train_time: float) -> dict:
    """The final score (of the best checkpoint when one was kept), tuning the null threshold if asked."""
    final = trainer.evaluate(tune=cfg.tune_null_threshold)
    if cfg.tune_null_threshold:
        log.info(f"Tuned null threshold: {data.eval.null_threshold} (validation F1 {final['eval_f1']:.2f})")
    metrics = {k: v for k, v in final.items() if not k.endswith(("_runtime", "_per_second"))}
    # examples are training windows here
    metrics.update(run_metrics(trainer, result, train_time, "examples", examples_seen(trainer)))
    metrics.update({
        "train_examples": len(data.train),
        "train_windows": len(data.train_windows),
        "eval_examples": len(data.validation),
        "eval_windows": len(data.eval.windows),
        "best_metric": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "metric_for_best_model": trainer.args.metric_for_best_model,
        "qa_language": data.language,
        "null_threshold": data.eval.null_threshold,
        "parameters": count_parameters(trainer.model),
        "skipped_answers": {"train": data.train.bad_answers, "validation": data.validation.bad_answers},
    })
    return metrics


def stamp_inference_settings(config, cfg: FinetuneQAConfig, ev: qa.QAEvalSet) -> None:
    """predict/evaluate apply the model as it was fine-tuned and scored."""
    d = cfg.data
    config.bertkit_max_seq_length = d.max_seq_length
    config.bertkit_doc_stride = d.doc_stride
    config.bertkit_max_question_length = d.max_question_length
    config.bertkit_max_answer_length = cfg.max_answer_length
    config.bertkit_n_best = cfg.n_best
    config.bertkit_null_threshold = ev.null_threshold
    config.bertkit_qa_language = ev.language


def model_card_extra(cfg: FinetuneQAConfig, data: QASplits) -> dict:
    d = cfg.data
    return {
        "pipeline_tag": "question-answering",
        "purpose": "an extractive question-answering model: use it with `pipeline(\"question-answering\")` or "
                   "`bertkit predict --model DIR`",
        "data": f"train: `{d.train}` ({len(data.train):,} questions); validation: "
                f"`{d.validation or 'held out from train'}` ({len(data.validation):,}); metric convention "
                f"`{data.language}` ({qa.metric_name(data.language)}).",
    }


def summary_rows(base: Checkpoint, data: QASplits, metrics: dict, out) -> list[tuple[str, str]]:
    threshold = data.eval.null_threshold
    return [
        ("model", f"{base.path} ({metrics['parameters'] / 1e6:.2f}M parameters)"),
        ("data", f"{len(data.train):,} train questions ({len(data.train_windows):,} windows), "
                 f"{len(data.validation):,} validation"),
        ("steps", f"{metrics['steps']:,} ({metrics['epochs']} epochs)"),
        ("time", f"{metrics['train_seconds']:.1f}s ({metrics['examples_per_second']:,.1f} windows/s)"),
        ("validation EM", f"{metrics['eval_exact_match']:.2f}"),
        ("validation F1", f"{metrics['eval_f1']:.2f} ({qa.metric_name(data.language)})"),
        *([("null threshold", f"{threshold:g}")] if threshold is not None else []),
        ("model dir", str(out)),
    ]
