"""One configuration schema per command.

Sections shared by several commands (``data``, ``tokenizer``, ``train``) are defined once; a
command that needs other defaults subclasses the section and overrides only those fields.  The
CLI flags and their help texts live here too (see :func:`bertkit.config.opt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import Schema, at_least, duration_problems, in_unit_interval, opt, section
from .outputs import check_writable
from .tasks import names as task_names

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


def dropout_field():
    return opt(None, "Hidden and attention dropout while fine-tuning, in [0, 1) (default: the checkpoint's).",
               "--dropout")


# ------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------

@dataclass
class TokenizerConfig(Schema):
    path: str | None = opt(None, "Local tokenizer or model directory to tokenize with.", "--tokenizer")
    train: bool = opt(False, "Train a new WordPiece tokenizer on the input text.", "--train-tokenizer")
    vocab_size: int = opt(30522, "Vocabulary size of a trained tokenizer.", "--vocab-size")
    lowercase: bool = opt(True, "Lowercase (and strip accents) in a trained tokenizer.", "--lowercase/--no-lowercase")
    min_frequency: int = opt(2, "Minimum pair frequency for a WordPiece merge when training.")

    def problems(self) -> list[str]:
        return at_least(self.vocab_size, 10, "--vocab-size") if self.train else []


@dataclass
class DataConfig(Schema):
    inputs: list[str] = opt(None, "Input files or globs (.txt .csv .tsv .json .jsonl .parquet) "
                                  "or a saved datasets dir.", argument=True, factory=list)
    text_column: str = opt("text", "Column holding the text (plain .txt files: one example per line).", "--text-column")
    text_pair_column: str | None = opt(None, "Column holding the second text of a pair.", "--text-pair-column")
    label_column: str | None = opt(None, "Column holding the label (with --task cls).", "--label-column")
    max_seq_length: int = opt(128, "Tokens per example/block, [CLS] and [SEP] included.", "--max-seq-length")
    packing: Literal["docs", "lines"] = opt(
        "docs", "mlm: 'docs' concatenates documents (joined with [SEP]) into full blocks; "
                "'lines' keeps one line per example.",
        "--packing", choices=("docs", "lines"))
    num_proc: int = opt(1, "Parallel tokenization: worker processes (mlm: the same output whatever the number).",
                        "--num-proc")

    def problems(self) -> list[str]:
        return at_least(self.max_seq_length, 8, "--max-seq-length") + at_least(self.num_proc, 1, "--num-proc")


@dataclass
class PretrainDataConfig(DataConfig):
    inputs: list[str] = opt(None, "A `bertkit tokenize` output dir, or raw files/globs "
                                  "(then --tokenizer or --train-tokenizer).", "--data", factory=list)
    eval_fraction: float = opt(0.02, "Share of blocks held out for evaluation.", "--eval-fraction")

    def problems(self) -> list[str]:
        return super().problems() + in_unit_interval(self.eval_fraction, "--eval-fraction")


@dataclass
class MaskingConfig(Schema):
    probability: float = opt(0.15, "Share of tokens to mask for training (evaluation always uses 0.15).",
                             "--mlm-probability")
    mask_replace_prob: float = opt(0.8, "Of the selected tokens, the share replaced by [MASK].")
    random_replace_prob: float = opt(0.1, "Of the selected tokens, the share replaced by a random token "
                                          "(the rest stay).")
    whole_word_mask: bool = opt(False, "Mask whole words (## continuations with their word; "
                                       "each CJK character is a word).", "--whole-word-mask/--no-whole-word-mask")

    def problems(self) -> list[str]:
        found = [f"--mlm-probability {self.probability}: must be in (0, 1)"] if not 0 < self.probability < 1 else []
        shares = (self.mask_replace_prob, self.random_replace_prob)
        if sum(shares) > 1 or min(shares) < 0:
            found.append("mlm.mask_replace_prob + mlm.random_replace_prob: each >= 0, together at most 1")
        return found


@dataclass
class ModelConfig(Schema):
    preset: str = opt("tiny", "Size of a new model: tiny, mini, small, medium, base, large.", "--preset",
                      choices=tuple(PRESETS))
    path: str | None = opt(None, "Local checkpoint directory to continue pretraining from.", "--model")
    hidden_size: int | None = opt(None, "Override the preset's hidden size.")
    num_layers: int | None = opt(None, "Override the preset's number of layers.")
    num_heads: int | None = opt(None, "Override the preset's attention heads (default hidden/64).")
    intermediate_size: int | None = opt(None, "Override the preset's feed-forward size (default 4*hidden).")
    max_position_embeddings: int = opt(512, "Positions of a new model.")
    dropout: float = opt(0.1, "Hidden and attention dropout of a new model.")
    allow_pickle: bool = allow_pickle_field()


@dataclass
class TrainConfig(Schema):
    epochs: float = opt(1.0, "Training epochs (ignored when --max-steps is set).", "--epochs")
    max_steps: int | None = opt(None, "Optimizer steps to train for (overrides --epochs).", "--max-steps")
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
    eval_steps: int | None = opt(None, "Evaluate every N steps (default: once per epoch / at the end).",
                                    "--eval-steps")
    save_steps: int | None = opt(None, "Save a checkpoint every N steps (default: with each evaluation).",
                                    "--save-steps")
    save_total_limit: int = opt(2, "Checkpoints to keep.", "--save-total-limit")
    resume: str = opt("auto", "auto: continue from the newest checkpoint in --output; no; or a checkpoint dir.",
                      "--resume")
    num_workers: int = opt(0, "DataLoader worker processes.", "--num-workers")
    report_to: str = opt("none", "Where to report metrics besides the output dir: none or tensorboard.", "--report-to")
    compile: bool = opt(False, "torch.compile the model (off by default: slower on CPU, see docs/benchmarks.md; "
                               "worth trying on GPU).", "--compile/--no-compile")
    time_budget: str | None = opt(None, "Stop after this wall time, e.g. 30m or 2h (the schedule is fitted to it).",
                                     "--time-budget")

    def problems(self) -> list[str]:
        found = at_least(self.batch_size, 1, "--batch-size") + at_least(self.grad_accum, 1, "--grad-accum")
        if not self.lr > 0:
            found.append(f"--lr {self.lr}: must be positive")
        found += at_least(self.max_steps, 1, "--max-steps")
        if self.max_steps is None and not self.epochs > 0:
            found.append(f"--epochs {self.epochs}: must be positive")
        found += in_unit_interval(self.warmup_ratio, "--warmup-ratio")
        found += at_least(self.logging_steps, 1, "--logging-steps") + at_least(self.eval_steps, 1, "--eval-steps")
        found += at_least(self.save_steps, 1, "--save-steps") + at_least(self.save_total_limit, 1, "--save-total-limit")
        found += at_least(self.num_workers, 0, "--num-workers")
        if self.report_to not in ("none", "tensorboard"):
            found.append(f"--report-to {self.report_to}: use none or tensorboard (bertkit reports nowhere remote)")
        return found + duration_problems(self.time_budget, "--time-budget")


@dataclass
class PretrainTrainConfig(TrainConfig):
    batch_size: int = opt(64, "Blocks per device per step.", "--batch-size")
    lr: float = opt(5e-4, "Peak learning rate.", "--lr")
    max_tokens: int | None = opt(None, "Stop after this many training tokens (the schedule is fitted to it).",
                                    "--max-tokens")

    def problems(self) -> list[str]:
        return super().problems() + at_least(self.max_tokens, 1, "--max-tokens")


# finetune-cls's --batching auto: length windows up to this peak learning rate, the Trainer's shuffled order
# above: the orders measured within 0.3 points of a plain Trainer at each rate (benchmarks/finetune_parity.py,
# SST-2 4,000 rows, MiniLM): windows of 2 +0.08 at 5e-5 (3 seeds, 1.66x its examples/CPU-s); shuffled +0.21 at
# 1e-4 (6 seeds) and -0.09 at 2e-4 (12 seeds), 1.1x.  Windows, measured after this choice over 12 seeds: -0.24 at
# 1e-4 and -0.18 at 2e-4 (1.6x), also within the bound: windows at every rate is the next change to weigh.
WINDOW_MAX_LR = 5e-5
BATCHING_HELP = (
    "Training batch order, measured against a plain Trainer with shuffled batches and dynamic padding "
    "(benchmarks/finetune_parity.py, docs/benchmarks.md; MiniLM, 3 seeds). window: shuffled examples sorted by "
    "length only inside windows of --batching-window batches, then the batches shuffled (window 2: SST-2 4k rows "
    "+0.08 points at 1.66x its examples/s, MRPC +0.81 F1 points at 1.44x; window 4: -0.31 at 2.18x, +0.04 at "
    "1.55x). length: transformers' group_by_length, batches of one length running long to short (-1.3 points "
    "on SST-2, fastest). random: the Trainer's own order (-0.46 points, 1.15x; at lr 1e-4 +0.21, 2e-4 -0.09; "
    "window 2 there: -0.24, -0.18 over 12 seeds). "
    f"auto (finetune-cls's default): window up to --lr {WINDOW_MAX_LR:g}, random above.")


@dataclass
class FinetuneTrainConfig(TrainConfig):
    epochs: float = opt(3.0, "Training epochs (ignored when --max-steps is set).", "--epochs")
    lr: float = opt(5e-5, "Peak learning rate.", "--lr")
    patience: int | None = opt(None, "Stop after N evaluations without improvement of --metric.", "--patience")
    head_lr: float | None = opt(None, "Peak learning rate of the new head (the classifier, and a pooler the "
                                         "checkpoint lacks); default --lr.", "--head-lr")
    # benchmarks/finetune_parity.py measures accuracy and speed of each against a plain Trainer
    batching: Literal["auto", "window", "length", "random"] = opt(
        "window", BATCHING_HELP,
        "--batching", choices=("auto", "window", "length", "random"))
    # 2, not 4: windows of 4 were -0.31 points on SST-2 (the parity bound: -0.3), windows of 2 +0.08 and +0.81
    # F1 on MRPC, at 1.66x and 1.44x the plain Trainer (docs/benchmarks.md, "Classification fine-tuning")
    batching_window: int = opt(2, "Batches per length-sorted window with --batching window (1: no grouping).",
                               "--batching-window")

    def batch_order(self) -> str:
        """--batching resolved: auto is window up to WINDOW_MAX_LR and the Trainer's random order above."""
        if self.batching != "auto":
            return self.batching
        return "window" if self.lr <= WINDOW_MAX_LR * (1 + 1e-9) else "random"

    def sampler_window(self) -> int | None:
        """Batches per length-sorted window for bertkit's sampler; None: the Trainer's own sampler."""
        return self.batching_window if self.batch_order() == "window" else None

    def problems(self) -> list[str]:
        found = super().problems() + at_least(self.patience, 1, "--patience") + at_least(
            self.batching_window, 1, "--batching-window")
        if self.head_lr is not None and not self.head_lr > 0:
            found.append(f"--head-lr {self.head_lr}: must be positive")
        if self.save_steps and (not self.eval_steps or self.save_steps % self.eval_steps):
            found.append("--save-steps needs --eval-steps and must be a multiple of it (the best checkpoint is kept)")
        return found


