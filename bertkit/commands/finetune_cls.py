"""bertkit finetune-cls: sequence classification (single-label, multi-label, regression, pairs)."""

from __future__ import annotations


import numpy as np

from ..config import save_config
from ..data import load_inputs, split_columns
from ..errors import DataError, UsageError
from ..evaluation import DEFAULT_METRIC, METRICS_BY_PROBLEM, best_threshold, classification_metrics, per_text
from ..labels import LabelSpace
from ..log import get_logger
from ..modeling import check_compatible, check_model_dir, count_parameters, dropout_overrides, load_model_config
from ..schemas import FinetuneConfig
from ..summary import print_summary
from ..tokenization import encode_for_classification, load_tokenizer
from ..training import (check_numbers, eval_seconds, is_main_process, make_callbacks, prepare_output,
                        remove_default_printers, save_run, train_with_signals, training_arguments)

log = get_logger()


def _read_split(path: str | None, flag: str, cfg: FinetuneConfig, need_labels: bool = True):
    d = cfg.data
    cols = {"--text-column": d.text_column, "--text-pair-column": d.text_pair_column}
    if need_labels:
        cols["--label-column"] = d.label_column
    ds, _ = load_inputs([path], flag, cols, text_mode="lines")
    return ds


def class_weight_tensor(spec: str | None, space: LabelSpace, train_labels) -> "list[float] | None":
    if not spec:
        return None
    if space.problem == "regression":
        raise UsageError("--class-weights applies to classification, not regression")
    n = space.num_labels
    if spec == "auto":
        arr = np.asarray(train_labels)
        counts = arr.sum(0) if space.problem == "multi" else np.bincount(arr.astype(int), minlength=n)
        counts = np.maximum(counts.astype(float), 1.0)
        w = counts.sum() / (n * counts)
        return [float(x) for x in w]
    try:
        w = [float(x) for x in spec.split(",")]
    except ValueError:
        raise UsageError(f"--class-weights {spec!r}: use 'auto' or {n} comma-separated numbers") from None
    if len(w) != n or any(x < 0 for x in w):
        raise UsageError(f"--class-weights {spec!r}: need {n} non-negative weights, one per label id")
    return w


