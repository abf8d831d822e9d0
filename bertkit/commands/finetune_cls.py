"""bertkit finetune-cls: sequence classification (single-label, multi-label, regression, pairs).

``run`` is the list of stages; each stage is a function a benchmark or another command can call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import load_inputs, split_columns
from ..errors import DataError
from ..labels import LabelSpace, class_weights
from ..loading import load_model
from ..log import get_logger
from ..metrics import ClassificationScorer, best_threshold, choose_metric, classification_metrics
from ..modeling import (
    Checkpoint,
    cls_only_last_layer,
    count_parameters,
    dropout_overrides,
    init_head_at_prior,
    new_parameters,
    open_checkpoint_for,
    weighted_loss,
)
from ..sampling import token_lengths
from ..schemas import WINDOW_MAX_LR, FinetuneConfig
from ..summary import print_summary
from ..tokenization import encode_for_classification
from ..trainers import ClsTrainer
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


def run(cfg: FinetuneConfig, callbacks: list | tuple = ()) -> dict:
    """Fine-tune; ``callbacks`` are extra Trainer callbacks (a sweep's pruning, a benchmark's timer)."""
    cfg.validate()
    base = open_checkpoint_for(cfg.model, cfg.allow_pickle, cfg.data.max_seq_length)
    with start_run(cfg, "finetune-cls") as (out, resume_from):
        data = load_splits(cfg, base.tokenizer)
        model, head = load_classifier(cfg, base, data)
        trainer = build_trainer(cfg, out, model, base.tokenizer, data, head, callbacks)
    result, train_time = train_with_signals(trainer, out, resume_from)
    metrics = final_metrics(cfg, trainer, data, result, train_time)
    stamp_inference_settings(trainer.model.config, cfg, data.space)
    save_run(trainer, base.tokenizer, out, "finetune-cls", cfg, metrics, model_card_extra(cfg, data))
    print_summary("finetune-cls", summary_rows(base, data, metrics, out))
    return metrics


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------

@dataclass
class ClsData:
    """Labelled splits: raw rows (for counts), the label space, and the encoded datasets (validation and
    test sorted by length and evaluated in that order)."""

    space: LabelSpace
    raw: dict
    train: Any
    validation: Any
    test: Any
    windowed: bool
    weights: list[float] | None


def read_split(path: str, flag: str, cfg: FinetuneConfig):
    d = cfg.data
    cols = {"--text-column": d.text_column, "--text-pair-column": d.text_pair_column, "--label-column": d.label_column}
    ds, _ = load_inputs([path], flag, cols, text_mode="lines")
    return ds


def load_splits(cfg: FinetuneConfig, tok, space: LabelSpace | None = None) -> ClsData:
    """Read, label and encode the splits (a tenth of train held out when there is no --validation);
    ``space``: the labels to encode with (distill: the teacher's), by default the training labels'."""
    d = cfg.data
    train = read_split(d.train, "--train", cfg)
    if d.validation:
        val = read_split(d.validation, "--validation", cfg)
    else:
        if len(train) < 10:
            raise DataError(f"--train {d.train}: too few rows to hold out a validation split; pass --validation FILE")
        split = train.train_test_split(test_size=0.1, seed=cfg.train.seed)
        train, val = split["train"], split["test"]
        log.info(f"No --validation: holding out {len(val):,} training rows for evaluation")
    test = read_split(d.test, "--test", cfg) if d.test else None

    named = space is not None  # names from the teacher or a --labels file: labels without examples are expected
    if space is None:
        space = LabelSpace.from_values(train[d.label_column], cfg.problem, cfg.labels, column=d.label_column)
        space.threshold = cfg.threshold
        named = bool(cfg.labels)
    raw = {"train": space.attach(train, d.label_column, d.train),
           "validation": space.attach(val, d.label_column, d.validation or d.train),
           "test": space.attach(test, d.label_column, d.test) if test is not None else None}
    if space.problem == "single" and not named:
        present = set(raw["train"]["labels"])
        absent = [space.names[i] for i in range(space.num_labels) if i not in present]
        if absent:
            log.warning(f"labels without training examples: {', '.join(absent)}")

    def encode(ds):
        return encode_for_classification(ds, tok, split_columns(d.text_column), d.text_pair_column, d.max_seq_length,
                                         d.long_text, d.stride) if ds is not None else None

    train_ds = encode(raw["train"])
    val_ds, test_ds = by_length(encode(raw["validation"])), by_length(encode(raw["test"]))
    truncated = sum(1 for x in train_ds["input_ids"] if len(x) >= d.max_seq_length)
    if truncated and d.long_text == "truncate":
        log.info(f"{truncated:,} training examples reach --max-seq-length {d.max_seq_length} and are truncated "
                 "(see --long-text head-tail|sliding-window)")
    weights = class_weights(cfg.class_weights, space, train_ds["labels"])
    return ClsData(space, raw, train_ds, val_ds, test_ds, d.long_text == "sliding-window", weights)


def by_length(ds):
    """Evaluation rows sorted by length: batches pad little, and the order is known (windows of one
    text can be matched to it through ``example_id``)."""
    if ds is None:
        return None
    return ds.select(np.argsort(token_lengths(ds), kind="stable").tolist())


def load_classifier(cfg: FinetuneConfig, base: Checkpoint, data: ClsData):
    """The checkpoint with a classification head for these labels; a new head starts at the labels'
    prior (unless --no-prior-init).  Returns (model, names of the new head's parameters)."""
    from transformers import AutoModelForSequenceClassification, set_seed

    set_seed(cfg.train.seed)  # the new head's initial weights (two runs of one seed differed by F1 4.0 vs 13.5)
    model, loading = load_model(AutoModelForSequenceClassification, base.path, "sequence classification",
                                ignore_mismatched_sizes=True, output_loading_info=True,
                                **data.space.model_config_kwargs(), **dropout_overrides(base.config, cfg.dropout))
    head = new_parameters(loading)
    if cfg.prior_init and (name := init_head_at_prior(model, head, data.space.prior_bias(data.train["labels"],
                                                                                          data.weights))):
        log.info(f"New head: {name} starts at the training labels' prior")
    cls_only_last_layer(model)  # same logits and gradients, less work: ~1.2x the examples/s on MiniLM
    return model, frozenset(head)


def build_trainer(cfg: FinetuneConfig, out, model, tok, data: ClsData, head: frozenset[str] = frozenset(),
                  callbacks=(), trainer_cls: type[ClsTrainer] = ClsTrainer, title: str | None = None,
                  **trainer_kwargs) -> ClsTrainer:
    """The Trainer (``trainer_cls``, given ``trainer_kwargs``: distill's); ``title`` opens the log line."""
    from transformers import DataCollatorWithPadding

    train = cfg.train
    metric = choose_metric(cfg.metric, data.space.problem)
    args, extra = finetune_arguments(train, out, metric)
    if train.head_lr is not None:
        if not head:
            log.warning("--head-lr: the model already has a classification head for these labels; all parameters "
                        "train at --lr")
        else:
            log.info(f"New head ({', '.join(sorted(head))}) trains at --head-lr {train.head_lr:g}")
    if train.batching == "auto":
        log.info(f"Batch order: {train.batch_order()} (--batching auto: length windows up to --lr "
                 f"{WINDOW_MAX_LR:g}, the Trainer's shuffled order above)")
    space = data.space
    trainer = trainer_cls(
        model=model, args=args, train_dataset=data.train, eval_dataset=data.validation,
        data_collator=DataCollatorWithPadding(tok, pad_to_multiple_of=pad_multiple()), processing_class=tok,
        compute_metrics=ClassificationScorer(space.problem, space.num_labels, space.threshold, data.windowed,
                                             data.validation),
        callbacks=[*default_callbacks(out, "examples", train), *extra, *callbacks],
        compute_loss_func=weighted_loss(space.problem, data.weights), head_params=head, head_lr=train.head_lr,
        batching_window=train.sampler_window(), **trainer_kwargs)
    kind = "regression" if space.problem == "regression" else f"{space.problem}-label classification"
    log.info(f"{title or f'Fine-tuning {cfg.model}'} ({count_parameters(model) / 1e6:.1f}M parameters) for {kind}: "
             f"{len(data.raw['train']):,} train, {len(data.raw['validation']):,} validation examples"
             + (f" ({len(data.train):,} and {len(data.validation):,} windows)" if data.windowed else "")
             + (f", labels {', '.join(space.names[:10])}" if space.names else ""))
    return trainer


def final_metrics(cfg: FinetuneConfig, trainer: ClsTrainer, data: ClsData, result, train_time: float) -> dict:
    """Validation metrics of the best model (multi-label: at the tuned threshold with
    --tune-threshold), test metrics, and the run's figures."""
    space, scorer = data.space, trainer.compute_metrics
    pred = trainer.predict(data.validation, metric_key_prefix="eval")
    metrics = {k: v for k, v in pred.metrics.items() if not k.endswith(("_runtime", "_per_second"))}
    if space.problem == "multi" and cfg.tune_threshold:
        val_logits, val_labels = scorer.text_scores(pred, data.validation)
        space.threshold, f1 = best_threshold(val_logits, val_labels)
        metrics.update({f"eval_{k}": v for k, v in classification_metrics(
            "multi", val_logits, val_labels, space.num_labels, space.threshold).items()})
        log.info(f"Tuned threshold: {space.threshold} (validation micro-F1 {f1:.4f})")
    if data.test is not None:
        scorer.dataset = data.test
        test_logits, test_labels = scorer.text_scores(trainer.predict(data.test, metric_key_prefix="test"))
        metrics.update({f"test_{k}": v for k, v in classification_metrics(
            space.problem, test_logits, test_labels, space.num_labels, space.threshold).items()})
    metrics.update(run_metrics(trainer, result, train_time, "examples", examples_seen(trainer)))
    metrics.update({
        "train_examples": len(data.raw["train"]),
        "eval_examples": len(data.raw["validation"]),
        **({"train_windows": len(data.train), "eval_windows": len(data.validation)} if data.windowed else {}),
        "best_metric": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "metric_for_best_model": trainer.args.metric_for_best_model,
        "problem": space.problem,
        "labels": space.names,
        "parameters": count_parameters(trainer.model),
    })
    if space.problem == "multi":
        metrics["threshold"] = space.threshold
    return metrics


def stamp_inference_settings(config, cfg: FinetuneConfig, space: LabelSpace) -> None:
    """predict/evaluate apply the model as it was trained: threshold, length, long-text mode, stride."""
    config.bertkit_threshold = space.threshold
    config.bertkit_long_text = cfg.data.long_text
    config.bertkit_max_seq_length = cfg.data.max_seq_length
    if cfg.data.long_text == "sliding-window":
        config.bertkit_stride = cfg.data.stride


def model_card_extra(cfg: FinetuneConfig, data: ClsData) -> dict:
    d = cfg.data
    return {
        "labels": data.space.names,
        "data": f"train: `{d.train}` ({len(data.raw['train']):,} examples); validation: "
                f"`{d.validation or 'held out from train'}` ({len(data.raw['validation']):,}); text column "
                f"`{d.text_column}`" + (f", pair column `{d.text_pair_column}`" if d.text_pair_column else "")
                + f", label column `{d.label_column}`.",
    }


def summary_rows(base: Checkpoint, data: ClsData, metrics: dict, out) -> list[tuple[str, str]]:
    space = data.space
    shown = [(k.replace("eval_", "validation ").replace("test_", "test "), f"{v:.4f}") for k, v in metrics.items()
             if k.startswith(("eval_", "test_")) and isinstance(v, float) and not k.endswith("loss")]
    return [
        ("model", f"{base.path} ({metrics['parameters'] / 1e6:.2f}M parameters)"),
        ("problem", space.problem + (f", {space.num_labels} labels" if space.problem != "regression" else "")),
        ("data", f"{len(data.raw['train']):,} train, {len(data.raw['validation']):,} validation"
                 + (f", {len(data.raw['test']):,} test" if data.raw["test"] is not None else "")),
        ("steps", f"{metrics['steps']:,} ({metrics['epochs']} epochs)"),
        ("time", f"{metrics['train_seconds']:.1f}s ({metrics['examples_per_second']:,.1f} examples/s)"),
        *shown,
        ("model dir", str(out)),
    ]
