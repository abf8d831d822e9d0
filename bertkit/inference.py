"""Inference shared by ``predict``, ``evaluate`` and what comes next: opening a model dir for a task,
the device, length-sorted batches, logits in input order, progress, and handing freed memory back.

Rows are sorted by token count and batched, so batches pad little; results go back to input order.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import UsageError
from .loading import load_model, open_checkpoint
from .log import is_tty, quiet
from .metrics import mean_by_group
from .modeling import check_compatible, cls_only_last_layer
from .tokenization import head_tail

TASK_LOADERS = {"fill-mask": "AutoModelForMaskedLM", "classification": "AutoModelForSequenceClassification",
                "question-answering": "AutoModelForQuestionAnswering"}


def detect_task(config, forced: str = "auto") -> str:
    """The task of a model dir, from its architectures (or ``forced``)."""
    if forced != "auto":
        return forced
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "ForMaskedLM" in archs or "ForPreTraining" in archs:
        return "fill-mask"
    if "ForSequenceClassification" in archs:
        return "classification"
    if "ForQuestionAnswering" in archs:
        return "question-answering"
    raise UsageError(f"--model: cannot tell the task from architectures {archs or '(none)'}; "
                     "pass --task fill-mask, classification or question-answering")


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


def long_text_of(config) -> dict:
    """The ``--long-text`` handling a classifier was fine-tuned with (saved in its config)."""
    return {"long_text": getattr(config, "bertkit_long_text", "truncate") or "truncate",
            "stride": getattr(config, "bertkit_stride", None)}


def inference_length(config, requested: int | None) -> int:
    """Tokens per input: ``requested``, else the length the model was fine-tuned with, else its limit
    (512 at most), so predict/evaluate scores match the validation metrics of training."""
    max_pos = int(getattr(config, "max_position_embeddings", 512) or 512)
    return requested or getattr(config, "bertkit_max_seq_length", None) or min(max_pos, 512)


@dataclass
class OpenedModel:
    """A model dir opened for inference: everything but the weights, which :meth:`load` reads."""

    path: Path
    config: Any
    task: str
    tokenizer: Any
    max_len: int
    device: Any
    backend: str = "torch"
    threads: int | None = None

    @property
    def long_text(self) -> dict:
        return long_text_of(self.config)

    def load(self):
        """The model, on torch or (a `bertkit export` dir) ONNX Runtime, called alike."""
        if self.backend == "onnx":
            from .onnx_runtime import OnnxModel

            return OnnxModel(self.path, threads=self.threads, task=self.task)
        import torch
        import transformers

        if self.threads:
            torch.set_num_threads(self.threads)
        loader = getattr(transformers, TASK_LOADERS[self.task])
        model = load_model(loader, self.path, self.task).eval().to(self.device)
        if self.task == "classification":
            cls_only_last_layer(model)  # the same logits, ~1.2x the rows/s (see the function)
        return model


def open_model(cfg, task: str | None = None) -> OpenedModel:
    """Check the model dir of an inference config (``model``, ``allow_pickle``, ``max_seq_length``,
    ``device``, ``task``, ``backend``, ``threads``), read its config, pick the task and backend, load
    the tokenizer and fix the length (:func:`inference_length`)."""
    from .onnx_runtime import resolve_backend

    backend = resolve_backend(cfg.model, cfg.backend)
    mdir, config, tok = open_checkpoint(cfg.model, cfg.allow_pickle, weights=backend == "torch")
    task = task or detect_task(config, cfg.task)
    max_len = inference_length(config, cfg.max_seq_length)
    check_compatible(config, tok, max_len, "--model")
    return OpenedModel(mdir, config, task, tok, max_len, pick_device(cfg.device, backend), backend, cfg.threads)


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


@lru_cache(maxsize=None)
def _malloc_trim():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


def trim_freed_memory() -> None:
    """Hand memory that was freed back to the operating system (glibc ``malloc_trim``).

    Why: torch's CPU allocator keeps no cache, and batches of changing shapes (every batch masks a
    different number of tokens; predict batches grow with text length) leave glibc's heap fragmented,
    so the resident memory of a long inference loop creeps up although nothing is kept: +18% for 10x
    the blocks in ``bertkit evaluate`` before this, +1% with it (``benchmarks/eval_memory.py``)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def batches(order: list[int], size: int, trim_every: int = 16) -> Iterator[list[int]]:
    """Slices of ``order``; every ``trim_every`` batches freed memory goes back to the OS, so peak
    memory does not creep up with the number of batches."""
    for n, i in enumerate(range(0, len(order), size)):
        if n and n % trim_every == 0:
            trim_freed_memory()
        yield order[i:i + size]


