"""bertkit finetune-ner: token classification (NER, POS, chunking: any per-word tagging), English and Chinese.

``run`` is the list of stages (the same seams as finetune-cls and finetune-qa); reading, tag schemes,
windows and word-level scoring live in :mod:`bertkit.ner`.  Every gold word is scored: sentences longer
than --max-seq-length are windowed with --stride sub-tokens of overlap, never truncated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import ner
from ..errors import DataError
from ..loading import load_model
from ..log import get_logger
from ..modeling import Checkpoint, count_parameters, dropout_overrides, new_parameters, open_checkpoint_for
from ..schemas import FinetuneNERConfig
from ..summary import print_summary
from ..trainers import TokenClsTrainer
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


def run(cfg: FinetuneNERConfig, callbacks: list | tuple = ()) -> dict:
    """Fine-tune; ``callbacks`` are extra Trainer callbacks (a sweep's pruning, a benchmark's timer)."""
    cfg.validate()
    base = open_checkpoint_for(cfg.model, cfg.allow_pickle, cfg.data.max_seq_length)
    splits = read_splits(cfg)  # bad data fails before the output dir exists
    with start_run(cfg, "finetune-ner") as (out, resume_from):
        data = encode_splits(cfg, base.tokenizer, splits)
        model, head = load_tagger(cfg, base, data)
        trainer = build_trainer(cfg, out, model, base.tokenizer, data, head, callbacks)
    result, train_time = train_with_signals(trainer, out, resume_from)
    metrics = final_metrics(trainer, data, result, train_time)
    stamp_inference_settings(trainer.model.config, cfg, data.scheme)
    save_run(trainer, base.tokenizer, out, "finetune-ner", cfg, metrics, model_card_extra(cfg, data))
    print_summary("finetune-ner", summary_rows(base, data, metrics, out))
    return metrics


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------

@dataclass
class Splits:
    train: ner.Tagged
    validation: ner.Tagged
    test: ner.Tagged | None
    scheme: str
    names: list[str]


@dataclass
class EvalSet:
    """An evaluation split: its sentences, windows (sorted by length, the order the Trainer reads them in),
    the encoded dataset and the scorer of its word-level tags."""

    tagged: ner.Tagged
    windows: ner.WordWindows
    dataset: Any
    scorer: ner.WordScorer


@dataclass
class NERData:
    scheme: str
    names: list[str]
    train: ner.Tagged
    train_windows: Any  # the encoded training windows (a datasets.Dataset)
    validation: EvalSet
    test: EvalSet | None


def read_split(path: str, flag: str, cfg: FinetuneNERConfig) -> ner.Tagged:
    d = cfg.data
    return ner.read_tagged(path, flag, d.words_column, d.tags_column, d.tag_column)


def read_splits(cfg: FinetuneNERConfig) -> Splits:
    """Read the splits, settle the tag scheme and the label set (from train), and check every tag: a tag
    of another scheme, or a validation/test tag train lacks, is a DataError naming its line."""
    d = cfg.data
    train = read_split(d.train, "--train", cfg)
    if d.validation:
        val = read_split(d.validation, "--validation", cfg)
    else:
        if len(train) < 10:
            raise DataError(f"--train {d.train}: too few sentences to hold out a validation split; "
                            "pass --validation FILE")
        perm = np.random.default_rng(cfg.train.seed).permutation(len(train))
        n_val = max(1, len(train) // 10)
        train, val = train.select(sorted(perm[n_val:])), train.select(sorted(perm[:n_val]))
        log.info(f"No --validation: holding out {n_val:,} training sentences for evaluation")
    test = read_split(d.test, "--test", cfg) if d.test else None
    scheme = ner.resolve_scheme(d.tag_scheme, train)
    ner.check_tags(train, scheme, flag="--train")
    names = ner.label_names(train.tags)
    ner.check_tags(val, scheme, names, "--validation" if d.validation else "--train")
    if test is not None:
        ner.check_tags(test, scheme, names, "--test")
    return Splits(train, val, test, scheme, names)


def windows_dataset(windows: ner.WordWindows, labels: list[list[int]], tok):
    import datasets

    data = {"input_ids": windows.input_ids, "attention_mask": [[1] * len(x) for x in windows.input_ids],
            "labels": labels}
    if "token_type_ids" in tok.model_input_names:
        data["token_type_ids"] = windows.token_type_ids()
    return datasets.Dataset.from_dict(data)


def eval_set(tagged: ner.Tagged, tok, cfg: FinetuneNERConfig, label2id: dict[str, int], names: list[str]) -> EvalSet:
    d = cfg.data
    windows = ner.sentence_windows(tok, tagged.words, d.max_seq_length, d.stride)
    windows = windows.select(np.argsort([len(x) for x in windows.input_ids], kind="stable").tolist())
    ids = [[label2id[t] for t in tags] for tags in tagged.tags]
    ds = windows_dataset(windows, windows.labels(ids), tok)
    return EvalSet(tagged, windows, ds, ner.WordScorer(windows, tagged.tags, names))


def encode_splits(cfg: FinetuneNERConfig, tok, splits: Splits) -> NERData:
    """Training windows (labels at first sub-tokens, or at every one with --label-all-subtokens) and the
    evaluation sets."""
    d = cfg.data
    names = splits.names
    label2id = {n: i for i, n in enumerate(names)}
    train_windows = ner.sentence_windows(tok, splits.train.words, d.max_seq_length, d.stride)
    ids = [[label2id[t] for t in tags] for tags in splits.train.tags]
    # a continuation tag train never has (I-X of a type only ever one word long) keeps the word's own label
    cont = [label2id.get(ner.continuation(n, splits.scheme), i) for i, n in enumerate(names)] \
        if d.label_all_subtokens else None
    train_ds = windows_dataset(train_windows, train_windows.labels(ids, cont), tok)
    long = len(train_windows) - len(splits.train)
    if long:
        log.info(f"{long:,} extra training windows for sentences longer than --max-seq-length {d.max_seq_length} "
                 f"(--stride {d.stride})")
    val = eval_set(splits.validation, tok, cfg, label2id, names)
    test = eval_set(splits.test, tok, cfg, label2id, names) if splits.test is not None else None
    return NERData(splits.scheme, names, splits.train, train_ds, val, test)


def load_tagger(cfg: FinetuneNERConfig, base: Checkpoint, data: NERData):
    """The checkpoint with a token-classification head for these labels (id2label/label2id in its config,
    so ``pipeline("token-classification")`` names the tags); returns (model, the new head's names)."""
    from transformers import AutoModelForTokenClassification, set_seed

    set_seed(cfg.train.seed)  # the new head's initial weights
    names = data.names
    model, loading = load_model(AutoModelForTokenClassification, base.path, "token classification",
                                ignore_mismatched_sizes=True, output_loading_info=True, num_labels=len(names),
                                id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                                **dropout_overrides(base.config, cfg.dropout))
    return model, frozenset(new_parameters(loading))


def build_trainer(cfg: FinetuneNERConfig, out, model, tok, data: NERData, head: frozenset[str] = frozenset(),
                  callbacks=(), trainer_cls: type[TokenClsTrainer] = TokenClsTrainer, title: str | None = None,
                  **trainer_kwargs) -> TokenClsTrainer:
    """The Trainer (``trainer_cls``, given ``trainer_kwargs``: distill's); ``title`` opens the log line."""
    from transformers import DataCollatorForTokenClassification

    train = cfg.train
    args, extra = finetune_arguments(train, out, cfg.metric)
    val = data.validation
    trainer = trainer_cls(
        model=model, args=args, train_dataset=data.train_windows, eval_dataset=val.dataset,
        data_collator=DataCollatorForTokenClassification(tok, pad_to_multiple_of=pad_multiple()),
        processing_class=tok, compute_metrics=val.scorer, preprocess_logits_for_metrics=ner.WordScorer.argmax,
        callbacks=[*default_callbacks(out, "examples", train), *extra, *callbacks],
        head_params=head, head_lr=train.head_lr,
        batching_window=train.sampler_window(), **trainer_kwargs)
    log.info(f"{title or f'Fine-tuning {cfg.model}'} ({count_parameters(model) / 1e6:.1f}M parameters) for token "
             "classification "
             f"({data.scheme}, {len(data.names)} labels): {len(data.train):,} train sentences "
             f"({len(data.train_windows):,} windows), {len(val.tagged):,} validation ({len(val.windows):,} windows)")
    return trainer


def final_metrics(trainer: TokenClsTrainer, data: NERData, result, train_time: float) -> dict:
    """Validation metrics of the best model, test metrics, and the run's figures."""
    def scored(ev: EvalSet, prefix: str) -> dict:
        trainer.compute_metrics = ev.scorer
        pred = trainer.predict(ev.dataset, metric_key_prefix=prefix)
        return {k: v for k, v in pred.metrics.items() if not k.endswith(("_runtime", "_per_second"))}

    metrics = scored(data.validation, "eval")
    if data.test is not None:
        metrics.update(scored(data.test, "test"))
    trainer.compute_metrics = data.validation.scorer
    metrics.update(run_metrics(trainer, result, train_time, "examples", examples_seen(trainer)))
    metrics.update({
        "train_examples": len(data.train),
        "train_windows": len(data.train_windows),
        "eval_examples": len(data.validation.tagged),
        "eval_windows": len(data.validation.windows),
        "best_metric": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "metric_for_best_model": trainer.args.metric_for_best_model,
        "tag_scheme": data.scheme,
        "labels": data.names,
        "parameters": count_parameters(trainer.model),
    })
    return metrics


def stamp_inference_settings(config, cfg: FinetuneNERConfig, scheme: str) -> None:
    """predict/evaluate apply the model as it was fine-tuned and scored."""
    d = cfg.data
    config.bertkit_max_seq_length = d.max_seq_length
    config.bertkit_stride = d.stride
    config.bertkit_tag_scheme = scheme
    config.bertkit_label_all_subtokens = d.label_all_subtokens


def model_card_extra(cfg: FinetuneNERConfig, data: NERData) -> dict:
    d = cfg.data
    return {
        "pipeline_tag": "token-classification",
        "purpose": "a token classifier (per-word tags): use it with `pipeline(\"token-classification\")` or "
                   "`bertkit predict --model DIR`",
        "labels": data.names,
        "data": f"train: `{d.train}` ({len(data.train):,} sentences); validation: "
                f"`{d.validation or 'held out from train'}` ({len(data.validation.tagged):,}); tag scheme "
                f"{data.scheme}; entity-level scores by the conlleval rules (seqeval's default mode), every word "
                f"scored (sentences over {d.max_seq_length} tokens windowed with stride {d.stride}).",
    }


def summary_rows(base: Checkpoint, data: NERData, metrics: dict, out) -> list[tuple[str, str]]:
    shown = [(k.replace("eval_", "validation ").replace("test_", "test "), f"{metrics[k]:.4f}")
             for k in ("eval_f1", "eval_precision", "eval_recall", "eval_accuracy", "test_f1") if k in metrics]
    return [
        ("model", f"{base.path} ({metrics['parameters'] / 1e6:.2f}M parameters)"),
        ("labels", f"{len(data.names)} ({data.scheme})"),
        ("data", f"{len(data.train):,} train sentences ({metrics['train_windows']:,} windows), "
                 f"{len(data.validation.tagged):,} validation"
                 + (f", {len(data.test.tagged):,} test" if data.test is not None else "")),
        ("steps", f"{metrics['steps']:,} ({metrics['epochs']} epochs)"),
        ("time", f"{metrics['train_seconds']:.1f}s ({metrics['examples_per_second']:,.1f} windows/s)"),
        *shown,
        ("model dir", str(out)),
    ]
