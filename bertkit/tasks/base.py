"""The interface every task kind implements, and the batched loop they share.

A task kind (classification, fill-mask, question answering, token classification) is one module in this
package with one :class:`Task` subclass.  Commands and capabilities (predict, evaluate, export, serve,
distill, sweep) call this interface and never branch on a kind's name:

* **what it is**: ``name``, the ``transformers`` auto class, the architectures that mean it, its outputs
  (names, and whether they have a sequence axis: the ONNX axes);
* **inference**: ``read_inputs`` (rows from a file or stdin) -> ``encode`` (rows -> unpadded windows) ->
  :func:`run_windows` (length-sorted, padded batches through a :data:`ModelFn`) -> ``window_result`` (what to
  keep of a window's outputs) -> ``decode`` (windows -> one record per row, in input order) -> ``flatten``
  (a record as CSV columns).  :func:`predict_records` runs it in bounded chunks;
* **scoring**: ``read_labelled`` + ``score`` (a model's metrics on a labelled file: ``evaluate`` and
  export's ``--validation`` both call it) and ``agreement`` (how alike two models decide);
* **export**: ``sample_rows`` (inputs the ONNX graph is compared on when no validation file is given).

A :data:`ModelFn` takes int64 numpy arrays (``input_ids``, ``attention_mask``, ``token_type_ids`` where the
tokenizer makes them) and returns the model's outputs as numpy arrays by name; :func:`torch_model_fn` and
:class:`bertkit.onnx_runtime.OnnxModel` give one for a torch model and an ONNX Runtime session alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

ModelFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
FEATURES = ("input_ids", "attention_mask", "token_type_ids")
# Rows encoded and run at a time by predict/evaluate: peak memory is bounded by a chunk's windows and
# outputs, not by the input's size; within a chunk rows are sorted by length, so batches pad little.  A
# chunk also ends at CHUNK_CHARS characters of input: one QA context can be a whole paper, hundreds of
# windows with their token offsets as Python objects (1,000,000 characters of QA contexts raised predict's
# peak memory by 35% over 120,000; at 200,000 the peak stays within 30% for 10x the contexts).
CHUNK_ROWS = 2048
CHUNK_CHARS = 200_000


@dataclass
class Windows:
    """Model inputs of a chunk of rows: unpadded token lists per window (``inputs[name][w]``), the row each
    window belongs to (``row[w]``), and whatever else the task needs to map outputs back (``meta``)."""

    inputs: dict[str, list[list[int]]]
    row: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.inputs["input_ids"])

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.inputs["input_ids"]), dtype=np.int64, count=len(self))

    def reorder(self, order: Sequence[int]) -> Windows:
        """The same windows in ``order`` (``meta`` values with one entry per window follow)."""
        n = len(self)
        pick = np.asarray(order, dtype=np.int64)

        def take(v):
            if isinstance(v, np.ndarray) and len(v) == n:
                return v[pick]
            return [v[i] for i in pick] if isinstance(v, list) and len(v) == n else v

        return Windows({k: [v[i] for i in pick] for k, v in self.inputs.items()}, self.row[pick],
                       {k: take(v) for k, v in self.meta.items()})

    def to_dataset(self):
        """The model inputs as a ``datasets.Dataset`` (what a Trainer evaluates)."""
        import datasets

        return datasets.Dataset.from_dict(self.inputs)


@dataclass
class Scored:
    """A model's score on a labelled file: ``metrics`` (what evaluate writes), ``key`` (the metric export's
    --max-drop is about), ``outputs (per-example decisions, for the agreement
    of two models), ``records`` (per-example predictions evaluate writes beside the metrics, when the kind
    has them) and ``extra`` (kind-specific report parts, e.g. a confusion matrix).  ``scale`` turns the key
    metric into points (100 for metrics in [0, 1]; 1 for EM/F1, which are reported in points)."""

    metrics: dict
    key: str
    outputs: Any
    records: list[dict] | None = None
    extra: dict = field(default_factory=dict)
    scale: float = 100.0

    @property
    def score(self) -> float:
        return float(self.metrics[self.key])



class Task:
    """One task kind (see the module doc).  An instance holds a model's settings: its config (labels and the
    ``bertkit_*`` settings stamped at fine-tuning), tokenizer, inference length and (where known) its dir."""

    name: ClassVar[str]
    auto_model: ClassVar[str]  # the transformers Auto class that loads it
    architectures: ClassVar[tuple[str, ...]]  # suffixes of config.architectures that mean this kind
    outputs: ClassVar[tuple[str, ...]] = ("logits",)
    per_token: ClassVar[bool] = False  # outputs have a sequence axis
    unit: ClassVar[str] = "rows"  # what predict counts
    description: ClassVar[str] = ""
    fields: ClassVar[tuple[str, ...]] = ("text",)  # the keys of a row (a JSON request's objects)
    optional_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config, tokenizer, max_len: int, path: str | Path | None = None):
        self.config, self.tokenizer, self.max_len, self.path = config, tokenizer, max_len, path

    @classmethod
    def matches(cls, config) -> bool:
        archs = getattr(config, "architectures", None) or []
        return any(a.endswith(cls.architectures) for a in archs)

    # -- models -------------------------------------------------------------------------------

    def load_torch(self, path, **kwargs):
        """The fine-tuned torch model of a model dir, in eval mode."""
        import transformers

        from ..loading import load_model

        return load_model(getattr(transformers, self.auto_model), path, self.name, **kwargs).eval()

    def prepare_torch(self, model):
        """Inference-only changes to a loaded torch model (same outputs, faster)."""
        return model

    # -- inference ----------------------------------------------------------------------------

    def read_inputs(self, cfg) -> list:
        """Rows to predict on from ``cfg.input`` (a file, or ``-`` for stdin) and cfg's column flags."""
        raise NotImplementedError

    def request_rows(self, inputs: Any) -> list[dict]:
        """Rows from a JSON request's ``inputs``: a string or an object (one row), a list of strings (one row
        each, never a text pair) or a list of objects with the kind's ``fields``; ValueError naming the bad
        field."""
        if isinstance(inputs, (str, dict)):
            inputs = [inputs]
        if not isinstance(inputs, list):
            raise ValueError("inputs: expected a string, an object, or a list of strings or objects")
        known = (*self.fields, *self.optional_fields)
        rows = []
        for i, x in enumerate(inputs):
            if isinstance(x, str) and len(self.fields) == 1:
                x = {self.fields[0]: x}
            if not isinstance(x, dict):
                raise ValueError(f"inputs[{i}]: expected {'a string or ' if len(self.fields) == 1 else ''}an object "
                                 f"with {', '.join(self.fields)}")
            missing = [f for f in self.fields if f not in x]
            if missing:
                raise ValueError(f"inputs[{i}].{missing[0]}: missing ({self.name} rows have {', '.join(known)})")
            unknown = sorted(set(x) - set(known))
            if unknown:
                raise ValueError(f"inputs[{i}].{unknown[0]}: unknown field ({self.name} rows have {', '.join(known)})")
            bad = [k for k, v in x.items() if not isinstance(v, str)]
            if bad:
                raise ValueError(f"inputs[{i}].{bad[0]}: expected a string")
            rows.append(dict(x))
        return rows

    def encode(self, rows: Sequence) -> Windows:
        raise NotImplementedError

    def window_result(self, out: dict[str, np.ndarray], batch: dict[str, np.ndarray], r: int) -> Any:
        """What to keep of row ``r`` of a batch's outputs (default: each output, cut to the window's real
        tokens when it has a sequence axis)."""
        if not self.per_token:
            return {k: out[k][r] for k in self.outputs}
        n = int(batch["attention_mask"][r].sum())
        return {k: out[k][r, :n] for k in self.outputs}

    def decode(self, rows: Sequence, windows: Windows, results: list, cfg) -> list[dict]:
        """One record per row, in input order, from the windows' kept results."""
        raise NotImplementedError

    def flatten(self, record: dict) -> dict:
        """A record as CSV/TSV columns (JSON lines keep records as they are)."""
        return record

    def info(self) -> dict:
        """What the model answers with, for a server's /info (e.g. its labels)."""
        return {}

    # -- scoring ------------------------------------------------------------------------------

    def read_labelled(self, path: str, cfg, flag: str = "--data"):
        raise NotImplementedError

    def score(self, model_fn: ModelFn, labelled, cfg, progress=None) -> Scored:
        raise NotImplementedError

    def agreement(self, a: Scored, b: Scored) -> dict:
        """Share of examples on which two models decide alike."""
        raise NotImplementedError

    def summary(self, scored: Scored) -> list[tuple[str, str]]:
        """Rows evaluate's summary shows (default: every float metric)."""
        return [(k, f"{v:.4f}") for k, v in scored.metrics.items() if isinstance(v, float)]

    def report_files(self, scored: Scored, out: Path) -> list[str]:
        """Files evaluate writes beside metrics.json (default: the per-example predictions, when any)."""
        if scored.records is None:
            return []
        from ..outputs import write_records

        write_records(scored.records, str(out / "predictions.jsonl"))
        return [str(out / "predictions.jsonl")]

    # -- export -------------------------------------------------------------------------------

    def sample_rows(self, texts: Sequence[str]) -> list:
        """Rows made from plain ``texts`` (export compares the ONNX graph with torch on them)."""
        return [{"text": t} for t in texts]