def length_order(tok, texts: list[str], pairs: list[str] | None = None) -> list[int]:
    """Row indices sorted by token count, so each batch pads little (results go back to input order).
    Counting tokens (a fast batch encode without padding) beats sorting by characters by ~20% less padding."""
    backend = tok.backend_tokenizer
    # padding left on the backend (saved in a tokenizer.json, or by an earlier padded call in this process) would
    # give every text the same length and this order would be the input order: 1.9x the model time on SST-2 dev
    # (transformers sets the padding again on every padded call, so clearing it here changes nothing else)
    if backend.padding is not None:
        backend.no_padding()
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    lengths = [len(e.ids) for e in encode(texts, add_special_tokens=False)]
    if pairs:
        lengths = [a + len(e.ids) for a, e in zip(lengths, encode(pairs, add_special_tokens=False), strict=True)]
    return sorted(range(len(texts)), key=lengths.__getitem__)


def _pad(ids: list[list[int]], pad_id: int) -> dict:
    import torch

    input_ids = torch.full((len(ids), max(map(len, ids))), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for r, x in enumerate(ids):
        input_ids[r, :len(x)] = torch.tensor(x)
        mask[r, :len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def classification_logits(model, tok, texts: list[str], pairs: list[str] | None, batch_size: int, max_len: int,
                          device, progress: RowProgress | None = None, long_text: str = "truncate",
                          stride: int | None = None) -> np.ndarray:
    """Logits for every text, in input order.  ``long_text`` as in fine-tuning: ``truncate``;
    ``head-tail`` (single texts); ``sliding-window``: long texts are split into overlapping windows
    (``stride`` tokens of overlap) whose logits are averaged."""
    import torch

    windowed = long_text == "sliding-window"
    if stride is None or not 0 <= stride < max_len // 2:
        stride = min(32, max_len // 4)
    out: np.ndarray | None = None
    with torch.inference_mode():
        for idx in batches(length_order(tok, texts, pairs), batch_size):
            batch_pairs = [pairs[i] for i in idx] if pairs else None
            if long_text == "head-tail" and not batch_pairs:
                raw = tok([texts[i] for i in idx], add_special_tokens=False)["input_ids"]
                enc = _pad([head_tail(x, max_len, tok.cls_token_id, tok.sep_token_id) for x in raw], tok.pad_token_id)
            else:
                kwargs = dict(truncation="only_second" if batch_pairs else True, max_length=max_len, padding=True,
                              return_tensors="pt")
                if windowed:
                    kwargs.update(return_overflowing_tokens=True, stride=stride)
                enc = tok([texts[i] for i in idx], batch_pairs, **kwargs)
            mapping = enc.pop("overflow_to_sample_mapping", None)
            feats = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            logits = model(**feats).logits.float().cpu().numpy()
            if mapping is not None:  # average window logits per text
                logits = mean_by_group(logits, mapping.numpy(), len(idx))
            if out is None:
                out = np.zeros((len(texts), logits.shape[1]), dtype=np.float32)
            out[idx] = logits
            if progress is not None:
                progress.update(len(idx))
    return out if out is not None else np.zeros((0, 1), dtype=np.float32)


def fill_mask(model, tok, texts: list[str], batch_size: int, max_len: int, device, top_k: int,
              progress: RowProgress | None = None) -> list[dict]:
    """The ``top_k`` tokens (and probabilities) for every ``[MASK]`` of every text, in input order."""
    import torch

    if tok.mask_token is None:
        raise UsageError("--model: the tokenizer has no mask token")
    results: list[dict | None] = [None] * len(texts)
    with torch.inference_mode():
        for idx in batches(length_order(tok, texts), batch_size):
            enc = tok([texts[i] for i in idx], truncation=True, max_length=max_len, padding=True, return_tensors="pt")
            logits = model(**{k: v.to(device) for k, v in enc.items()}).logits
            for row, i in enumerate(idx):
                pos = (enc["input_ids"][row] == tok.mask_token_id).nonzero(as_tuple=True)[0]
                masks = []
                for p in pos.tolist():
                    sc, ids = torch.softmax(logits[row, p].float(), -1).topk(top_k)
                    masks.append([{"token": int(t), "token_str": tok.convert_ids_to_tokens(int(t)),
                                   "score": round(float(s), 6)}
                                  for s, t in zip(sc.tolist(), ids.tolist(), strict=True)])
                filled = texts[i]
                for m in masks:
                    filled = filled.replace(tok.mask_token, m[0]["token_str"].removeprefix("##"), 1)
                results[i] = {"text": texts[i], "masks": masks, "filled": filled}
            if progress is not None:
                progress.update(len(idx))
    return results  # type: ignore[return-value]
