"""bertkit finetune-qa: extractive question answering (SQuAD v1.1/v2.0 style, English and Chinese).

The data, windows, post-processing and metrics live in :mod:`bertkit.qa` (no Trainer there); this module
is the training command: a list of stages, and :class:`QATrainer`, whose evaluation predicts start/end
logits on the validation windows, turns them into answers and scores EM/F1.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from torch.utils.data import SequentialSampler
from transformers import Trainer, TrainerCallback, set_seed
from transformers.trainer_utils import speed_metrics

from .. import qa
from ..config import save_config
from ..errors import UsageError
from ..log import get_logger
from ..modeling import check_compatible, check_model_dir, count_parameters, dropout_overrides, load_model_config
from ..schemas import FinetuneQAConfig
from ..summary import print_summary
from ..tokenization import load_tokenizer
from ..training import (check_numbers, eval_seconds, is_main_process, main_process_first, make_callbacks,
                        prepare_output, remove_default_printers, save_run, train_with_signals, training_arguments)

log = get_logger()

METRICS = ("f1", "exact_match")


# --------------------------------------------------------------------------------------------
# Evaluation inside the Trainer
# --------------------------------------------------------------------------------------------

@dataclass
class QAEvalSet:
    """A validation split as the Trainer sees it (``dataset``: model inputs only, windows sorted by
    length) and what it does not (questions, gold answers, each window's question and offsets)."""

    data: qa.QAData
    windows: qa.Windows
    language: str
    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float | None = None
    tune: bool = False

    def __post_init__(self):
        self.dataset = self.windows.to_dataset()

    @classmethod
    def build(cls, data: qa.QAData, tok, d, **kw) -> "QAEvalSet":
        win = qa.encode_windows(tok, data.questions, data.contexts, d.max_seq_length, d.doc_stride,
                                d.max_question_length)
        # sorted by length: batches pad little; read in order by QATrainer's sequential sampler
        win = win.reorder(np.argsort(win.lengths(), kind="stable"))
        return cls(data, win, **kw)

    def score(self, start_logits: np.ndarray, end_logits: np.ndarray, tune: bool | None = None
              ) -> tuple[dict, list[dict], float | None]:
        if len(start_logits) != len(self.windows):  # cannot happen with in-order evaluation; never mis-assign
            raise RuntimeError(f"{len(start_logits)} predictions for {len(self.windows)} windows")
        results = qa.postprocess(start_logits, end_logits, self.windows, self.data.contexts, n_best=self.n_best,
                                 max_answer_length=self.max_answer_length, null_threshold=self.null_threshold)
        metrics, threshold = qa.evaluate_predictions(results, self.data, self.language,
                                                     tune=self.tune if tune is None else tune,
                                                     null_threshold=self.null_threshold)
        return metrics, results, threshold


class QATrainer(Trainer):
    """Trainer whose evaluation scores answers: start/end logits on every validation window,
    post-processed across the windows of each question into answers, then EM/F1 (``eval_f1``,
    ``eval_exact_match``: ``--metric`` picks the best checkpoint from them).  Module-level so it pickles and
    can be subclassed."""

    def __init__(self, *args, qa_eval: QAEvalSet | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.qa_eval = qa_eval
        self.last_results: list[dict] | None = None

    def _get_eval_sampler(self, eval_dataset):
        # transformers applies group_by_length to evaluation too, with a shuffle: windows would come back in an
        # order unknown here.  The validation windows are sorted by length beforehand and read in order;
        # with several processes accelerate shards them and gathers in order.
        if eval_dataset is None or self.args.world_size > 1:
            return None
        return SequentialSampler(eval_dataset)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", tune: bool | None = None):
        if self.qa_eval is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        ev = self.qa_eval
        t0 = time.time()
        loader = self.get_eval_dataloader(ev.dataset)
        out = self.evaluation_loop(loader, description="Evaluation", prediction_loss_only=False,
                                   ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        start, end = out.predictions[:2]
        metrics, results, threshold = ev.score(start, end, tune)
        self.last_results = results
        if threshold is not None and (tune if tune is not None else ev.tune):
            ev.null_threshold = threshold
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()}
        metrics.update(speed_metrics(metric_key_prefix, t0, num_samples=len(ev.dataset),
                                     num_steps=math.ceil(len(ev.dataset) / self.args.eval_batch_size)))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class EvaluateAtStop(TrainerCallback):
    """When --time-budget ends training (on the clock, or where the fitted schedule ends), evaluate and save
    that step too.  Without it the steps since the last evaluation are thrown away by load_best_model_at_end:
    bertkit's stopper clears the Trainer's end-of-training save, so the final evaluation never became a
    checkpoint (SQuAD, MiniLM, 50 minutes: step 287 scored F1 55.41 and the saved model was step 240's 54.31).
    Not on a signal: the user wants out, and the stopper saves a checkpoint for resuming."""

    def __init__(self, stopper):
        self.stopper = stopper

    def on_step_end(self, args, state, control, **kw):
        if (control.should_training_stop and getattr(self.stopper, "budget_hit", False) and self.stopper.signal is None
                and args.eval_strategy != "no"):
            control.should_evaluate = True
            control.should_save = True
        return control


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------

def _check(cfg: FinetuneQAConfig) -> None:
    d = cfg.data
    if not d.train:
        raise UsageError("--train is required: a SQuAD-format .json or a .jsonl/.csv/.parquet file with question, "
                         "context and answers columns")
    check_numbers(cfg.train)
    if cfg.metric.removeprefix("eval_") not in METRICS:
        raise UsageError(f"--metric {cfg.metric}: use one of {', '.join(METRICS)}")
    if cfg.n_best < 1:
        raise UsageError(f"--n-best {cfg.n_best}: must be at least 1")
    if cfg.max_answer_length < 1:
        raise UsageError(f"--max-answer-length {cfg.max_answer_length}: must be at least 1 (tokens)")
    if cfg.dropout is not None and not 0 <= cfg.dropout < 1:
        raise UsageError(f"--dropout {cfg.dropout}: must be in [0, 1)")
    if cfg.train.save_steps and (not cfg.train.eval_steps or cfg.train.save_steps % cfg.train.eval_steps):
        raise UsageError("--save-steps needs --eval-steps and must be a multiple of it (the best checkpoint is kept)")
    qa.check_windows(d.max_seq_length, d.doc_stride, d.max_question_length)


def _open_model(cfg: FinetuneQAConfig):
    mdir = check_model_dir(cfg.model, "--model", cfg.allow_pickle)
    tok = load_tokenizer(mdir, "--model")
    mconfig = load_model_config(mdir)
    check_compatible(mconfig, tok, cfg.data.max_seq_length, "--model")
    if tok.padding_side != "right":
        raise UsageError(f"--model {mdir}: the tokenizer pads on the left; bertkit's QA windows need right padding")
    return mdir, tok, mconfig


def _read_data(cfg: FinetuneQAConfig) -> tuple[qa.QAData, qa.QAData]:
    d = cfg.data
    cols = dict(question_column=d.question_column, context_column=d.context_column, answer_column=d.answer_column)
    train = qa.read_qa(d.train, "--train", **cols)
    if d.validation:
        val = qa.read_qa(d.validation, "--validation", **cols)
    else:
        if len(train) < 10:
            raise UsageError(f"--train {d.train}: too few questions to hold out a validation split; pass --validation FILE")
        rng = np.random.default_rng(cfg.train.seed)
        perm = rng.permutation(len(train))
        n_val = max(1, len(train) // 10)
        train, val = train.select(sorted(perm[n_val:])), train.select(sorted(perm[:n_val]))
        log.info(f"No --validation: holding out {len(val):,} training questions for evaluation")
    return train, val


def _load_model(mdir, mconfig, dropout: float | None):
    from transformers import AutoModelForQuestionAnswering

    try:
        return AutoModelForQuestionAnswering.from_pretrained(
            str(mdir), local_files_only=True, trust_remote_code=False, **dropout_overrides(mconfig, dropout))
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"--model {mdir}: cannot load for question answering ({str(e).splitlines()[0]})") from None


def _null_threshold(cfg: FinetuneQAConfig, train: qa.QAData, val: qa.QAData) -> float | None:
    """None (never answer empty) for SQuAD v1-style data; a threshold when any question is unanswerable."""
    if cfg.null_threshold is not None:
        return cfg.null_threshold
    if train.has_no_answer or val.has_no_answer or cfg.tune_null_threshold:
        return 0.0
    return None


def _trainer(cfg, model, tok, out, train_ds, ev: QAEvalSet):
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback

    train = cfg.train
    metric = cfg.metric.removeprefix("eval_")
    args = training_arguments(
        train, out, eval_strategy="steps" if train.eval_steps else "epoch",
        load_best_model_at_end=True, metric_for_best_model=metric, greater_is_better=True,
        train_sampling_strategy="group_by_length", include_num_input_tokens_seen="no")
    progress, stopper = make_callbacks(out, "examples", train.time_budget, train.warmup_ratio)
    callbacks = [progress, stopper, EvaluateAtStop(stopper)]  # after the stopper: it sees its decision
    if train.patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=train.patience))
    trainer = QATrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=ev.dataset,
                        data_collator=DataCollatorWithPadding(tok, pad_to_multiple_of=8), processing_class=tok,
                        callbacks=callbacks, qa_eval=ev)
    remove_default_printers(trainer)
    return trainer, progress, stopper


