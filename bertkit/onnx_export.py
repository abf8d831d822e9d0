"""Export a bertkit model to ONNX (fp32 or int8) and check the export against the torch model.

Exporter: ``torch.onnx.export`` with the TorchScript tracer (``dynamo=False``) on the model loaded with
``attn_implementation="eager"``.  Why (measured on MiniLM-L6, SST-2 classifier, torch 2.13 /
onnxruntime 1.32): ONNX Runtime's BERT graph optimizer fuses that graph completely (1
EmbedLayerNormalization, 6 Attention, 6 BiasGelu, 12 SkipLayerNormalization); the SDPA attention of
transformers 5, and the torch.export-based exporter (``dynamo=True``, also what transformers 5's own
``OnnxExporter`` runs), leave the attention unfused.  The fused graph runs a batch of 32 x 28 tokens in
0.224 CPU-s on one thread against 0.265 for torch (AMD EPYC).  The tracer also exports in ~1 s where the
dynamo path takes ~7 s, which keeps tests fast.  Optimum's exporter does not support transformers 5.
A classifier is exported with its last layer for [CLS] alone (see :func:`load_torch_model`): that layer's
attention stays unfused, and the graph is smaller work.

The tracer records two Python conditionals of transformers' mask code as constants (the padding of
the mask to the key length, which is 0 for an encoder, and ``is_causal``, False for BERT): both hold
for every encoder input, and the export is checked on inputs of other shapes than the traced ones.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch  # a dependency of bertkit; this module is imported by `bertkit export` only

from .errors import DataError, UsageError
from .onnx_runtime import EXPORT_REPORT, EXTRA_HINT, ONNX_FILE, OnnxModel
from .tasks import ModelFn, Scored, Task, Windows, batches, pad_batch

Scorer = Callable[[ModelFn], Scored]  # a model's score on the --validation file

OPSET = 17  # LayerNormalization is a standard op from 17 on; ONNX Runtime 1.16+ runs it

# Sample texts for the logit comparison when no --validation file is given: English and Chinese, short and
# long (the long ones reach the model's maximum length), so batches are padded and truncated.
SAMPLES = [
    "the food was really great and the staff were friendly",
    "the movie was terrible and far too long",
    "a wonderful book with a surprising ending",
    "这家餐厅的菜非常好吃",
    "服务太差了，不会再来",
    "ok",
    " ".join(["an unexpectedly long review that goes on about everything and nothing"] * 40),
    "酒店房间很干净，推荐。" * 30,
]


def missing_packages() -> list[str]:
    return [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]


def require_extra() -> None:
    missing = missing_packages()
    if missing:
        raise UsageError(f"bertkit export needs the onnx extra ({', '.join(missing)} not installed); {EXTRA_HINT}")


def load_torch_model(task: Task, mdir: Path):
    """The fp32 torch model with eager attention (the form ONNX Runtime's optimizer fuses, see above) and its
    kind's inference-only changes (``Task.prepare_torch``: a classifier computes its last layer for [CLS]
    alone).  That last layer traces to plain MatMul/Softmax nodes, which the optimizer leaves unfused and
    dynamic quantization still turns to int8: on the 3-layer SST-2 student of MiniLM, the int8 export ran
    1.27x the rows per CPU-second of the full last layer (one thread, batch 8, three alternating runs), with
    the argmax equal on 99.8% of rows (int8 scales depend on the batch either way)."""
    return task.prepare_torch(task.load_torch(mdir, attn_implementation="eager", dtype=torch.float32))


def input_names(model, tok) -> list[str]:
    import inspect

    params = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in params and "token_type_ids" in tok.model_input_names:
        names.append("token_type_ids")
    return names


class NamedIO(torch.nn.Module):
    """Positional inputs in ``names`` order, a tuple of the named ``outputs`` (a stable graph signature
    for the tracer, which passes positional arguments and wants tensors out)."""

    def __init__(self, inner, names: list[str], outputs: list[str]):
        super().__init__()
        self.inner, self.names, self.outputs = inner, list(names), list(outputs)

    def forward(self, *args):
        out = self.inner(**dict(zip(self.names, args, strict=True)), return_dict=True)
        return tuple(out[k] for k in self.outputs)


def export_graph(model, tok, task: Task, path: Path) -> list[str]:
    """Trace ``model`` to ``path`` with dynamic batch and sequence axes; returns the input names."""
    names = input_names(model, tok)
    outputs = list(task.outputs)

    # batch 2 of unequal lengths: nothing in the trace may specialise on batch 1 or on an unpadded batch
    enc = tok(["a b c d e f g", "a b"], padding=True, return_tensors="pt")
    args = tuple(enc[n] if n in enc else torch.zeros_like(enc["input_ids"]) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    for o in outputs:
        axes[o] = {0: "batch", 1: "sequence"} if task.per_token else {0: "batch"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on the two mask conditionals (see module doc)
        # .eval() on the wrapper: the exporter restores the wrapper's mode on every submodule afterwards, and a
        # new Module is in training mode (that would leave the torch model's dropout on)
        torch.onnx.export(NamedIO(model, names, outputs).eval(), args, str(path), input_names=names,
                          output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
    model.eval()
    return names


@contextlib.contextmanager
def quiet_library_logs():
    """ONNX Runtime's optimizer and quantizer log advice as warnings, on loggers named after their modules
    (e.g. that a tiny vocabulary skips the embedding fusion, or to pre-process for static quantization); the
    fused-op counts in export.json say what the optimizer did."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def optimize_graph(src: Path, dst: Path, config) -> dict:
    """ONNX Runtime's transformer optimizer (model_type bert) for CPU; returns the fused-op counts."""
    from onnxruntime.transformers import optimizer

    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    with quiet_library_logs():
        om = optimizer.optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden, use_gpu=False)
        om.save_model_to_file(str(dst))
    return {k: int(v) for k, v in om.get_fused_operator_statistics().items() if v}