def make_loss(problem: str, weights: list[float] | None):
    """Weighted loss for the Trainer's ``compute_loss_func`` (no Trainer subclass needed)."""
    if weights is None:
        return None
    import torch

    w = torch.tensor(weights)

    def loss_fn(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"]
        if problem == "multi":
            return torch.nn.functional.binary_cross_entropy_with_logits(
                logits.float(), labels.float(), pos_weight=w.to(logits.device))
        return torch.nn.functional.cross_entropy(logits.float(), labels.long(), weight=w.to(logits.device))

    return loss_fn


def new_parameters(loading: dict) -> set[str]:
    """Names of the parameters ``from_pretrained`` initialised afresh: missing from the checkpoint, or
    held there with another shape (another number of labels)."""
    return set(loading.get("missing_keys") or []) | {k[0] if isinstance(k, (tuple, list)) else k
                                                     for k in loading.get("mismatched_keys") or []}


def _init_head_at_prior(model, new: set[str], bias: list[float]) -> None:
    """Set the output bias of a newly initialised head (``new``: its parameter names) to ``bias``;
    a head loaded from the checkpoint is left as trained."""
    import torch

    # the head's output layer comes last and has one bias entry per label (BERT: classifier.bias,
    # RoBERTa-style heads: classifier.out_proj.bias)
    found = [(n, p) for n, p in model.named_parameters()
             if n in new and n.endswith("bias") and tuple(p.shape) == (len(bias),)]
    if not found:
        return
    name, param = found[-1]
    with torch.no_grad():
        param.copy_(torch.tensor(bias, dtype=param.dtype))
    log.info(f"New head: {name} starts at the training labels' prior")


def _by_length(ds):
    """Evaluation rows sorted by length: batches pad little, and the order is known (windows of one
    text can be matched to it through ``example_id``)."""
    lengths = np.fromiter((len(x) for x in ds["input_ids"]), dtype=np.int64, count=len(ds))
    return ds.select(np.argsort(lengths, kind="stable").tolist())


def _trainer_class(head: set[str] = frozenset(), head_lr: float | None = None):
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class ClsTrainer(Trainer):
        def create_optimizer(self, model=None):
            # --head-lr: the Trainer's own optimizer (same class, options and weight-decay groups), with
            # the new head's parameters moved to groups of their own at their own peak lr; the scheduler,
            # created afterwards, scales every group by the same warmup/decay factor.
            fresh = self.optimizer is None
            opt = super().create_optimizer(model)
            if fresh and head and head_lr is not None:
                ids = {id(p) for n, p in (model or self.model).named_parameters() if n in head}
                moved = []
                for group in opt.param_groups:
                    mine = [p for p in group["params"] if id(p) in ids]
                    if mine:
                        group["params"] = [p for p in group["params"] if id(p) not in ids]
                        moved.append({**{k: v for k, v in group.items() if k != "params"}, "params": mine,
                                      "lr": head_lr})
                opt.param_groups[:] = [g for g in opt.param_groups if g["params"]]
                for group in moved:
                    opt.add_param_group(group)
            return opt

        def _get_eval_sampler(self, eval_dataset):
            # transformers applies train_sampling_strategy="group_by_length" to evaluation as well, with a
            # shuffle: predictions would come back in an order unknown here, and sliding windows could not be
            # matched to their texts.  Evaluation sets are sorted by length beforehand instead (even less
            # padding) and read in order; with several processes accelerate shards them and gathers in order.
            if eval_dataset is None or self.args.world_size > 1:
                return None
            return SequentialSampler(eval_dataset)

    return ClsTrainer


def run(cfg: FinetuneConfig, callbacks: list | None = None) -> dict:
    """``callbacks``: extra Trainer callbacks, appended to bertkit's (``bertkit sweep`` adds its pruning one)."""
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, EarlyStoppingCallback

    d = cfg.data
    if not d.train:
        raise UsageError("--train is required: the labelled training file")
    check_numbers(cfg.train)
    if cfg.train.head_lr is not None and not cfg.train.head_lr > 0:
        raise UsageError(f"--head-lr {cfg.train.head_lr}: must be positive")
    if cfg.dropout is not None and not 0 <= cfg.dropout < 1:
        raise UsageError(f"--dropout {cfg.dropout}: must be in [0, 1)")
    mdir = check_model_dir(cfg.model, "--model", cfg.allow_pickle)
    out, resume_from = prepare_output(cfg.output, cfg.overwrite, cfg.train.resume)
    tok = load_tokenizer(mdir, "--model")
    mconfig = load_model_config(mdir)
    check_compatible(mconfig, tok, d.max_seq_length, "--model")
    dropout = dropout_overrides(mconfig, cfg.dropout)
    if is_main_process():
        save_config(cfg, out, "finetune-cls")

    train_raw = _read_split(d.train, "--train", cfg)
    if d.validation:
        val_raw = _read_split(d.validation, "--validation", cfg)
    else:
        if len(train_raw) < 10:
            raise DataError(f"--train {d.train}: too few rows to hold out a validation split; pass --validation FILE")
        split = train_raw.train_test_split(test_size=0.1, seed=cfg.train.seed)
        train_raw, val_raw = split["train"], split["test"]
        log.info(f"No --validation: holding out {len(val_raw):,} training rows for evaluation")
    test_raw = _read_split(d.test, "--test", cfg) if d.test else None

    space = LabelSpace.from_values(train_raw[d.label_column], cfg.problem, cfg.labels, column=d.label_column)
    space.threshold = cfg.threshold
    train_raw = space.attach(train_raw, d.label_column, d.train)
    val_raw = space.attach(val_raw, d.label_column, d.validation or d.train)
    if test_raw is not None:
        test_raw = space.attach(test_raw, d.label_column, d.test)
    if space.problem == "single":
        present = set(train_raw["labels"])
        absent = [space.names[i] for i in range(space.num_labels) if i not in present]
        if absent and not cfg.labels:
            log.warning(f"labels without training examples: {', '.join(absent)}")

    text_cols = split_columns(d.text_column)
    enc = lambda ds: encode_for_classification(ds, tok, text_cols, d.text_pair_column, d.max_seq_length,  # noqa: E731
                                               d.long_text, d.stride)
    train_ds, val_ds = enc(train_raw), enc(val_raw)
    test_ds = enc(test_raw) if test_raw is not None else None
    truncated = sum(1 for x in train_ds["input_ids"] if len(x) >= d.max_seq_length)
    if truncated and d.long_text == "truncate":
        log.info(f"{truncated:,} training examples reach --max-seq-length {d.max_seq_length} and are truncated "
                 "(see --long-text head-tail|sliding-window)")

    weights = class_weight_tensor(cfg.class_weights, space, train_ds["labels"])
    try:
        model, loading = AutoModelForSequenceClassification.from_pretrained(
            str(mdir), local_files_only=True, trust_remote_code=False, ignore_mismatched_sizes=True,
            output_loading_info=True, **space.model_config_kwargs(), **dropout)
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"--model {mdir}: cannot load for sequence classification ({str(e).splitlines()[0]})") from None
    head = new_parameters(loading)
    if cfg.prior_init:
        _init_head_at_prior(model, head, space.prior_bias(train_ds["labels"], weights))
    n_params = count_parameters(model)

    metric = cfg.metric or DEFAULT_METRIC[space.problem]
    known = METRICS_BY_PROBLEM[space.problem] + ["loss"]
    if metric.removeprefix("eval_") not in known:
        raise UsageError(f"--metric {metric}: not computed for {space.problem} problems; use one of {', '.join(known)}")
    metric = metric.removeprefix("eval_")
    greater = metric not in ("loss", "mse")

    windowed = d.long_text == "sliding-window"
    val_ds = _by_length(val_ds)
    test_ds = _by_length(test_ds) if test_ds is not None else None

    def scores(pred, ds):
        """(logits, labels) of a prediction over ``ds``, one row per text (windows averaged)."""
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        if windowed:
            if len(logits) != len(ds):  # cannot happen with in-order evaluation; never mis-group windows
                raise RuntimeError(f"{len(logits)} predictions for {len(ds)} windows")
            return per_text(logits, pred.label_ids, ds["example_id"])
        return logits, pred.label_ids

    predicting = {"ds": val_ds}  # the set compute_metrics scores (the test set during the final predict)

    def compute_metrics(p):
        logits, labels = scores(p, predicting["ds"])
        return classification_metrics(space.problem, logits, labels, space.num_labels, space.threshold)

    train = cfg.train
    eval_strategy = "steps" if train.eval_steps else "epoch"
    if train.save_steps and (not train.eval_steps or train.save_steps % train.eval_steps):
        raise UsageError("--save-steps needs --eval-steps and must be a multiple of it (the best checkpoint is kept)")
    args = training_arguments(
        train, out, eval_strategy=eval_strategy,
        load_best_model_at_end=True, metric_for_best_model=metric, greater_is_better=greater,
        train_sampling_strategy="group_by_length", include_num_input_tokens_seen="no")
    progress, stopper = make_callbacks(out, "examples")
    callbacks = [progress, stopper, *(callbacks or [])]
    if train.patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=train.patience))
    if train.head_lr is not None:
        if not head:
            log.warning(f"--head-lr: {mdir} already has a classification head for these labels; all parameters "
                        "train at --lr")
        else:
            log.info(f"New head ({', '.join(sorted(head))}) trains at --head-lr {train.head_lr:g}")
    trainer = _trainer_class(head, train.head_lr)(
        model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
        data_collator=DataCollatorWithPadding(tok, pad_to_multiple_of=8), processing_class=tok,
        compute_metrics=compute_metrics, callbacks=callbacks, compute_loss_func=make_loss(space.problem, weights))
    remove_default_printers(trainer)
    kind = "regression" if space.problem == "regression" else f"{space.problem}-label classification"
    log.info(f"Fine-tuning {mdir} ({n_params / 1e6:.1f}M parameters) for {kind}: {len(train_raw):,} train, "
             f"{len(val_raw):,} validation examples"
             + (f" ({len(train_ds):,} and {len(val_ds):,} windows)" if windowed else "")
             + (f", labels {', '.join(space.names[:10])}" if space.names else ""))
    result, train_time = train_with_signals(trainer, stopper, out, resume_from)

    pred = trainer.predict(val_ds, metric_key_prefix="eval")
    val_logits, val_labels = scores(pred, val_ds)
    metrics = {k: v for k, v in pred.metrics.items() if not k.endswith(("_runtime", "_per_second"))}
    if space.problem == "multi" and cfg.tune_threshold:
        t, f1 = best_threshold(val_logits, val_labels)
        space.threshold = t
        metrics.update({f"eval_{k}": v for k, v in classification_metrics(
            "multi", val_logits, val_labels, space.num_labels, t).items()})
        log.info(f"Tuned threshold: {t} (validation micro-F1 {f1:.4f})")
    if test_ds is not None:
        predicting["ds"] = test_ds
        test_logits, test_labels = scores(trainer.predict(test_ds, metric_key_prefix="test"), test_ds)
        metrics.update({f"test_{k}": v for k, v in classification_metrics(
            space.problem, test_logits, test_labels, space.num_labels, space.threshold).items()})
    metrics.update({
        "train_loss": result.training_loss,
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0.0, 4),
        "train_examples": len(train_raw),
        "eval_examples": len(val_raw),
        **({"train_windows": len(train_ds), "eval_windows": len(val_ds)} if windowed else {}),
        "train_seconds": round(train_time, 2),
        "eval_seconds": round(eval_seconds(progress.history), 2),
        # examples/s of training alone (evaluations during training left out)
        "examples_per_second": round(trainer.state.global_step * args.train_batch_size * args.gradient_accumulation_steps
                                     * args.world_size / max(train_time - eval_seconds(progress.history), 1e-9), 2),
        "best_metric": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "metric_for_best_model": metric,
        "problem": space.problem,
        "labels": space.names,
        "parameters": n_params,
    })
    if space.problem == "multi":
        metrics["threshold"] = space.threshold

    trainer.model.config.bertkit_threshold = space.threshold
    trainer.model.config.bertkit_long_text = d.long_text
    trainer.model.config.bertkit_max_seq_length = d.max_seq_length  # predict/evaluate use it by default
    if windowed:
        trainer.model.config.bertkit_stride = d.stride

    save_run(trainer, tok, out, "finetune-cls", cfg, metrics, progress.history, {
        "labels": space.names,
        "data": f"train: `{d.train}` ({len(train_raw):,} examples); validation: `{d.validation or 'held out from train'}` "
                f"({len(val_raw):,}); text column `{d.text_column}`"
                + (f", pair column `{d.text_pair_column}`" if d.text_pair_column else "")
                + f", label column `{d.label_column}`.",
    })
    shown = [(k.replace("eval_", "validation ").replace("test_", "test "), f"{v:.4f}") for k, v in metrics.items()
             if k.startswith(("eval_", "test_")) and isinstance(v, float) and not k.endswith("loss")]
    print_summary("finetune-cls", [
        ("model", f"{mdir} ({n_params / 1e6:.2f}M parameters)"),
        ("problem", f"{space.problem}" + (f", {space.num_labels} labels" if space.problem != "regression" else "")),
        ("data", f"{len(train_raw):,} train, {len(val_raw):,} validation"
                 + (f", {len(test_raw):,} test" if test_raw is not None else "")),
        ("steps", f"{metrics['steps']:,} ({metrics['epochs']} epochs)"),
        ("time", f"{train_time:.1f}s ({metrics['examples_per_second']:,.1f} examples/s)"),
        *shown,
        ("model dir", str(out)),
    ])
    return metrics
