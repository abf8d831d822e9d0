"""One configuration schema per command.

Sections shared by several commands (``data``, ``tokenizer``, ``train``) are defined once; a
command that needs other defaults subclasses the section and overrides only those fields.  The
CLI flags and their help texts live here too (see :func:`bertkit.config.opt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from .config import opt, section

PRESETS: dict[str, dict[str, int]] = {
    # name: layers / hidden; heads = hidden // 64 (at least 2), intermediate = 4 * hidden
    "tiny": {"num_layers": 2, "hidden_size": 128},
    "mini": {"num_layers": 4, "hidden_size": 256},
    "small": {"num_layers": 4, "hidden_size": 512},
    "medium": {"num_layers": 8, "hidden_size": 512},
    "base": {"num_layers": 12, "hidden_size": 768},
    "large": {"num_layers": 24, "hidden_size": 1024},
}


def allow_pickle_field():
    return opt(False, "Allow loading pickle weights (pytorch_model.bin), which can run code: only for trusted files.",
               "--allow-pickle")


# ------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------

@dataclass
class TokenizerConfig:
    path: Optional[str] = opt(None, "Local tokenizer or model directory to tokenize with.", "--tokenizer")
    train: bool = opt(False, "Train a new WordPiece tokenizer on the input text.", "--train-tokenizer")
    vocab_size: int = opt(30522, "Vocabulary size of a trained tokenizer.", "--vocab-size")
    lowercase: bool = opt(True, "Lowercase (and strip accents) in a trained tokenizer.", "--lowercase/--no-lowercase")
    min_frequency: int = opt(2, "Minimum pair frequency for a WordPiece merge when training.")


@dataclass
class DataConfig:
    inputs: list[str] = opt(None, "Input files or globs (.txt .csv .tsv .json .jsonl .parquet) or a saved datasets dir.",
                            argument=True, factory=list)
    text_column: str = opt("text", "Column holding the text (plain .txt files: one example per line).", "--text-column")
    text_pair_column: Optional[str] = opt(None, "Column holding the second text of a pair.", "--text-pair-column")
    label_column: Optional[str] = opt(None, "Column holding the label (with --task cls).", "--label-column")
    max_seq_length: int = opt(128, "Tokens per example/block, [CLS] and [SEP] included.", "--max-seq-length")
    packing: Literal["docs", "lines"] = opt(
        "docs", "mlm: 'docs' concatenates documents (joined with [SEP]) into full blocks; 'lines' keeps one line per example.",
        "--packing", choices=("docs", "lines"))
    num_proc: int = opt(1, "Parallel tokenization: tokenizer threads for mlm, worker processes for cls.", "--num-proc")


@dataclass
class PretrainDataConfig(DataConfig):
    inputs: list[str] = opt(None, "A `bertkit tokenize` output dir, or raw files/globs (then --tokenizer or --train-tokenizer).",
                            "--data", factory=list)
    eval_fraction: float = opt(0.02, "Share of blocks held out for evaluation.", "--eval-fraction")


@dataclass
class MaskingConfig:
    probability: float = opt(0.15, "Share of tokens to mask for training (evaluation always uses 0.15).", "--mlm-probability")
    mask_replace_prob: float = opt(0.8, "Of the selected tokens, the share replaced by [MASK].")
    random_replace_prob: float = opt(0.1, "Of the selected tokens, the share replaced by a random token (the rest stay).")
    whole_word_mask: bool = opt(False, "Mask whole words (## continuations with their word; each CJK character is a word).",
                                "--whole-word-mask/--no-whole-word-mask")


@dataclass
class ModelConfig:
    preset: str = opt("tiny", "Size of a new model: tiny, mini, small, medium, base, large.", "--preset",
                      choices=tuple(PRESETS))
    path: Optional[str] = opt(None, "Local checkpoint directory to continue pretraining from.", "--model")
    hidden_size: Optional[int] = opt(None, "Override the preset's hidden size.")
    num_layers: Optional[int] = opt(None, "Override the preset's number of layers.")
    num_heads: Optional[int] = opt(None, "Override the preset's attention heads (default hidden/64).")
    intermediate_size: Optional[int] = opt(None, "Override the preset's feed-forward size (default 4*hidden).")
    max_position_embeddings: int = opt(512, "Positions of a new model.")
    dropout: float = opt(0.1, "Hidden and attention dropout of a new model.")
    allow_pickle: bool = allow_pickle_field()


@dataclass
class TrainConfig:
    epochs: float = opt(1.0, "Training epochs (ignored when --max-steps is set).", "--epochs")
    max_steps: Optional[int] = opt(None, "Optimizer steps to train for (overrides --epochs).", "--max-steps")
    batch_size: int = opt(32, "Examples per device per step.", "--batch-size")
    grad_accum: int = opt(1, "Gradient accumulation steps.", "--grad-accum")
    lr: float = opt(5e-5, "Peak learning rate.", "--lr")
    warmup_ratio: float = opt(0.06, "Share of steps for linear warm-up.", "--warmup-ratio")
    weight_decay: float = opt(0.01, "AdamW weight decay.", "--weight-decay")
    scheduler: str = opt("linear", "Learning-rate schedule (linear, cosine, constant_with_warmup, ...).", "--scheduler")
    seed: int = opt(42, "Random seed.", "--seed")
    precision: Literal["auto", "no", "bf16", "fp16"] = opt(
        "auto", "Mixed precision: auto (bf16/fp16 on a GPU that has it, else fp32), no, bf16, fp16.", "--precision",
        choices=("auto", "no", "bf16", "fp16"))
    logging_steps: int = opt(50, "Log every N steps.", "--logging-steps")
    eval_steps: Optional[int] = opt(None, "Evaluate every N steps (default: once per epoch / at the end).", "--eval-steps")
    save_steps: Optional[int] = opt(None, "Save a checkpoint every N steps (default: with each evaluation).", "--save-steps")
    save_total_limit: int = opt(2, "Checkpoints to keep.", "--save-total-limit")
    resume: str = opt("auto", "auto: continue from the newest checkpoint in --output; no; or a checkpoint dir.", "--resume")
    num_workers: int = opt(0, "DataLoader worker processes.", "--num-workers")
    report_to: str = opt("none", "Where to report metrics besides the output dir: none or tensorboard.", "--report-to")
    compile: bool = opt(False, "torch.compile the model (off by default: slower on CPU, see README Benchmarks; "
                               "worth trying on GPU).", "--compile/--no-compile")


@dataclass
class PretrainTrainConfig(TrainConfig):
    batch_size: int = opt(64, "Blocks per device per step.", "--batch-size")
    lr: float = opt(5e-4, "Peak learning rate.", "--lr")
    max_tokens: Optional[int] = opt(None, "Stop after this many training tokens (the schedule is fitted to it).", "--max-tokens")
    time_budget: Optional[str] = opt(None, "Stop after this wall time, e.g. 30m or 2h (the schedule is fitted to it).",
                                     "--time-budget")


@dataclass
class FinetuneTrainConfig(TrainConfig):
    epochs: float = opt(3.0, "Training epochs (ignored when --max-steps is set).", "--epochs")
    lr: float = opt(5e-5, "Peak learning rate.", "--lr")
    patience: Optional[int] = opt(None, "Stop after N evaluations without improvement of --metric.", "--patience")
    head_lr: Optional[float] = opt(None, "Peak learning rate of the new head (the classifier, and a pooler the "
                                         "checkpoint lacks); default --lr.", "--head-lr")
    # benchmarks/finetune_parity.py (issue #16) measures accuracy and speed of each against a plain Trainer
    batching: Literal["window", "length", "random"] = opt(
        "window", "Training batch order. Measured on 4,000 SST-2 rows, MiniLM, 1 epoch, 2 seeds, against a plain "
        "Trainer (shuffled, dynamic padding; benchmarks/finetune_parity.py, busy 2-core CPU): window: shuffled "
        "examples sorted by length only inside windows of --batching-window batches, then the batches "
        "shuffled (+0.1 points, 1.05x its examples/s). length: transformers' group_by_length, batches of one "
        "length running long to short (-1.3 points, 1.44x). random: the Trainer's shuffled batches (+0.3 "
        "points, 0.78x).", "--batching", choices=("window", "length", "random"))
    batching_window: int = opt(4, "Batches per length-sorted window with --batching window (1: no grouping).",
                               "--batching-window")


@dataclass
class ClsDataConfig:
    train: Optional[str] = opt(None, "Training file (.csv .tsv .json .jsonl .parquet .txt or a datasets dir).", "--train")
    validation: Optional[str] = opt(None, "Validation file, evaluated every epoch.", "--validation")
    test: Optional[str] = opt(None, "Test file, evaluated once with the best model.", "--test")
    text_column: str = opt("text", "Column holding the text (several: comma-separated, joined with a space).",
                           "--text-column")
    text_pair_column: Optional[str] = opt(None, "Column holding the second text of a pair.", "--text-pair-column")
    label_column: str = opt("label", "Column holding the label.", "--label-column")
    max_seq_length: int = opt(128, "Maximum tokens per example (pairs included).", "--max-seq-length")
    long_text: Literal["truncate", "head-tail", "sliding-window"] = opt(
        "truncate", "How to fit texts longer than --max-seq-length.", "--long-text",
        choices=("truncate", "head-tail", "sliding-window"))
    stride: int = opt(32, "Overlap in tokens between sliding windows.", "--stride")


# ------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------

@dataclass
class TokenizeConfig:
    output: Optional[str] = opt(None, "Output directory (dataset, tokenizer, manifest.json).", "--output")
    task: Literal["mlm", "cls"] = opt("mlm", "mlm: pack text into blocks; cls: one example per row with its label.",
                                      "--task", choices=("mlm", "cls"))
    overwrite: bool = opt(False, "Replace an existing output directory.", "--overwrite")
    data: DataConfig = section(DataConfig)
    tokenizer: TokenizerConfig = section(TokenizerConfig)


@dataclass
class PretrainConfig:
    output: Optional[str] = opt(None, "Output model directory.", "--output")
    overwrite: bool = opt(False, "Replace an existing output directory.", "--overwrite")
    data: PretrainDataConfig = section(PretrainDataConfig)
    tokenizer: TokenizerConfig = section(TokenizerConfig)
    model: ModelConfig = section(ModelConfig)
    mlm: MaskingConfig = section(MaskingConfig)
    train: PretrainTrainConfig = section(PretrainTrainConfig)
    sparse_head: bool = opt(True, "Run the MLM head only at masked positions (same weights, less compute).",
                            "--sparse-head/--dense-head")


@dataclass
class FinetuneConfig:
    model: Optional[str] = opt(None, "Local model directory (a bertkit pretrain-mlm output or any BERT dir).", "--model")
    allow_pickle: bool = allow_pickle_field()
    output: Optional[str] = opt(None, "Output model directory.", "--output")
    overwrite: bool = opt(False, "Replace an existing output directory.", "--overwrite")
    problem: Literal["auto", "single", "multi", "regression"] = opt(
        "auto", "single-label, multi-label or regression (auto: from the label column).", "--problem",
        choices=("auto", "single", "multi", "regression"))
    labels: Optional[str] = opt(None, "File with one label name per line (index = id).", "--labels")
    metric: Optional[str] = opt(None, "Metric that picks the best checkpoint (default per problem).", "--metric")
    threshold: float = opt(0.5, "Multi-label decision threshold.", "--threshold")
    tune_threshold: bool = opt(False, "Multi-label: pick the threshold that maximises micro-F1 on validation.",
                               "--tune-threshold")
    class_weights: Optional[str] = opt(None, "'auto' (inverse frequency) or comma-separated weights per label id.",
                                       "--class-weights")
    prior_init: bool = opt(True, "A new head starts at the training labels' prior (bias = log class frequency, "
                                 "log-odds per label, or the mean target) instead of 0.", "--prior-init/--no-prior-init")
    dropout: Optional[float] = opt(None, "Hidden and attention dropout while fine-tuning, in [0, 1) (default: the "
                                         "checkpoint's).", "--dropout")
    data: ClsDataConfig = section(ClsDataConfig)
    train: FinetuneTrainConfig = section(FinetuneTrainConfig)


@dataclass
class PredictConfig:
    model: Optional[str] = opt(None, "Local model directory (fill-mask or classification).", "--model")
    allow_pickle: bool = allow_pickle_field()
    input: Optional[str] = opt(None, "Input file (.jsonl .csv .tsv .txt) or - for stdin (one text per line).", "--input")
    output: str = opt("-", "Output file (.jsonl or .csv) or - for stdout.", "--output")
    task: Literal["auto", "fill-mask", "classification"] = opt(
        "auto", "auto picks from the model's architecture.", "--task", choices=("auto", "fill-mask", "classification"))
    text_column: str = opt("text", "Column holding the text.", "--text-column")
    text_pair_column: Optional[str] = opt(None, "Column holding the second text of a pair.", "--text-pair-column")
    top_k: int = opt(5, "fill-mask: candidates per [MASK].", "--top-k")
    batch_size: int = opt(64, "Rows per forward pass (rows are sorted by length first, so batches pad little).", "--batch-size")
    max_seq_length: Optional[int] = opt(None, "Truncate inputs to this many tokens (default: the model's limit, 512 at most).",
                                        "--max-seq-length")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N.", "--device")


@dataclass
class EvaluateConfig:
    model: Optional[str] = opt(None, "Local model directory (a classifier or a masked-LM).", "--model")
    allow_pickle: bool = allow_pickle_field()
    data: Optional[str] = opt(None, "Labelled file (classification) or text / `bertkit tokenize` output (MLM).", "--data")
    output: Optional[str] = opt(None, "Directory for the report (default: MODEL/eval-<data name>).", "--output")
    task: Literal["auto", "fill-mask", "classification"] = opt(
        "auto", "auto picks from the model's architecture.", "--task", choices=("auto", "fill-mask", "classification"))
    text_column: str = opt("text", "Column holding the text.", "--text-column")
    text_pair_column: Optional[str] = opt(None, "Column holding the second text of a pair.", "--text-pair-column")
    label_column: str = opt("label", "Column holding the label (classification).", "--label-column")
    batch_size: int = opt(64, "Rows per forward pass (rows are sorted by length first, so batches pad little).", "--batch-size")
    max_seq_length: Optional[int] = opt(None, "Truncate to this many tokens (MLM blocks: default 128).", "--max-seq-length")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N.", "--device")
    seed: int = opt(1234, "Seed of the fixed 15% evaluation masking (MLM).", "--seed")