# ------------------------------------------------------------------------------------------------
# Comparing two models
# ------------------------------------------------------------------------------------------------

def sample_windows(task: Task, texts: list[str]) -> Windows:
    """The windows of the task's sample rows made from ``texts`` (a [MASK] inserted, a question asked)."""
    return task.encode(task.sample_rows(texts))


def output_difference(task: Task, ref: ModelFn, model: ModelFn, windows: Windows, batch_size: int = 8) -> dict:
    """Max and mean |ref - model| over every output, on real (unpadded) positions."""
    worst, total, count = 0.0, 0.0, 0
    pad = task.tokenizer.pad_token_id
    for idx in batches(range(len(windows)), batch_size):
        batch = pad_batch(windows.inputs, idx, pad)
        a_out, b_out = ref(batch), model(batch)
        keep = batch["attention_mask"].astype(bool)
        for name in task.outputs:
            a, b = a_out[name].astype(np.float64), b_out[name].astype(np.float64)
            if task.per_token:
                a, b = a[keep], b[keep]
            d = np.abs(a - b)
            if d.size:
                worst, total, count = max(worst, float(d.max())), total + float(d.sum()), count + d.size
    return {"max_abs_logit_difference": worst, "mean_abs_logit_difference": total / max(count, 1)}


# ------------------------------------------------------------------------------------------------
# int8
# ------------------------------------------------------------------------------------------------

LINEAR_OPS = ["MatMul", "Attention"]  # Attention: the fused op holds the Q/K/V projection weights
EMBEDDING_OPS = ["Gather", "EmbedLayerNormalization"]
# Quantized embeddings are kept when they cost at most this many points of the validation metric against the
# int8 model without them (0.5: the int8 accuracy bar; --max-drop against torch still applies).  Measured
# on the SST-2 MiniLM classifier (benchmarks/onnx_speed.py): per-channel int8 58.7 MB, accuracy 80.39; with the
# embeddings quantized too 23.0 MB (25% of fp32's 90.9 MB), 80.28 -- one dev row of 872 -- against 79.93 for torch.
EMBEDDINGS_TOLERANCE = 0.5