@dataclass
class ClsTrainConfig(FinetuneTrainConfig):
    # auto: the windows' speed where they were measured at parity with the Trainer, its own order above
    # (WINDOW_MAX_LR); finetune-ner, finetune-qa and distill keep windows, with which they were measured
    batching: Literal["auto", "window", "length", "random"] = opt(
        "auto", BATCHING_HELP,
        "--batching", choices=("auto", "window", "length", "random"))


@dataclass
class TextColumns(Schema):
    text_column: str = opt("text", "Column holding the text.", "--text-column")
    text_pair_column: str | None = opt(None, "Column holding the second text of a pair.", "--text-pair-column")


@dataclass
class LabelledColumns(TextColumns):
    label_column: str = opt("label", "Column holding the label.", "--label-column")


@dataclass
class QAColumns(Schema):
    question_column: str = opt("question", "question-answering: column holding the question (stdin: "
                                           "question<TAB>context lines).", "--question-column")
    context_column: str = opt("context", "question-answering: column holding the context.", "--context-column")


@dataclass
class QALabelledColumns(QAColumns):
    answer_column: str = opt("answers", "question-answering: column holding the answers (flat files; SQuAD-format "
                                        "JSON is read as is).", "--answer-column")


@dataclass
class WordColumns(Schema):
    words_column: str = opt("tokens", "Token classification: column holding the list of words (.jsonl/.csv/.parquet; "
                                      "predict reads the text column as raw text where it is absent).",
                            "--words-column")


