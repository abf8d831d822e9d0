"""bertkit pretrain-mlm: masked-language-model pretraining from a preset or a local checkpoint.

``run`` is the list of stages; each stage is a function a benchmark or another command can call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..distributed import world_size
from ..errors import DataError, UsageError
from ..loading import DATASET_DIR, check_model_dir, load_model_config, load_tokenizer
from ..log import get_logger
from ..masking import MLMCollator
from ..metrics import MLMEvalAccumulator, perplexity
from ..modeling import check_compatible, count_parameters, load_mlm_model, new_mlm_model, preset_config
from ..schemas import PretrainConfig
from ..summary import print_summary
from ..tokenization import is_tokenized_dir, read_manifest, tokenized_cache
from ..trainers import MLMTrainer
from ..training import default_callbacks, run_metrics, save_run, start_run, train_with_signals, training_arguments

log = get_logger()


def run(cfg: PretrainConfig, callbacks: list | tuple = ()) -> dict:
    cfg.validate()
    with start_run(cfg, "pretrain-mlm") as (out, resume_from):
        data = load_data(cfg, out)
        model, origin = load_or_create_model(cfg, data)
        trainer = build_trainer(cfg, out, model, data, callbacks)
    log.info(f"Pretraining a {origin}: {count_parameters(model) / 1e6:.1f}M parameters, {len(data.train):,} training "
             f"blocks" + (f", {len(data.eval):,} eval blocks" if data.eval is not None else "")
             + f", mlm probability {cfg.mlm.probability}")
    result, train_time = train_with_signals(trainer, out, resume_from)
    metrics = final_metrics(trainer, data, result, train_time)
    save_run(trainer, data.tokenizer, out, "pretrain-mlm", cfg, metrics)
    print_summary("pretrain-mlm", summary_rows(origin, data, metrics, out))
    return metrics


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------

@dataclass
class MLMData:
    train: Any
    eval: Any
    tokenizer: Any
    manifest: dict

    @property
    def block(self) -> int | None:
        return self.manifest.get("parameters", {}).get("max_seq_length")

    @property
    def mean_block_tokens(self) -> float:
        counts = self.manifest["counts"]
        return float(counts.get("block_tokens", len(self.train) * (self.block or 128))) / max(
            counts.get("blocks", len(self.train)), 1)


def load_data(cfg: PretrainConfig, out: Path) -> MLMData:
    """A `bertkit tokenize` output, or raw files tokenized once into ``OUTPUT/tokenized`` (cached); a
    seeded share of blocks is held out for evaluation."""
    import datasets

    inputs = cfg.data.inputs
    if len(inputs) == 1 and is_tokenized_dir(inputs[0]):
        src = Path(inputs[0])
        manifest = read_manifest(src)
        if manifest.get("task") != "mlm":
            raise UsageError(f"--data {src}: tokenized for --task {manifest.get('task')}; "
                             "pretrain-mlm needs --task mlm")
        if cfg.tokenizer.path or cfg.tokenizer.train:
            log.warning(f"--data {src} is already tokenized: its own tokenizer is used; "
                        "--tokenizer/--train-tokenizer ignored")
    else:
        tok_cfg = cfg.tokenizer
        if not tok_cfg.path and not tok_cfg.train:
            if not cfg.model.path:
                raise UsageError("--data holds raw files: pass --tokenizer DIR or --train-tokenizer "
                                 "(or tokenize first with `bertkit tokenize`)")
            tok_cfg.path = cfg.model.path  # continue pretraining with the checkpoint's own tokenizer
        src = tokenized_cache(cfg.data, tok_cfg, out / "tokenized")
        manifest = read_manifest(src)
    tok = load_tokenizer(src, "--data")
    ds = datasets.load_from_disk(str(src / DATASET_DIR))
    if len(ds) == 0:
        raise DataError(f"--data {src}: the tokenized dataset is empty")
    n_eval = int(round(len(ds) * cfg.data.eval_fraction))
    if cfg.data.eval_fraction > 0 and len(ds) >= 4:
        n_eval = max(1, n_eval)
    if n_eval and n_eval < len(ds):
        split = ds.train_test_split(test_size=n_eval, seed=cfg.train.seed, shuffle=True)
        return MLMData(split["train"], split["test"], tok, manifest)
    return MLMData(ds, None, tok, manifest)


def load_or_create_model(cfg: PretrainConfig, data: MLMData) -> tuple[Any, str]:
    """A checkpoint to continue (``--model``) or a new model of the preset; returns (model, origin)."""
    if cfg.model.path:
        mdir = check_model_dir(cfg.model.path, "--model", cfg.model.allow_pickle)
        check_compatible(load_model_config(mdir), data.tokenizer, data.block, "--model")
        return load_mlm_model(mdir, sparse=cfg.sparse_head), f"continued from {mdir}"
    mconfig = preset_config(cfg.model, vocab_size=len(data.tokenizer), pad_token_id=data.tokenizer.pad_token_id)
    check_compatible(mconfig, data.tokenizer, data.block)
    from transformers import set_seed

    set_seed(cfg.train.seed)  # a new model's initial weights: the same run for the same --seed
    return new_mlm_model(mconfig, sparse=cfg.sparse_head), f"new '{cfg.model.preset}' model"


def build_trainer(cfg: PretrainConfig, out: Path, model, data: MLMData, callbacks=()) -> MLMTrainer:
    train = cfg.train
    tokens_per_step = train.batch_size * train.grad_accum * world_size() * data.mean_block_tokens
    max_steps = max(1, math.ceil(train.max_tokens / tokens_per_step)) if train.max_tokens else train.max_steps
    total_steps = max_steps or max(1, math.ceil(len(data.train) / (train.batch_size * train.grad_accum))
                                   * math.ceil(train.epochs))
    args = training_arguments(
        train, out, eval_strategy="steps" if data.eval is not None else "no", max_steps=max_steps,
        eval_steps=train.eval_steps or max(1, total_steps // 4),
        batch_eval_metrics=True, prediction_loss_only=False, include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False)
    m = cfg.mlm
    return MLMTrainer(
        model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
        data_collator=MLMCollator(data.tokenizer, m.probability, m.mask_replace_prob, m.random_replace_prob,
                                  m.whole_word_mask, seed=train.seed),
        processing_class=data.tokenizer, compute_metrics=MLMEvalAccumulator() if data.eval is not None else None,
        callbacks=[*default_callbacks(out, "tokens", train), *callbacks])


def final_metrics(trainer: MLMTrainer, data: MLMData, result, train_time: float) -> dict:
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    metrics = run_metrics(trainer, result, train_time, "tokens", tokens)
    metrics.update({"train_tokens": tokens, "parameters": count_parameters(trainer.model),
                    "train_blocks": len(data.train), "stopped_by_time_budget": trainer.stopper.budget_hit})
    if data.eval is not None:
        last = [r for r in trainer.progress.history if "eval_loss" in r and r["step"] == trainer.state.global_step]
        ev = last[-1] if last else trainer.evaluate()
        metrics.update({"eval_loss": ev.get("eval_loss"), "perplexity": perplexity(ev.get("eval_loss")),
                        "masked_accuracy": ev.get("eval_masked_accuracy"), "eval_blocks": len(data.eval)})
    metrics["packing_efficiency"] = data.manifest["counts"].get("packing_efficiency")
    return metrics


def summary_rows(origin: str, data: MLMData, metrics: dict, out: Path) -> list[tuple[str, str]]:
    def fmt(key, spec):
        return format(metrics[key], spec) if metrics.get(key) is not None else ""

    return [
        ("model", f"{origin}, {metrics['parameters'] / 1e6:.2f}M parameters"),
        ("data", f"{len(data.train):,} train blocks" + (f", {len(data.eval):,} eval" if data.eval is not None else "")),
        ("steps", f"{metrics['steps']:,}"),
        ("tokens", f"{metrics['train_tokens']:,}"),
        ("time", f"{metrics['train_seconds']:.1f}s ({metrics['tokens_per_second']:,.0f} tokens/s)"),
        ("eval loss", fmt("eval_loss", ".4f")),
        ("perplexity", fmt("perplexity", ".2f")),
        ("masked accuracy", fmt("masked_accuracy", ".4f")),
        ("model dir", str(out)),
    ]