def quantize(src: Path, dst: Path, per_channel: bool, embeddings: bool) -> None:
    """ONNX Runtime dynamic quantization: int8 weights, activations quantized per batch at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ops = LINEAR_OPS + (EMBEDDING_OPS if embeddings else [])
    # its "consider pre-processing" warning is about static, calibrated quantization
    with quiet_library_logs():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                         op_types_to_quantize=ops,
                         # DefaultTensorType: ONNX shape inference stops at the fused com.microsoft ops, so it
                         # cannot tell the quantizer that the tensors after them are float (they all are)
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})



def choose_int8(fp32: Path, work: Path, ref: ModelFn, windows: Windows, task: Task, scorer: Scorer | None,
                reference: Scored | None, max_drop: float, threads: int | None, log=print) -> tuple[Path, dict]:
    """Quantize ``fp32`` and pick the variant to keep.

    With --validation (``scorer``): per-channel or per-tensor weights, the one whose validation metric is
    higher (ties: the one closer to the fp32 graph on the sample windows); embeddings quantized too when that
    costs at most EMBEDDINGS_TOLERANCE points.  A variant more than ``max_drop`` points below ``reference``
    (the torch model) is refused; when none is left, QuantizationRefused with the figures.

    Without it accuracy cannot be measured, so only the conservative variant is made: per-channel weights,
    fp32 embeddings.  Why: on a MiniLM fine-tuned on 4,000 SST-2 rows, per-tensor weights with quantized
    embeddings -- what closeness to fp32 on sample inputs had picked -- lost 1.7 points (0.7873 vs 0.8039);
    on the full-data SST-2 MiniLM classifier per-channel weights with fp32 embeddings scored 80.39 against
    torch's 79.93 (benchmarks/onnx_speed.py).
    ``ref`` is the fp32 ONNX model the sample differences are taken against.
    """
    def trial(per_channel: bool, embeddings: bool) -> dict:
        return try_int8(fp32, work, ref, windows, task, scorer, reference, threads, per_channel, embeddings, log)

    if scorer is None:
        chosen = trial(True, False)
        report = {"checked_on_validation": False, "per_channel": True, "embeddings": False,
                  "embeddings_choice": "no --validation: the conservative variant (per-channel weights, fp32 "
                                       "embeddings); its accuracy was not measured",
                  "candidates": [public(chosen)], "_validation": None}
        return chosen["_path"], report
    pt, pc = trial(False, False), trial(True, False)
    linear = max((pt, pc), key=rank)
    emb = trial(linear["per_channel"], True)
    tried = [pt, pc, emb]
    chosen, why = pick_validated(linear, emb, tried, reference, max_drop)
    report = {
        "checked_on_validation": True,
        "per_channel": chosen["per_channel"] if chosen else None,
        "embeddings": chosen["embeddings"] if chosen else None,
        "embeddings_choice": why,
        "embedding_bytes_saved": linear["bytes"] - emb["bytes"],
        "candidates": [public(r) for r in tried],
    }
    if chosen is None:
        best = max(tried, key=rank)
        raise QuantizationRefused(
            f"the int8 model is refused: validation {reference.key} {best['score']:.4f} against "
            f"{reference.score:.4f} for the torch model ({(best['score'] - reference.score) * reference.scale:+.2f} "
            f"points; --max-drop {max_drop:g}); nothing was written. Export without --quantize, or pass a larger "
            "--max-drop", report)
    report["_validation"] = chosen.get("_validation")
    return chosen["_path"], report


def try_int8(fp32: Path, work: Path, ref: ModelFn, windows: Windows, task: Task, scorer: Scorer | None,
             reference: Scored | None, threads: int | None, per_channel: bool, embeddings: bool, log) -> dict:
    """One int8 variant: its file, size, output difference from the fp32 graph and (with a scorer) its
    validation score and agreement with torch; keys starting with ``_`` stay out of export.json."""
    path = work / f"int8-{'pc' if per_channel else 'pt'}-{'emb' if embeddings else 'noemb'}.onnx"
    t0 = time.time()
    quantize(fp32, path, per_channel, embeddings)
    model = OnnxModel(path, threads=threads)
    rec = {"per_channel": per_channel, "embeddings": embeddings, "bytes": path.stat().st_size,
           **output_difference(task, ref, model, windows)}
    if scorer is not None:
        v = scorer(model)
        rec.update(metrics=v.metrics, score=v.score, agreement_with_torch=task.agreement(reference, v), _validation=v)
    rec["seconds"] = round(time.time() - t0, 1)
    rec["_path"] = path
    log(f"export: int8 {'per-channel' if per_channel else 'per-tensor'}{' + embeddings' if embeddings else ''}: "
        f"{rec['bytes'] / 1e6:.1f} MB" + (f", {reference.key} {rec['score']:.4f}" if scorer is not None else "")
        + f", mean |logit diff| vs fp32 {rec['mean_abs_logit_difference']:.4g}")
    return rec


def rank(r: dict):
    """Higher is better: the validation metric first, then closeness to the fp32 graph."""
    return (round(r.get("score", 0.0), 6), -r["mean_abs_logit_difference"])


def public(r: dict) -> dict:
    return {k: v for k, v in r.items() if not k.startswith("_")}


def pick_validated(linear: dict, emb: dict, tried: list[dict], reference: Scored, max_drop: float
                   ) -> tuple[dict | None, str]:
    """(the variant to keep, or None when every one is more than ``max_drop`` points below ``reference``; why
    the embeddings were or were not quantized)."""
    keep_emb = emb["score"] >= linear["score"] - EMBEDDINGS_TOLERANCE / reference.scale
    why = (f"validation {reference.key} {emb['score']:.4f} with quantized embeddings vs {linear['score']:.4f} "
           f"without (kept when the loss is at most {EMBEDDINGS_TOLERANCE} point)")
    if emb["bytes"] >= linear["bytes"]:
        keep_emb, why = False, "quantizing the embeddings did not make the file smaller"
    chosen = emb if keep_emb else linear
    floor = reference.score - max_drop / reference.scale
    if chosen["score"] < floor:
        passing = [r for r in tried if r["score"] >= floor]
        if not passing:
            return None, why
        chosen = max(passing, key=rank)
        why += f"; the best variant within --max-drop {max_drop:g} kept"
    return chosen, why


class QuantizationRefused(DataError):
    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report

__all__ = ["require_extra", "load_torch_model", "export_graph", "optimize_graph", "sample_windows",
           "output_difference", "quantize", "choose_int8", "QuantizationRefused", "OPSET", "ONNX_FILE", "EXPORT_REPORT",
           "OnnxModel", "SAMPLES", "missing_packages"]