# ------------------------------------------------------------------------------------------------
# The shared loop
# ------------------------------------------------------------------------------------------------

def pad_batch(inputs: dict[str, list[list[int]]], idx: Sequence[int], pad_id: int) -> dict[str, np.ndarray]:
    """int64 arrays of the windows ``idx``, right-padded to the longest (``attention_mask`` made when absent)."""
    n = max(len(inputs["input_ids"][i]) for i in idx)
    out = {}
    for k in FEATURES:
        rows = inputs.get(k)
        if rows is None:
            if k != "attention_mask":
                continue
            rows = [[1] * len(inputs["input_ids"][i]) for i in range(len(inputs["input_ids"]))]
        arr = np.full((len(idx), n), pad_id if k == "input_ids" else 0, dtype=np.int64)
        for r, i in enumerate(idx):
            arr[r, :len(rows[i])] = rows[i]
        out[k] = arr
    return out


@cache
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


def batches(order: Sequence[int], size: int, trim_every: int = 16) -> Iterator[list[int]]:
    """Slices of ``order``; every ``trim_every`` batches freed memory goes back to the OS, so peak
    memory does not creep up with the number of batches."""
    order = list(order)
    for n, i in enumerate(range(0, len(order), size)):
        if n and n % trim_every == 0:
            trim_freed_memory()
        yield order[i:i + size]


