"""Export a bertkit model to ONNX (fp32 or int8) and check the export against the torch model.

Exporter: ``torch.onnx.export`` with the TorchScript tracer (``dynamo=False``) on the model loaded with
``attn_implementation="eager"``.  Why (measured on MiniLM-L6, SST-2 classifier, torch 2.13 /
onnxruntime 1.32): ONNX Runtime's BERT graph optimizer fuses that graph completely (1
EmbedLayerNormalization, 6 Attention, 6 BiasGelu, 12 SkipLayerNormalization); the SDPA attention of
transformers 5, and the torch.export-based exporter (``dynamo=True``, also what transformers 5's own
``OnnxExporter`` runs), leave the attention unfused.  The fused graph runs a batch of 32 x 28 tokens in
0.224 CPU-s on one thread against 0.265 for torch (AMD EPYC).  The tracer also exports in ~1 s where the
dynamo path takes ~7 s, which keeps tests fast.  Optimum's exporter does not support transformers 5.

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch  # a dependency of bertkit; this module is imported by `bertkit export` only

from .errors import DataError, UsageError
from .onnx_runtime import EXPORT_REPORT, EXTRA_HINT, ONNX_FILE, OnnxModel

OPSET = 17  # LayerNormalization is a standard op from 17 on; ONNX Runtime 1.16+ runs it
KINDS = ("classification", "fill-mask", "question-answering")
OUTPUTS = {"classification": ["logits"], "fill-mask": ["logits"],
           "question-answering": ["start_logits", "end_logits"]}

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


def detect_kind(config) -> str:
    """The kind of model to export (bertkit's inference tasks)."""
    from .inference import detect_task

    return detect_task(config)


def load_torch_model(mdir: Path, kind: str):
    """The fp32 torch model with eager attention (the form ONNX Runtime's optimizer fuses, see above)."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    cls = {"classification": AutoModelForSequenceClassification, "fill-mask": AutoModelForMaskedLM,
           "question-answering": AutoModelForQuestionAnswering}[kind]
    try:
        model = cls.from_pretrained(str(mdir), local_files_only=True, trust_remote_code=False,
                                    attn_implementation="eager", dtype=torch.float32)
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"--model {mdir}: cannot load for {kind} ({str(e).splitlines()[0]})") from None
    return model.eval()


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


def export_graph(model, tok, kind: str, path: Path) -> list[str]:
    """Trace ``model`` to ``path`` with dynamic batch and sequence axes; returns the input names."""
    names = input_names(model, tok)
    outputs = OUTPUTS[kind]

    # batch 2 of unequal lengths: nothing in the trace may specialise on batch 1 or on an unpadded batch
    enc = tok(["a b c d e f g", "a b"], padding=True, return_tensors="pt")
    args = tuple(enc[n] if n in enc else torch.zeros_like(enc["input_ids"]) for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    for o in outputs:
        axes[o] = {0: "batch"} if kind == "classification" else {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on the two mask conditionals (see module doc)
        # .eval() on the wrapper: the exporter restores the wrapper's mode on every submodule afterwards, and a
        # new Module is in training mode (that would leave the torch model's dropout on)
        torch.onnx.export(NamedIO(model, names, outputs).eval(), args, str(path), input_names=names,
                          output_names=outputs, dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True,
                          dynamo=False)
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

def sample_features(tok, texts: list[str], max_len: int, kind: str, batch_size: int = 8) -> list[dict]:
    """Batches of features (torch tensors) from ``texts``; masked-LM texts get a [MASK] in the middle,
    QA texts are paired with a question."""
    if kind == "fill-mask" and tok.mask_token:
        texts = [_with_mask(t, tok.mask_token) for t in texts]
    batches = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i:i + batch_size]
        if kind == "question-answering":
            enc = tok(["what is it about?"] * len(chunk), chunk, truncation="only_second", max_length=max_len,
                      padding=True, return_tensors="pt")
        else:
            enc = tok(chunk, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        batches.append({k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
    return batches


def _with_mask(text: str, mask: str) -> str:
    words = text.split()
    if len(words) > 1:
        words[len(words) // 2] = mask
        return " ".join(words)
    return text[: len(text) // 2] + mask + text[len(text) // 2 + 1:]


def logit_difference(ref_model, model, batches: list[dict], kind: str) -> dict:
    """Max and mean |ref - model| over every output, on real (unpadded) positions."""
    import torch

    worst, total, count = 0.0, 0.0, 0
    with torch.inference_mode():
        for feats in batches:
            ref = ref_model(**feats)
            got = model(**feats)
            for name in OUTPUTS[kind]:
                a, b = getattr(ref, name).float().numpy(), getattr(got, name).float().numpy()
                if kind != "classification":
                    keep = feats["attention_mask"].numpy().astype(bool)
                    a, b = a[keep], b[keep]
                d = np.abs(a.astype(np.float64) - b)
                if d.size:
                    worst, total, count = max(worst, float(d.max())), total + float(d.sum()), count + d.size
    return {"max_abs_logit_difference": worst, "mean_abs_logit_difference": total / max(count, 1)}


@dataclass
class Validation:
    """What --validation measures for one model: ``metrics``, the metric that --max-drop is about
    (``key``, in [0, 1]: points = 100 x), and raw outputs for the agreement between two models."""

    metrics: dict
    key: str
    outputs: np.ndarray
    extra: dict = field(default_factory=dict)

    @property
    def score(self) -> float:
        return float(self.metrics[self.key])


class Validator:
    """Scores models on a --validation file with bertkit's own inference code (predict's batching and
    long-text handling for classifiers, evaluate's fixed 15% masking for masked-LMs)."""

    def __init__(self, cfg, mdir: Path, config, tok, kind: str, max_len: int):
        self.kind, self.tok, self.max_len, self.config, self.cfg = kind, tok, max_len, config, cfg
        if kind == "question-answering":
            raise UsageError("--validation: question-answering exports are compared on sample inputs only "
                             "(validation metrics come with `bertkit finetune-qa`); leave --validation out")
        from .data import join_text, load_inputs, split_columns

        cols = {"--text-column": cfg.text_column, "--text-pair-column": cfg.text_pair_column}
        if kind == "classification":
            cols["--label-column"] = cfg.label_column
        ds, _ = load_inputs([cfg.validation], "--validation", cols)
        if len(ds) == 0:
            raise DataError(f"--validation {cfg.validation}: no rows")
        self.texts = join_text(ds.to_dict(), split_columns(cfg.text_column), len(ds))
        self.pairs = [str(x) for x in ds[cfg.text_pair_column]] if cfg.text_pair_column else None
        if kind == "classification":
            from .labels import LabelSpace

            self.space = LabelSpace.from_model_config(config)
            self.labels = np.asarray(self.space.encode(ds[cfg.label_column], source=cfg.validation,
                                                       column=cfg.label_column))
        else:
            self._mlm_batches = None

    def run(self, model) -> Validation:
        return self._classification(model) if self.kind == "classification" else self._mlm(model)

    def _classification(self, model) -> Validation:
        from .inference import classification_logits, long_text_of
        from .metrics import DEFAULT_METRIC, classification_metrics

        logits = classification_logits(model, self.tok, self.texts, self.pairs, self.cfg.batch_size, self.max_len,
                                       "cpu", None, **long_text_of(self.config))
        sp = self.space
        metrics = classification_metrics(sp.problem, logits, self.labels, sp.num_labels, sp.threshold)
        return Validation(metrics, DEFAULT_METRIC[sp.problem], logits)

    def _mlm(self, model) -> Validation:
        import torch

        from .inference import batches
        from .masking import MLMCollator

        if self._mlm_batches is None:  # the same masked batches for every model
            ids = self.tok(self.texts, truncation=True, max_length=self.max_len)["input_ids"]
            collator = MLMCollator(self.tok, eval_seed=self.cfg.seed)
            with collator.evaluation():
                self._mlm_batches = [collator([{"input_ids": ids[i]} for i in idx])
                                     for idx in batches(list(range(len(ids))), self.cfg.batch_size)]
        preds, correct, total = [], 0, 0
        with torch.inference_mode():
            for b in self._mlm_batches:
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                keep = b["labels"] != -100
                p = logits[keep].argmax(-1)
                correct += int((p == b["labels"][keep]).sum())
                total += int(keep.sum())
                preds.append(p.numpy())
        out = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
        return Validation({"masked_accuracy": correct / max(total, 1), "masked_tokens": total}, "masked_accuracy", out)

    def agreement(self, a: Validation, b: Validation) -> dict:
        """Share of rows on which two models decide alike (argmax; multi-label: the same label set;
        masked-LM: the same top token at each masked position), and the largest output difference."""
        x, y = a.outputs, b.outputs
        if self.kind == "fill-mask":
            return {"argmax_agreement": float((x == y).mean()) if x.size else 1.0}
        out = {"max_abs_logit_difference": float(np.abs(x - y).max()) if x.size else 0.0}
        if self.space.problem == "single":
            out["argmax_agreement"] = float((x.argmax(-1) == y.argmax(-1)).mean())
        elif self.space.problem == "multi":
            t = np.log(self.space.threshold / (1 - self.space.threshold))  # sigmoid(z) >= thr  <=>  z >= logit(thr)
            out["label_set_agreement"] = float(((x >= t) == (y >= t)).all(-1).mean())
        return out


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



# Without --validation there is nothing to score accuracy on: the embeddings are quantized, as the SST-2
# measurement above chose (they are ~60% of the int8 file of a small model).
DEFAULT_EMBEDDINGS = True


def choose_int8(fp32: Path, work: Path, ref, batches: list[dict], kind: str, validator: "Validator | None",
                reference: "Validation | None", max_drop: float, threads: int | None, log=print) -> tuple[Path, dict]:
    """Quantize ``fp32`` and pick the variant to keep.

    per-channel or per-tensor weights: the one whose validation metric is higher (ties, and no --validation:
    the one closer to the fp32 graph on the sample inputs).  Embeddings: quantized too when that costs at most
    EMBEDDINGS_TOLERANCE points of the validation metric (no --validation: DEFAULT_EMBEDDINGS).  A variant whose
    metric is more than ``max_drop`` points below ``reference`` (the torch model) is refused; when none is left,
    DataError with the figures.  ``ref`` is the fp32 ONNX model the sample differences are taken against.
    """
    import os

    tried: list[dict] = []

    def trial(per_channel: bool, embeddings: bool) -> dict:
        path = work / f"int8-{'pc' if per_channel else 'pt'}-{'emb' if embeddings else 'noemb'}.onnx"
        t0 = time.time()
        quantize(fp32, path, per_channel, embeddings)
        model = OnnxModel(path, threads=threads)
        rec = {"per_channel": per_channel, "embeddings": embeddings, "bytes": os.path.getsize(path),
               **logit_difference(ref, model, batches, kind)}
        if validator is not None:
            v = validator.run(model)
            rec["metrics"] = v.metrics
            rec["score"] = v.score
            rec["agreement_with_torch"] = validator.agreement(reference, v)
            rec["_validation"] = v
        rec["seconds"] = round(time.time() - t0, 1)
        rec["_path"] = path
        tried.append(rec)
        log(f"export: int8 {'per-channel' if per_channel else 'per-tensor'}"
            f"{' + embeddings' if embeddings else ''}: {rec['bytes'] / 1e6:.1f} MB"
            + (f", {reference.key} {rec['score']:.4f}" if validator is not None else "")
            + f", mean |logit diff| vs fp32 {rec['mean_abs_logit_difference']:.4g}")
        return rec

    def key(r: dict):  # higher is better: the metric first, then closeness to the fp32 graph
        return (round(r.get("score", 0.0), 6), -r["mean_abs_logit_difference"])

    pt, pc = trial(False, False), trial(True, False)
    linear = max((pt, pc), key=key)
    emb = trial(linear["per_channel"], True)
    if validator is not None:
        keep_emb = emb["score"] >= linear["score"] - EMBEDDINGS_TOLERANCE / 100
        why = (f"validation {reference.key} {emb['score']:.4f} with quantized embeddings vs {linear['score']:.4f} "
               f"without (kept when the loss is at most {EMBEDDINGS_TOLERANCE} point)")
    else:
        keep_emb = DEFAULT_EMBEDDINGS
        why = "no --validation: the default measured on SST-2 (benchmarks/onnx_speed.py)"
    if emb["bytes"] >= linear["bytes"]:
        keep_emb, why = False, "quantizing the embeddings did not make the file smaller"
    chosen = emb if keep_emb else linear
    refused = None
    if validator is not None:
        floor = reference.score - max_drop / 100
        if chosen["score"] < floor:
            passing = [r for r in tried if r["score"] >= floor]
            if not passing:
                best = max(tried, key=key)
                refused = (f"the int8 model is refused: validation {reference.key} {best['score']:.4f} against "
                           f"{reference.score:.4f} for the torch model ({(best['score'] - reference.score) * 100:+.2f} "
                           f"points; --max-drop {max_drop:g}); nothing was written. Export without --quantize, or "
                           "pass a larger --max-drop")
            else:
                chosen = max(passing, key=key)
                why += f"; the best variant within --max-drop {max_drop:g} kept"
    report = {
        "checked_on_validation": validator is not None,
        "per_channel": chosen["per_channel"] if not refused else None,
        "embeddings": chosen["embeddings"] if not refused else None,
        "embeddings_choice": why,
        "embedding_bytes_saved": linear["bytes"] - emb["bytes"],
        "candidates": [{k: v for k, v in r.items() if not k.startswith("_")} for r in tried],
    }
    if refused:
        raise QuantizationRefused(refused, report)
    report["_validation"] = chosen.get("_validation")
    return chosen["_path"], report


class QuantizationRefused(DataError):
    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report

__all__ = ["require_extra", "detect_kind", "load_torch_model", "export_graph", "optimize_graph", "sample_features",
           "logit_difference", "Validator", "Validation", "quantize", "choose_int8", "QuantizationRefused", "OPSET",
           "ONNX_FILE", "EXPORT_REPORT", "OnnxModel", "SAMPLES", "KINDS", "missing_packages"]