@dataclass
class TaggedColumns(WordColumns):
    tags_column: str = opt("tags", "Token classification: column holding the list of tags (.jsonl/.csv/.parquet).",
                           "--tags-column")
    tag_column: int | None = opt(None, "Token classification, CoNLL-style files: the column holding the tag, "
                                          "0-based (the word is column 0; default: the last column).", "--tag-column")


@dataclass
class ModelDirFields(Schema):
    model: str | None = opt(None, "Local model directory.", "--model")
    allow_pickle: bool = allow_pickle_field()

    def problems(self) -> list[str]:
        return [] if self.model else ["--model is required: a local model directory"]


# predict's and evaluate's rows per forward pass.  Length-sorted batches pad little at any size; what is left is
# the runtime's cost per call.  Torch on a CPU was flat from 16 to 64 rows (7% slower at 8); ONNX Runtime's int8
# MiniLM student ran 1.24x faster at 8 than at 64 (1,043 / 1,012 rows/s against 814 / 840, one thread, SST-2 dev,
# two runs each) and 1.15x faster than at 32.  Serve's batches are chosen apart (SERVE_CPU_BATCH below).
ONNX_CPU_BATCH, DEFAULT_BATCH = 8, 64


@dataclass
class InferenceFields(ModelDirFields):
    batch_size: int | None = opt(None, "Rows per forward pass; rows are sorted by length first, so batches pad "
                                          f"little (default: {ONNX_CPU_BATCH} on ONNX Runtime on a CPU, "
                                          f"{DEFAULT_BATCH} otherwise).", "--batch-size")
    max_seq_length: int | None = opt(None, "Truncate inputs to this many tokens (default: the length the model was "
                                              "fine-tuned with, else its limit, 512 at most).", "--max-seq-length")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N.", "--device")
    task: str = opt("auto", "The task kind: " + ", ".join(task_names()) + "; auto picks it from the model's "
                            "architecture.", "--task", choices=("auto", *task_names()))
    backend: Literal["auto", "torch", "onnx"] = opt(
        "auto", "auto: ONNX Runtime when --model holds a model.onnx (a `bertkit export` dir), else torch.", "--backend",
        choices=("auto", "torch", "onnx"))
    threads: int | None = opt(None, "CPU threads for inference (default: the machine's cores, or OMP_NUM_THREADS).",
                                 "--threads")

    def problems(self) -> list[str]:
        found = super().problems() + at_least(self.batch_size, 1, "--batch-size") + at_least(
            self.max_seq_length, 8, "--max-seq-length") + at_least(self.threads, 1, "--threads")
        if self.task not in ("auto", *task_names()):
            found.append(f"--task {self.task}: use auto or one of {', '.join(task_names())}")
        return found