def run_windows(task: Task, model_fn: ModelFn, windows: Windows, batch_size: int) -> list:
    """Every window through ``model_fn`` in length-sorted batches; returns ``task.window_result`` per
    window, in window order."""
    results: list = [None] * len(windows)
    for idx, outs in iter_windows(task, model_fn, windows, batch_size):
        for w, r in zip(idx, outs, strict=True):
            results[w] = r
    return results


def iter_windows(task: Task, model_fn: ModelFn, windows: Windows, batch_size: int) -> Iterator[tuple[list, list]]:
    """:func:`run_windows` a batch at a time: (the windows' indices, their ``task.window_result``), shortest
    windows first (serve answers each request as soon as its windows are done)."""
    pad_id = task.tokenizer.pad_token_id
    for idx in batches(np.argsort(windows.lengths(), kind="stable").tolist(), batch_size):
        batch = pad_batch(windows.inputs, idx, pad_id)
        out = model_fn(batch)
        yield idx, [task.window_result(out, batch, r) for r in range(len(idx))]


def chunks(rows: Sequence, max_rows: int = CHUNK_ROWS, max_chars: int = CHUNK_CHARS) -> Iterator[Sequence]:
    """Consecutive slices of ``rows`` of at most ``max_rows`` rows and (but for a single row) ``max_chars``
    characters of their text fields."""
    lo, chars = 0, 0
    for i, row in enumerate(rows):
        n = sum(len(v) for v in row.values() if isinstance(v, str)) if isinstance(row, dict) else 0
        if i > lo and (i - lo >= max_rows or chars + n > max_chars):
            yield rows[lo:i]
            lo, chars = i, 0
        chars += n
    if lo < len(rows):
        yield rows[lo:]


def run_chunks(task: Task, model_fn: ModelFn, rows: Sequence, batch_size: int, progress=None,
               max_rows: int = CHUNK_ROWS) -> Iterator[tuple[Sequence, Windows, list]]:
    """(rows, their windows, the windows' kept results), a bounded chunk of rows at a time (:func:`chunks`),
    so peak memory does not grow with the input; ``progress.update`` counts rows."""
    for part in chunks(rows, max_rows):
        windows = task.encode(part)
        yield part, windows, run_windows(task, model_fn, windows, batch_size)
        if progress is not None:
            progress.update(len(part))


def predict_records(task: Task, model_fn: ModelFn, rows: Sequence, batch_size: int, cfg, progress=None,
                    max_rows: int = CHUNK_ROWS) -> Iterator[dict]:
    """``task``'s records for ``rows``, in input order (see :func:`run_chunks`)."""
    for part, windows, results in run_chunks(task, model_fn, rows, batch_size, progress, max_rows):
        yield from task.decode(part, windows, results, cfg)


def torch_model_fn(model, device=None) -> ModelFn:
    """A :data:`ModelFn` for a torch model: numpy in, every tensor output as numpy (float32) out."""
    import torch

    device = device or next(model.parameters()).device

    def fn(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(v).to(device) for k, v in batch.items()})
        return {k: (v.float() if v.is_floating_point() else v).cpu().numpy()
                for k, v in out.items() if isinstance(v, torch.Tensor)}

    return fn
