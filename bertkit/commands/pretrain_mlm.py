"""bertkit pretrain-mlm: masked-language-model pretraining from a preset or a local checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

from ..config import parse_duration, save_config
from ..errors import DataError, UsageError
from ..evaluation import MLMEvalAccumulator, perplexity
from ..log import get_logger
from ..masking import MLMCollator
from ..modeling import (check_compatible, check_model_dir, count_parameters, load_mlm_model, load_model_config,
                        new_mlm_model, preset_config)
from ..schemas import PretrainConfig
from ..summary import print_summary
from ..tokenization import DATASET_DIR, is_tokenized_dir, load_tokenizer, read_manifest, tokenized_cache
from ..training import (check_numbers, eval_seconds, is_main_process, make_callbacks, prepare_output,
                        remove_default_printers, save_run, train_with_signals, training_arguments, world_size)

log = get_logger()


def _mlm_trainer_class():
    from transformers import Trainer, TrainerCallback

    class MLMTrainer(Trainer):
        """Evaluation masks a fixed 15% with a reseeded generator, so eval losses compare across runs;
        training counts padded slots so the log can report the padding share."""

        pad_slots = 0
        real_tokens = 0

        def evaluate(self, *args, **kwargs):
            with self.data_collator.evaluation():
                return super().evaluate(*args, **kwargs)

        def compute_loss(self, model, inputs, *args, **kwargs):
            if model.training and "attention_mask" in inputs:
                mask = inputs["attention_mask"]
                self.pad_slots += mask.numel()
                self.real_tokens += int(mask.sum())
            return super().compute_loss(model, inputs, *args, **kwargs)

    class PaddingShare(TrainerCallback):
        """Adds ``padding_share`` (padded slots / all slots since the last log) to training logs;
        it runs before the Progress callback, which prints and records it."""

        def __init__(self):
            self.trainer = None

        def on_log(self, args, state, control, logs=None, **kw):
            t = self.trainer
            if t is not None and logs is not None and "loss" in logs and t.pad_slots:
                logs["padding_share"] = round(1.0 - t.real_tokens / t.pad_slots, 4)
                t.pad_slots = t.real_tokens = 0

    return MLMTrainer, PaddingShare


def load_data(cfg: PretrainConfig, out: Path):
    """Return (train_ds, eval_ds, tokenizer, manifest)."""
    import datasets

    inputs = cfg.data.inputs
    if not inputs:
        raise UsageError("--data is required: a `bertkit tokenize` output dir or raw text files")
    if len(inputs) == 1 and is_tokenized_dir(inputs[0]):
        src = Path(inputs[0])
        manifest = read_manifest(src)
        if manifest.get("task") != "mlm":
            raise UsageError(f"--data {src}: tokenized for --task {manifest.get('task')}; pretrain-mlm needs --task mlm")
        if cfg.tokenizer.path or cfg.tokenizer.train:
            log.warning(f"--data {src} is already tokenized: its own tokenizer is used; --tokenizer/--train-tokenizer ignored")
    else:
        tok_cfg = cfg.tokenizer
        if not tok_cfg.path and not tok_cfg.train:
            if cfg.model.path:
                tok_cfg.path = cfg.model.path  # continue pretraining with the checkpoint's own tokenizer
            else:
                raise UsageError("--data holds raw files: pass --tokenizer DIR or --train-tokenizer "
                                 "(or tokenize first with `bertkit tokenize`)")
        src = tokenized_cache(cfg.data, tok_cfg, out / "tokenized")
        manifest = read_manifest(src)
    tok = load_tokenizer(src, "--data")
    ds = datasets.load_from_disk(str(src / DATASET_DIR))
    if len(ds) == 0:
        raise DataError(f"--data {src}: the tokenized dataset is empty")
    longest = manifest.get("parameters", {}).get("max_seq_length")
    if not 0.0 <= cfg.data.eval_fraction < 1.0:
        raise UsageError(f"--eval-fraction {cfg.data.eval_fraction}: must be in [0, 1)")
    n_eval = int(round(len(ds) * cfg.data.eval_fraction))
    if cfg.data.eval_fraction > 0 and len(ds) >= 4:
        n_eval = max(1, n_eval)
    if n_eval and n_eval < len(ds):
        split = ds.train_test_split(test_size=n_eval, seed=cfg.train.seed, shuffle=True)
        train_ds, eval_ds = split["train"], split["test"]
    else:
        train_ds, eval_ds = ds, None
    return train_ds, eval_ds, tok, manifest, longest


def run(cfg: PretrainConfig) -> dict:
    check_numbers(cfg.train)
    out, resume_from = prepare_output(cfg.output, cfg.overwrite, cfg.train.resume)
    if is_main_process():
        save_config(cfg, out, "pretrain-mlm")
    train_ds, eval_ds, tok, manifest, block = load_data(cfg, out)

    if cfg.model.path:
        mdir = check_model_dir(cfg.model.path, "--model", cfg.model.allow_pickle)
        mconfig = load_model_config(mdir)
        check_compatible(mconfig, tok, block, "--model")
        model = load_mlm_model(mdir, sparse=cfg.sparse_head)
        origin = f"continued from {mdir}"
    else:
        mconfig = preset_config(cfg.model, vocab_size=len(tok), pad_token_id=tok.pad_token_id)
        check_compatible(mconfig, tok, block)
        model = new_mlm_model(mconfig, sparse=cfg.sparse_head)
        origin = f"new '{cfg.model.preset}' model"
    n_params = count_parameters(model)

    collator = MLMCollator(tok, cfg.mlm.probability, cfg.mlm.mask_replace_prob, cfg.mlm.random_replace_prob,
                           cfg.mlm.whole_word_mask)
    train = cfg.train
    mean_block = float(manifest["counts"].get("block_tokens", len(train_ds) * (block or 128))) / max(
        manifest["counts"].get("blocks", len(train_ds)), 1)
    tokens_per_step = train.batch_size * train.grad_accum * world_size() * mean_block
    max_steps = train.max_steps
    if train.time_budget:
        parse_duration(train.time_budget)  # validate early
    if train.max_tokens:
        if train.max_tokens < 1:
            raise UsageError(f"--max-tokens {train.max_tokens}: must be positive")
        max_steps = max(1, math.ceil(train.max_tokens / tokens_per_step))
    total_steps = max_steps or max(1, math.ceil(len(train_ds) / (train.batch_size * train.grad_accum)) * math.ceil(train.epochs))
    args = training_arguments(
        train, out, eval_strategy="steps" if eval_ds is not None else "no", max_steps=max_steps,
        eval_steps=train.eval_steps or max(1, total_steps // 4),
        batch_eval_metrics=True, prediction_loss_only=False, include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False)
    progress, stopper = make_callbacks(out, "tokens", time_budget=train.time_budget, warmup_ratio=train.warmup_ratio)
    trainer_cls, padding_cb = _mlm_trainer_class()
    padding = padding_cb()
    trainer = trainer_cls(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, data_collator=collator,
        processing_class=tok, compute_metrics=MLMEvalAccumulator() if eval_ds is not None else None,
        callbacks=[padding, progress, stopper])
    padding.trainer = trainer
    remove_default_printers(trainer)

    log.info(f"Pretraining a {origin}: {n_params / 1e6:.1f}M parameters, {len(train_ds):,} training blocks"
             + (f", {len(eval_ds):,} eval blocks" if eval_ds is not None else "")
             + f", mlm probability {cfg.mlm.probability}")
    result, train_time = train_with_signals(trainer, stopper, out, resume_from)

    metrics: dict = {
        "train_loss": result.training_loss,
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0.0, 4),
        "train_tokens": int(trainer.state.num_input_tokens_seen or 0),
        "train_seconds": round(train_time, 2),
        "parameters": n_params,
        "train_blocks": len(train_ds),
        "stopped_by_time_budget": stopper.budget_hit,
    }
    metrics["eval_seconds"] = round(eval_seconds(progress.history), 2)
    # tokens/s of training alone (evaluations during training left out)
    metrics["tokens_per_second"] = round(metrics["train_tokens"] / max(train_time - metrics["eval_seconds"], 1e-9), 1)
    if eval_ds is not None:
        last = [r for r in progress.history if "eval_loss" in r and r["step"] == trainer.state.global_step]
        ev = last[-1] if last else trainer.evaluate()
        metrics["eval_loss"] = ev.get("eval_loss")
        metrics["perplexity"] = perplexity(ev.get("eval_loss"))
        metrics["masked_accuracy"] = ev.get("eval_masked_accuracy")
        metrics["eval_blocks"] = len(eval_ds)
    metrics["packing_efficiency"] = manifest["counts"].get("packing_efficiency")

    save_run(trainer, tok, out, "pretrain-mlm", cfg, metrics, progress.history)
    print_summary("pretrain-mlm", [
        ("model", f"{origin}, {n_params / 1e6:.2f}M parameters"),
        ("data", f"{len(train_ds):,} train blocks" + (f", {len(eval_ds):,} eval" if eval_ds is not None else "")),
        ("steps", f"{metrics['steps']:,}"),
        ("tokens", f"{metrics['train_tokens']:,}"),
        ("time", f"{train_time:.1f}s ({metrics['tokens_per_second']:,.0f} tokens/s)"),
        ("eval loss", f"{metrics['eval_loss']:.4f}" if metrics.get("eval_loss") is not None else ""),
        ("perplexity", f"{metrics['perplexity']:.2f}" if metrics.get("perplexity") is not None else ""),
        ("masked accuracy", f"{metrics['masked_accuracy']:.4f}" if metrics.get("masked_accuracy") is not None else ""),
        ("model dir", str(out)),
    ])
    return metrics
