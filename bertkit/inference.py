"""Opening a model dir for inference (predict, evaluate, serve): its task kind, tokenizer, length, device
and backend, and the progress of a long run.  The batched loop itself is the task kinds'
(:mod:`bertkit.tasks`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import tasks
from .errors import UsageError
from .loading import open_checkpoint
from .log import is_tty, quiet
from .modeling import check_compatible
from .schemas import DEFAULT_BATCH, ONNX_CPU_BATCH


def pick_device(name: str, backend: str = "torch"):
    import torch

    if backend == "onnx":  # the onnxruntime package bertkit[onnx] installs runs on the CPU
        if name not in ("auto", "cpu"):
            raise UsageError(f"--device {name}: the onnx backend runs on the CPU; use --backend torch for a GPU")
        return torch.device("cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA GPU is available")
    return dev


def inference_length(config, requested: int | None) -> int:
    """Tokens per input: ``requested``, else the length the model was fine-tuned with, else its limit
    (512 at most), so predict/evaluate scores match the validation metrics of training."""
    max_pos = int(getattr(config, "max_position_embeddings", 512) or 512)
    return requested or getattr(config, "bertkit_max_seq_length", None) or min(max_pos, 512)


@dataclass
class OpenedModel:
    """A model dir opened for inference: its task kind (with the model's settings), tokenizer, length,
    device and backend; :meth:`model_fn` loads the weights."""

    path: Path
    config: Any
    task: tasks.Task
    tokenizer: Any
    max_len: int
    device: Any
    backend: str = "torch"
    threads: int | None = None

    def batch_size(self, requested: int | None) -> int:
        """Rows per forward pass: ``requested`` (--batch-size), else the backend's best measured default
        (:data:`bertkit.schemas.ONNX_CPU_BATCH` on ONNX Runtime on a CPU)."""
        if requested:
            return requested
        return ONNX_CPU_BATCH if self.backend == "onnx" and self.device.type == "cpu" else DEFAULT_BATCH

    def model_fn(self) -> tasks.ModelFn:
        """The model as a :data:`bertkit.tasks.ModelFn`: on torch, or (a `bertkit export` dir) ONNX Runtime."""
        if self.backend == "onnx":
            from .onnx_runtime import OnnxModel

            return OnnxModel(self.path, threads=self.threads)
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        model = self.task.prepare_torch(self.task.load_torch(self.path).to(self.device))
        return tasks.torch_model_fn(model, self.device)


def open_model(cfg) -> OpenedModel:
    """Check the model dir of an inference config (``model``, ``allow_pickle``, ``max_seq_length``,
    ``device``, ``task``, ``backend``, ``threads``), read its config, pick the task kind and backend, load
    the tokenizer and fix the length (:func:`inference_length`)."""
    from .onnx_runtime import resolve_backend

    backend = resolve_backend(cfg.model, cfg.backend)
    mdir, config, tok = open_checkpoint(cfg.model, cfg.allow_pickle, weights=backend == "torch")
    kind = tasks.detect(config, cfg.task)
    max_len = inference_length(config, cfg.max_seq_length)
    check_compatible(config, tok, max_len, "--model")
    return OpenedModel(mdir, config, kind(config, tok, max_len, mdir), tok, max_len,
                       pick_device(cfg.device, backend), backend, cfg.threads)


class RowProgress:
    """Rows done: a bar on a terminal, a line every 10 s otherwise (only for long inputs)."""

    def __init__(self, total: int, desc: str = "Predicting"):
        self.total = total
        self.desc = desc
        self.bar = None
        self.last = time.time()
        self.done = 0
        if is_tty() and not quiet() and total > 256:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="row", file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif not quiet() and self.total > 1000 and time.time() - self.last > 10:
            self.last = time.time()
            print(f"{self.desc.lower()}: {self.done:,}/{self.total:,} rows", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
