"""Run a ``bertkit export`` directory on ONNX Runtime.

:class:`OnnxModel` is a :data:`bertkit.tasks.ModelFn`, as a torch model wrapped by
:func:`bertkit.tasks.torch_model_fn` is: numpy features in (``input_ids``, ``attention_mask``,
``token_type_ids``), the graph's outputs by name out, so every task kind runs on either backend unchanged.
Only ``onnxruntime`` and ``numpy`` are needed to run the graph itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import UsageError

ONNX_FILE = "model.onnx"
EXPORT_REPORT = "export.json"
EXTRA_HINT = "pip install 'bertkit[onnx]'"


def require_onnxruntime(what: str = "running an exported model") -> None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UsageError(f"{what} needs ONNX Runtime, which is not installed; {EXTRA_HINT}") from None


def has_onnx(path) -> bool:
    return path is not None and (Path(path) / ONNX_FILE).is_file()


def resolve_backend(model: str | None, backend: str, flag: str = "--backend") -> str:
    """``torch`` or ``onnx`` for a model dir: ``auto`` is onnx when the dir holds ``model.onnx``."""
    if backend not in ("auto", "torch", "onnx"):
        raise UsageError(f"{flag} {backend}: use auto, torch or onnx")
    if backend == "torch" or model is None:
        return "torch"
    found = has_onnx(model)
    if backend == "onnx" and not found:
        raise UsageError(f"{flag} onnx: --model {model} has no {ONNX_FILE}; make one with "
                         f"`bertkit export --model {model} --output DIR` and pass that DIR")
    return "onnx" if found else "torch"


def default_threads() -> int:
    """Intra-op threads: torch's own choice (physical cores, or ``OMP_NUM_THREADS`` when set), so both
    backends use the machine alike; without torch, the CPUs this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        import torch

        return max(1, torch.get_num_threads())
    except ImportError:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def session_options(threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    # a BERT graph is one chain of ops: parallel branches gain nothing, a second pool only competes
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


def _to_numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return np.asarray(v, dtype=np.int64)


class OnnxModel:
    """An exported model on ONNX Runtime, called like the torch model it came from."""

    def __init__(self, path: str | Path, threads: int | None = None):
        require_onnxruntime()
        import onnxruntime as ort

        self.path = Path(path)
        file = self.path / ONNX_FILE if self.path.is_dir() else self.path
        if not file.is_file():
            raise UsageError(f"--model {path}: no {ONNX_FILE} in that directory")
        self.threads = threads or default_threads()
        try:
            self.session = ort.InferenceSession(str(file), session_options(self.threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001
            raise UsageError(f"--model {path}: ONNX Runtime cannot open {file.name} "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, **features) -> dict[str, np.ndarray]:
        """The graph's outputs (numpy) for numpy/torch features; absent ``token_type_ids`` are zeros
        (as the torch model assumes) and features the graph does not take are ignored."""
        ids = _to_numpy(features["input_ids"])
        feed = {}
        for name in self.input_names:
            if name in features and features[name] is not None:
                feed[name] = _to_numpy(features[name])
            elif name == "attention_mask":
                feed[name] = np.ones_like(ids)
            elif name == "token_type_ids":
                feed[name] = np.zeros_like(ids)
            else:
                raise UsageError(f"--model {self.path}: the ONNX graph needs an input '{name}' bertkit does not make")
        return dict(zip(self.output_names, self.session.run(None, feed), strict=True))

    def __call__(self, batch: dict) -> dict[str, np.ndarray]:
        """The outputs by name.  With ``labels`` (masked-LM scoring) it answers as bertkit's sparse masked-LM
        does in eval mode: the mean cross-entropy over labelled positions as ``loss``, and as ``logits`` the
        predicted id at each labelled position (-100 elsewhere)."""
        labels = batch.get("labels")
        out = self.run(**{k: v for k, v in batch.items() if k != "labels"})
        if labels is None:
            return out
        labels = _to_numpy(labels)
        logits = out["logits"].astype(np.float64)
        keep = labels != -100
        z = logits[keep]
        preds = np.full(labels.shape, -100, dtype=np.int64)
        if not keep.any():
            return {"loss": np.zeros((), dtype=np.float32), "logits": preds}
        zmax = z.max(-1, keepdims=True)
        logp = z - zmax - np.log(np.exp(z - zmax).sum(-1, keepdims=True))
        loss = -logp[np.arange(len(z)), labels[keep]].mean()
        preds[keep] = z.argmax(-1)
        return {"loss": np.asarray(loss, dtype=np.float32), "logits": preds}