def _save(cfg, trainer, tok, out, metrics, progress, train_data, val_data, ev: QAEvalSet) -> None:
    d = cfg.data
    c = trainer.model.config
    # predict/evaluate apply the model as it was fine-tuned and scored
    c.bertkit_max_seq_length = d.max_seq_length
    c.bertkit_doc_stride = d.doc_stride
    c.bertkit_max_question_length = d.max_question_length
    c.bertkit_max_answer_length = cfg.max_answer_length
    c.bertkit_n_best = cfg.n_best
    c.bertkit_null_threshold = ev.null_threshold
    c.bertkit_qa_language = ev.language
    save_run(trainer, tok, out, "finetune-qa", cfg, metrics, progress.history, {
        "pipeline_tag": "question-answering",
        "purpose": "an extractive question-answering model: use it with `pipeline(\"question-answering\")` or "
                   "`bertkit predict --model DIR`",
        "data": f"train: `{d.train}` ({len(train_data):,} questions); validation: "
                f"`{d.validation or 'held out from train'}` ({len(val_data):,}); metric convention "
                f"`{ev.language}` ({qa.metric_name(ev.language)}).",
    })


def run(cfg: FinetuneQAConfig) -> dict:
    _check(cfg)
    d = cfg.data
    mdir, tok, mconfig = _open_model(cfg)
    qa.check_windows(d.max_seq_length, d.doc_stride, d.max_question_length,
                     getattr(mconfig, "max_position_embeddings", None))
    out, resume_from = prepare_output(cfg.output, cfg.overwrite, cfg.train.resume)
    if is_main_process():
        save_config(cfg, out, "finetune-qa")

    train_data, val_data = _read_data(cfg)
    language = cfg.qa_language if cfg.qa_language != "auto" else qa.detect_language(val_data.contexts)
    with main_process_first():
        train_ds = qa.encode_train(train_data, tok, d.max_seq_length, d.doc_stride, d.max_question_length)
    ev = QAEvalSet.build(val_data, tok, d, language=language, n_best=cfg.n_best,
                         max_answer_length=cfg.max_answer_length,
                         null_threshold=_null_threshold(cfg, train_data, val_data), tune=False)

    # seeded before loading: the new qa_outputs head is initialised by from_pretrained, before the Trainer
    # seeds anything (two benchmark runs with the same --seed scored F1 4.0 and 13.5 after 16 steps)
    set_seed(cfg.train.seed)
    model = _load_model(mdir, mconfig, cfg.dropout)
    n_params = count_parameters(model)
    trainer, progress, stopper = _trainer(cfg, model, tok, out, train_ds, ev)
    log.info(f"Fine-tuning {mdir} ({n_params / 1e6:.1f}M parameters) for question answering: {len(train_data):,} "
             f"train questions ({len(train_ds):,} windows), {len(val_data):,} validation ({len(ev.windows):,} "
             f"windows); metric convention {language}")
    result, train_time = train_with_signals(trainer, stopper, out, resume_from)

    # the final score (of the best checkpoint when one was kept), tuning the null threshold if asked
    final = trainer.evaluate(tune=cfg.tune_null_threshold)
    if cfg.tune_null_threshold:
        log.info(f"Tuned null threshold: {ev.null_threshold} (validation F1 {final['eval_f1']:.2f})")
    ev_s = eval_seconds(progress.history)
    metrics = {k: v for k, v in final.items() if not k.endswith(("_runtime", "_per_second"))}
    metrics.update({
        "train_loss": result.training_loss,
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0.0, 4),
        "train_examples": len(train_data),
        "train_windows": len(train_ds),
        "eval_examples": len(val_data),
        "eval_windows": len(ev.windows),
        "train_seconds": round(train_time, 2),
        "eval_seconds": round(ev_s, 2),
        # training windows per second, evaluations during training left out
        "examples_per_second": round(trainer.state.global_step * trainer.args.train_batch_size
                                     * trainer.args.gradient_accumulation_steps * trainer.args.world_size
                                     / max(train_time - ev_s, 1e-9), 2),
        "best_metric": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "metric_for_best_model": cfg.metric.removeprefix("eval_"),
        "qa_language": language,
        "null_threshold": ev.null_threshold,
        "parameters": n_params,
        "skipped_answers": {"train": train_data.bad_answers, "validation": val_data.bad_answers},
    })
    _save(cfg, trainer, tok, out, metrics, progress, train_data, val_data, ev)
    print_summary("finetune-qa", [
        ("model", f"{mdir} ({n_params / 1e6:.2f}M parameters)"),
        ("data", f"{len(train_data):,} train questions ({len(train_ds):,} windows), {len(val_data):,} validation"),
        ("steps", f"{metrics['steps']:,} ({metrics['epochs']} epochs)"),
        ("time", f"{train_time:.1f}s ({metrics['examples_per_second']:,.1f} windows/s)"),
        ("validation EM", f"{metrics['eval_exact_match']:.2f}"),
        ("validation F1", f"{metrics['eval_f1']:.2f}" + f" ({qa.metric_name(language)})"),
        *([("null threshold", f"{ev.null_threshold:g}")] if ev.null_threshold is not None else []),
        ("model dir", str(out)),
    ])
    return metrics