@dataclass
class ClsDataConfig(LabelledColumns):
    train: str | None = opt(None, "Training file (.csv .tsv .json .jsonl .parquet .txt or a datasets dir).",
                               "--train")
    validation: str | None = opt(None, "Validation file, evaluated every epoch.", "--validation")
    test: str | None = opt(None, "Test file, evaluated once with the best model.", "--test")
    text_column: str = opt("text", "Column holding the text (several: comma-separated, joined with a space).",
                           "--text-column")
    max_seq_length: int = opt(128, "Maximum tokens per example (pairs included).", "--max-seq-length")
    long_text: Literal["truncate", "head-tail", "sliding-window"] = opt(
        "truncate", "How to fit texts longer than --max-seq-length.", "--long-text",
        choices=("truncate", "head-tail", "sliding-window"))
    stride: int = opt(32, "Overlap in tokens between sliding windows.", "--stride")

    def problems(self) -> list[str]:
        found = [] if self.train else ["--train is required: the labelled training file"]
        found += at_least(self.max_seq_length, 8, "--max-seq-length")
        # (distill leaves the length, mode and stride unset until the teacher's are known)
        if (self.long_text == "sliding-window" and self.max_seq_length is not None and self.stride is not None
                and not 0 <= self.stride < self.max_seq_length // 2):
            found.append(f"--stride {self.stride}: must be in [0, {self.max_seq_length // 2}) for --max-seq-length "
                         f"{self.max_seq_length}")
        return found


# ------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------

@dataclass
class TokenizeConfig(Schema):
    output: str | None = opt(None, "Output directory (dataset, tokenizer, manifest.json).", "--output")
    task: Literal["mlm", "cls"] = opt("mlm", "mlm: pack text into blocks; cls: one example per row with its label.",
                                      "--task", choices=("mlm", "cls"))
    overwrite: bool = opt(False, "Replace an existing output directory.", "--overwrite")
    data: DataConfig = section(DataConfig)
    tokenizer: TokenizerConfig = section(TokenizerConfig)

    def problems(self) -> list[str]:
        found = check_writable(self.output, "--output") if self.output else [
            "--output is required: the directory to write the dataset to"]
        if not self.data.inputs:
            found.append("no input files: pass the files or globs to tokenize")
        return found


@dataclass
class PretrainConfig(Schema):
    output: str | None = opt(None, "Output model directory.", "--output")
    overwrite: bool = opt(False, "Replace an existing output directory.", "--overwrite")
    data: PretrainDataConfig = section(PretrainDataConfig)
    tokenizer: TokenizerConfig = section(TokenizerConfig)
    model: ModelConfig = section(ModelConfig)
    mlm: MaskingConfig = section(MaskingConfig)
    train: PretrainTrainConfig = section(PretrainTrainConfig)
    sparse_head: bool = opt(True, "Run the MLM head only at masked positions (same weights, less compute).",
                            "--sparse-head/--dense-head")

    def problems(self) -> list[str]:
        found = check_writable(self.output, "--output")
        if not self.data.inputs:
            found.append("--data is required: a `bertkit tokenize` output dir or raw text files")
        return found


@dataclass
class FinetuneFields(ModelDirFields):
    """What every fine-tuning command starts from and writes: the base model and the output model dir."""
    model: str | None = opt(None, "Local model directory (a bertkit pretrain-mlm output or any BERT dir), or "
                                     "minilm-l6.", "--model")
    output: str | None = opt(None, "Output model directory.", "--output")
    overwrite: bool = opt(False, "Replace an existing output directory.", "--overwrite")

    def problems(self) -> list[str]:
        return super().problems() + check_writable(self.output, "--output")


@dataclass
class FinetuneConfig(FinetuneFields):
    problem: Literal["auto", "single", "multi", "regression"] = opt(
        "auto", "single-label, multi-label or regression (auto: from the label column).", "--problem",
        choices=("auto", "single", "multi", "regression"))
    labels: str | None = opt(None, "File with one label name per line (index = id).", "--labels")
    metric: str | None = opt(None, "Metric that picks the best checkpoint (default per problem).", "--metric")
    threshold: float = opt(0.5, "Multi-label decision threshold.", "--threshold")
    tune_threshold: bool = opt(False, "Multi-label: pick the threshold that maximises micro-F1 on validation.",
                               "--tune-threshold")
    class_weights: str | None = opt(None, "'auto' (inverse frequency) or comma-separated weights per label id.",
                                       "--class-weights")
    prior_init: bool = opt(True, "A new head starts at the training labels' prior (bias = log class frequency, "
                                 "log-odds per label, or the mean target) instead of 0.",
                           "--prior-init/--no-prior-init")
    dropout: float | None = dropout_field()
    data: ClsDataConfig = section(ClsDataConfig)
    train: ClsTrainConfig = section(ClsTrainConfig)

    def problems(self) -> list[str]:
        found = super().problems() + in_unit_interval(self.dropout, "--dropout")
        if not 0 < self.threshold < 1:
            found.append(f"--threshold {self.threshold}: must be in (0, 1)")
        return found


@dataclass
class PredictConfig(InferenceFields, TextColumns, QAColumns, WordColumns):
    model: str | None = opt(None, "Local model directory (fill-mask, classification or question answering; a "
                                     "`bertkit export` dir runs on ONNX Runtime).", "--model")
    input: str | None = opt(None, "Input file (.jsonl .csv .tsv .txt; QA also SQuAD-format .json) or - for stdin "
                                     "(one text per line; QA: question<TAB>context).", "--input")
    output: str = opt("-", "Output file (.jsonl or .csv) or - for stdout.", "--output")
    top_k: int = opt(5, "fill-mask: candidates per [MASK]; question-answering: alternative answers (1: none).",
                     "--top-k")

    def problems(self) -> list[str]:
        found = super().problems() + at_least(self.top_k, 1, "--top-k")
        if self.input is None:
            found.append("--input is required: a file, or - for stdin")
        if self.output != "-" and Path(self.output).suffix.lower() not in (".jsonl", ".json", ".csv", ".tsv"):
            found.append(f"--output {self.output}: use a .jsonl, .csv or .tsv file, or - for stdout")
        elif self.output != "-" and Path(self.output).is_dir():
            found.append(f"--output {self.output}: a directory; give a file name")
        else:
            found += check_writable(self.output, "--output", kind="file")
        return found


# serve's rows per forward pass.  A round of the batcher holds what a few hundred clients sent, and its length
# sorting pads far more than predict's sort over a whole file: on one CPU thread SST-2 pools of 180 rows pad 1.15x
# the real tokens in batches of 32 but 1.04x in batches of 8, which ONNX Runtime runs as fast per row (int8 MiniLM:
# 324 rows/CPU-s at 8 vs 288 at 32; fp32 137 vs 125).  With it (and answers sent as each batch finishes)
# serve_speed.py's int8 saturation went from 0.65x to 1.11x predict's rows/s.  GPUs want larger batches (not
# measured).
SERVE_CPU_BATCH, SERVE_GPU_BATCH = 8, 64


@dataclass
class ServeConfig(InferenceFields):
    model: str | None = opt(None, "Local model directory to serve (any task kind bertkit makes; a `bertkit export` "
                                     "dir runs on ONNX Runtime).", "--model")
    host: str = opt("127.0.0.1", "Address to listen on (0.0.0.0: every interface; put a reverse proxy in front).",
                    "--host")
    port: int = opt(8080, "Port to listen on; 0 picks a free one (printed, and written to --port-file).", "--port")
    port_file: str | None = opt(None, "Write the port listened on to this file once the server is bound.",
                                   "--port-file")
    batch_size: int | None = opt(None, "Rows per forward pass; each round's rows are sorted by length first "
                                          f"(default: {SERVE_CPU_BATCH} on a CPU, {SERVE_GPU_BATCH} on a GPU).",
                                 "--batch-size")
    max_batch_tokens: int = opt(8192, "Tokens the batcher takes from the queue for one round of the model "
                                      "(requests from many clients share it).", "--max-batch-tokens")
    max_queue: int = opt(256, "Rows admitted at once (queued or in the model); a request over it gets 429 with "
                              "Retry-After.", "--max-queue")
    max_request_rows: int = opt(64, "Rows in one request; more gets 413.", "--max-request-rows")
    max_body_bytes: int = opt(1_000_000, "Bytes of one request body; more gets 413.", "--max-body-bytes")
    top_k: int = opt(5, "Default for the request parameter top_k (fill-mask candidates, QA alternatives), as in "
                        "`bertkit predict --top-k`.", "--top-k")

    def problems(self) -> list[str]:
        found = super().problems() + at_least(self.max_batch_tokens, 8, "--max-batch-tokens") + at_least(
            self.max_queue, 1, "--max-queue") + at_least(self.max_request_rows, 1, "--max-request-rows") + at_least(
            self.max_body_bytes, 1024, "--max-body-bytes") + at_least(self.top_k, 1, "--top-k")
        if not 0 <= self.port <= 65535:
            found.append(f"--port {self.port}: use 0-65535 (0 picks a free port)")
        if self.max_request_rows > self.max_queue:
            found.append(f"--max-request-rows {self.max_request_rows}: more than --max-queue {self.max_queue}, so such "
                         "a request could never be admitted")
        return found


@dataclass
class EvaluateConfig(InferenceFields, LabelledColumns, QALabelledColumns, TaggedColumns):
    model: str | None = opt(None, "Local model directory (a classifier, a masked-LM or a QA model; a `bertkit "
                                     "export` dir runs on ONNX Runtime).", "--model")
    data: str | None = opt(None, "Labelled file (classification), text / `bertkit tokenize` output (MLM), or "
                                    "questions with answers (QA: SQuAD-format JSON or flat files).", "--data")
    output: str | None = opt(None, "Directory for the report (default: MODEL/eval-<data name>).", "--output")
    max_seq_length: int | None = opt(None, "Truncate to this many tokens (default: the length a classifier was "
                                              "fine-tuned with; MLM blocks: 128).", "--max-seq-length")
    seed: int = opt(1234, "Seed of the fixed 15% evaluation masking (MLM).", "--seed")

    def problems(self) -> list[str]:
        found = super().problems()
        if not self.data:
            found.append("--data is required: the file to evaluate on")
        return found + check_writable(self.output, "--output")


@dataclass
class ExportConfig(ModelDirFields, LabelledColumns, QALabelledColumns, TaggedColumns):
    model: str | None = opt(None, "Local model directory to export (any task kind bertkit makes).", "--model")
    output: str | None = opt(None, "Output directory (model.onnx, tokenizer, config.json, export.json).", "--output")
    overwrite: bool = opt(False, "Replace an existing output directory.", "--overwrite")
    quantize: Literal["none", "int8"] = opt(
        "none", "int8: ONNX Runtime dynamic quantization (about 4x smaller; checked against --validation).",
        "--quantize", choices=("none", "int8"))
    max_drop: float = opt(1.0, "int8: refuse the model when its validation metric is more than this many points "
                               "below the torch model's.", "--max-drop")
    validation: str | None = opt(None, "Labelled file, read as `bertkit evaluate --data` reads it for the model's "
                                          "kind: both models' metrics and their agreement go into export.json, and "
                                          "int8 is chosen and checked on it.", "--validation")
    text_column: str = opt("text", "Column holding the text (several: comma-separated).", "--text-column")
    label_column: str = opt("label", "Column holding the label (classifier validation).", "--label-column")
    batch_size: int = opt(ONNX_CPU_BATCH, "Rows per forward pass while validating (default: what predict runs "
                                          "on ONNX Runtime on a CPU; int8 scales depend on the batch).",
                          "--batch-size")
    max_seq_length: int | None = opt(None, "Tokens per input while validating (default: the model's setting).",
                                        "--max-seq-length")
    threads: int | None = opt(None, "ONNX Runtime / torch threads while validating (default: the machine's cores).",
                                 "--threads")
    seed: int = opt(1234, "Seed of the fixed 15% masking of masked-LM validation.", "--seed")

    def problems(self) -> list[str]:
        found = super().problems() + at_least(self.batch_size, 1, "--batch-size") + at_least(
            self.threads, 1, "--threads")
        if not self.output:
            found.append("--output is required: the directory to write the exported model to")
        return found + check_writable(self.output, "--output")


# ------------------------------------------------------------------------------------------
# Question answering (finetune-qa)
# ------------------------------------------------------------------------------------------

@dataclass
class QATrainConfig(FinetuneTrainConfig):
    epochs: float = opt(2.0, "Training epochs (ignored when --max-steps is set).", "--epochs")
    # QA's speed against run_qa.py (2.10x) was measured with windows of 4 batches; thousands of steps per
    # epoch leave no small-data accuracy question there
    batching_window: int = opt(4, "Batches per length-sorted window with --batching window (1: no grouping).",
                               "--batching-window")


@dataclass
class QADataConfig(Schema):
    train: str | None = opt(None, "Training file: SQuAD-format .json (v1.1/v2.0) or .jsonl/.csv/.parquet with "
                                     "question, context and answers columns.", "--train")
    validation: str | None = opt(None, "Validation file (same formats), scored with EM/F1 at every evaluation.",
                                    "--validation")
    question_column: str = opt("question", "Column holding the question (flat files).", "--question-column")
    context_column: str = opt("context", "Column holding the context (flat files).", "--context-column")
    answer_column: str = opt("answers", "Column holding the answers: {\"text\": [...], \"answer_start\": [...]} or "
                                        "an answer text (its first occurrence in the context).", "--answer-column")
    max_seq_length: int = opt(384, "Tokens per window: [CLS] question [SEP] context [SEP].", "--max-seq-length")
    doc_stride: int = opt(128, "Tokens of context shared by consecutive windows of a long context.", "--doc-stride")
    max_question_length: int = opt(64, "Questions are cut to this many tokens.", "--max-question-length")

    def problems(self) -> list[str]:
        from .qa import window_problems

        found = [] if self.train else ["--train is required: a SQuAD-format .json or a .jsonl/.csv/.parquet file "
                                       "with question, context and answers columns"]
        return found + window_problems(self.max_seq_length, self.doc_stride, self.max_question_length)


@dataclass
class FinetuneQAConfig(FinetuneFields):
    metric: str = opt("f1", "Metric that picks the best checkpoint: f1 or exact_match.", "--metric")
    n_best: int = opt(20, "Start and end candidates per window in post-processing.", "--n-best")
    max_answer_length: int = opt(30, "Longest answer, in tokens.", "--max-answer-length")
    null_threshold: float | None = opt(None, "Unanswerable questions (SQuAD v2): answer empty when the null score "
                                                "exceeds the best span's by more than this (default 0.0 when the "
                                                "data has unanswerable questions, else never empty).",
                                          "--null-threshold")
    tune_null_threshold: bool = opt(False, "Pick the null threshold that maximises validation F1 (saved in the model).",
                                    "--tune-null-threshold")
    version_2: bool | None = opt(
        None, "Questions without an answer (SQuAD v2.0 style): --version-2 trains the model to abstain (answer "
              "empty) on them; --no-version-2 drops them and the model always answers. Default: abstaining when "
              "there are any, with a warning counting them when the data does not say it is v2.0 (no "
              "is_impossible keys, no version 2.0): in v1.1 data, an empty answers list is usually a mistake.",
        "--version-2/--no-version-2")
    qa_language: Literal["auto", "en", "zh"] = opt(
        "auto", "Metric convention: en (SQuAD word F1) or zh (CMRC2018 character F1); auto: from the share of CJK "
                "characters in the contexts.", "--qa-language", choices=("auto", "en", "zh"))
    dropout: float | None = dropout_field()
    data: QADataConfig = section(QADataConfig)
    train: QATrainConfig = section(QATrainConfig)

    def problems(self) -> list[str]:
        found = super().problems() + in_unit_interval(self.dropout, "--dropout") + at_least(self.n_best, 1, "--n-best")
        found += at_least(self.max_answer_length, 1, "--max-answer-length")
        if self.version_2 is False and (self.tune_null_threshold or self.null_threshold is not None):
            found.append("--no-version-2: the model always answers; --null-threshold and --tune-null-threshold "
                         "need --version-2")
        if self.metric.removeprefix("eval_") not in ("f1", "exact_match"):
            found.append(f"--metric {self.metric}: use one of f1, exact_match")
        return found


# ------------------------------------------------------------------------------------------
# Token classification (finetune-ner)
# ------------------------------------------------------------------------------------------

TAG_SCHEMES = ("auto", "IOB1", "IOB2", "BIOES", "BMES")


@dataclass
class NERDataConfig(TaggedColumns):
    train: str | None = opt(None, "Training file: CoNLL-style text (token<TAB>tag per line, a blank line between "
                                     "sentences) or .jsonl/.csv/.parquet with a list of words and a list of tags.",
                               "--train")
    validation: str | None = opt(None, "Validation file (same formats), scored with entity F1 at every evaluation "
                                          "(default: a tenth of train held out).", "--validation")
    test: str | None = opt(None, "Test file, scored once with the best model.", "--test")
    tag_scheme: Literal["auto", "IOB1", "IOB2", "BIOES", "BMES"] = opt(
        "auto", "Tag scheme (auto: from the training tags: M- means BMES, E-/S- BIOES, else IOB2 or IOB1).",
        "--tag-scheme", choices=TAG_SCHEMES)
    label_all_subtokens: bool = opt(False, "Train on every sub-token of a word (later ones with B- turned into I-), "
                                           "not only the first; predictions are always read at the first.",
                                    "--label-all-subtokens/--first-subtoken-only")
    max_seq_length: int = opt(128, "Tokens per window, [CLS] and [SEP] included; longer sentences are windowed, "
                                   "never truncated.", "--max-seq-length")
    stride: int = opt(32, "Sub-tokens shared by consecutive windows of a long sentence.", "--stride")

    def problems(self) -> list[str]:
        found = [] if self.train else ["--train is required: a CoNLL-style file (token<TAB>tag) or a .jsonl/.csv/"
                                       ".parquet file with words and tags columns"]
        found += at_least(self.max_seq_length, 8, "--max-seq-length")
        if not 0 <= self.stride < (self.max_seq_length - 2) // 2:
            found.append(f"--stride {self.stride}: must be in [0, {(self.max_seq_length - 2) // 2}) for "
                         f"--max-seq-length {self.max_seq_length}")
        return found


NER_METRICS = ("f1", "precision", "recall", "accuracy", "loss")


@dataclass
class FinetuneNERConfig(FinetuneFields):
    metric: str = opt("f1", "Metric that picks the best checkpoint: f1 (entity micro-F1), precision, recall, "
                            "accuracy (token) or loss.", "--metric")
    dropout: float | None = dropout_field()
    data: NERDataConfig = section(NERDataConfig)
    train: FinetuneTrainConfig = section(FinetuneTrainConfig)

    def problems(self) -> list[str]:
        found = super().problems() + in_unit_interval(self.dropout, "--dropout")
        if self.metric.removeprefix("eval_") not in NER_METRICS:
            found.append(f"--metric {self.metric}: use one of {', '.join(NER_METRICS)}")
        return found


# ------------------------------------------------------------------------------------------
# Distillation (distill)
# ------------------------------------------------------------------------------------------

@dataclass
class DistillDataConfig(ClsDataConfig, QALabelledColumns, TaggedColumns):
    train: str | None = opt(None, "Labelled training file, read as the teacher's fine-tuning command reads it "
                                     "(classification labels and tags: the teacher's).", "--train")
    unlabeled: str | None = opt(None, "Texts without labels, labelled by the teacher and appended to the training "
                                         "set (soft targets only): classification rows in the same text columns; "
                                         "for a tagger, sentences (a .txt of one per line, a CoNLL-style file, or "
                                         "rows of words or text); for a QA model, questions with their contexts "
                                         "(a SQuAD-format file, its answers not read, or rows of the question "
                                         "and context columns).", "--unlabeled")
    max_seq_length: int | None = opt(None, "Maximum tokens per example (default: the teacher's).",
                                        "--max-seq-length")
    long_text: Literal["truncate", "head-tail", "sliding-window"] | None = opt(
        None, "How to fit texts longer than --max-seq-length (default: the teacher's).", "--long-text",
        choices=("truncate", "head-tail", "sliding-window"))
    stride: int | None = opt(None, "Overlap in tokens between sliding windows, of texts (classification) or of "
                                      "long sentences (token classification) (default: the teacher's).", "--stride")
    doc_stride: int | None = opt(None, "question-answering: tokens of context shared by consecutive windows "
                                          "(default: the teacher's).", "--doc-stride")
    max_question_length: int | None = opt(None, "question-answering: questions are cut to this many tokens "
                                                   "(default: the teacher's).", "--max-question-length")


@dataclass
class DistillConfig(Schema):
    teacher: str | None = opt(None, "Fine-tuned teacher model directory (e.g. a finetune-cls output).", "--teacher")
    student: str | None = opt(None, "Student model directory with the teacher's vocabulary (a bertkit or Hugging "
                                       "Face model; a head for the teacher's labels is added when it has none).",
                                 "--student")
    student_preset: str | None = opt(None, "Student = a new, randomly initialised BERT of this size ("
                                              + ", ".join(PRESETS) + ") with the teacher's vocabulary: it learns "
                                              "from the task data alone (a --student pretrained with pretrain-mlm "
                                              "starts further).", "--student-preset")
    student_layers: int | None = opt(None, "Student = a copy of the teacher keeping N of its layers, spread evenly "
                                              "and ending at the top one (6 -> 3 keeps 1, 3, 5); default: half the "
                                              "teacher's layers when neither --student nor --student-preset is "
                                              "given.", "--student-layers")
    output: str | None = opt(None, "Output model directory (the student).", "--output")
    overwrite: bool = opt(False, "Replace an existing output directory.", "--overwrite")
    allow_pickle: bool = allow_pickle_field()
    temperature: float = opt(2.0, "Softmax temperature of the soft targets (the soft loss is scaled by T^2).",
                             "--temperature")
    alpha: float = opt(0.5, "Weight of the soft-target loss; 1 - alpha weighs the hard labels (0: hard labels only, "
                            "the student trained without the teacher).", "--alpha")
    hidden_loss_weight: float = opt(0.0, "Weight of an added loss: the squared error between the student's hidden "
                                         "states and the teacher's at mapped layers (each student layer and the "
                                         "teacher layer --student-layers keeps for it), through a learnt linear map "
                                         "when the hidden sizes differ; the teacher then runs beside the student at "
                                         "every step.", "--hidden-loss-weight")
    metric: str | None = opt(None, "Metric that picks the best checkpoint (default per problem).", "--metric")
    tune_threshold: bool = opt(False, "Multi-label: pick the student's threshold that maximises validation micro-F1 "
                                      "(default: the teacher's).", "--tune-threshold")
    class_weights: str | None = opt(None, "Weights of the hard-label loss: 'auto' (inverse frequency) or "
                                             "comma-separated weights per label id.", "--class-weights")
    dropout: float | None = opt(None, "Hidden and attention dropout of the student while training, in [0, 1) "
                                         "(default: the model's).", "--dropout")
    data: DistillDataConfig = section(DistillDataConfig)
    train: FinetuneTrainConfig = section(FinetuneTrainConfig)

    def problems(self) -> list[str]:
        found = [] if self.teacher else ["--teacher is required: a fine-tuned model directory"]
        if not self.output:
            found.append("--output is required: the directory to write the student to")
        given = [f for f, v in (("--student", self.student), ("--student-preset", self.student_preset),
                                ("--student-layers", self.student_layers)) if v is not None]
        if len(given) > 1:
            found.append(f"{' and '.join(given)}: give one (a model dir, a preset size, or a layer count to copy "
                         "from the teacher)")
        if self.student_preset is not None and self.student_preset not in PRESETS:
            found.append(f"--student-preset {self.student_preset}: use one of {', '.join(PRESETS)}")
        found += at_least(self.student_layers, 1, "--student-layers") + in_unit_interval(self.dropout, "--dropout")
        if not self.hidden_loss_weight >= 0:
            found.append(f"--hidden-loss-weight {self.hidden_loss_weight}: must be 0 or more")
        if not self.temperature > 0:
            found.append(f"--temperature {self.temperature}: must be positive")
        if self.alpha == 0 and self.data.unlabeled:
            found.append("--unlabeled with --alpha 0: its texts have only soft targets, which --alpha 0 leaves out")
        return found + in_unit_interval(self.alpha, "--alpha", closed_top=True)
