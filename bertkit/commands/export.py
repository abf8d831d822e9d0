"""bertkit export: a model dir -> an ONNX dir that ``bertkit predict``/``evaluate`` (and plain onnxruntime)
run, checked against the torch model.  The stages live in :mod:`bertkit.onnx_export`.

Stages: check the inputs -> trace to ONNX -> optimise for CPU -> compare with torch on sample inputs ->
(--validation) score both with the task kind's scoring (what `bertkit evaluate` runs) -> (--quantize int8)
quantize, choose, refuse when the metric drops -> write everything into a staging dir and swap it into place
(outputs.StagedDir; SIGTERM or Ctrl-C leaves nothing, says so in one line and exits 143 / 130).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UsageError
from ..log import get_logger, quiet
from ..outputs import StagedDir, exit_on_signal
from ..schemas import ExportConfig
from ..summary import print_summary

log = get_logger()


def _say(msg: str) -> None:
    if not quiet():
        print(msg, file=sys.stderr, flush=True)


@dataclass
class Source:
    """The model dir to export, opened: its config, tokenizer, task kind and inference length."""

    path: Path
    out: Path
    config: Any
    tokenizer: Any
    task: Any  # a bertkit.tasks.Task
    max_len: int

    @property
    def kind(self) -> str:
        return self.task.name


def open_source(cfg: ExportConfig) -> Source:
    from .. import tasks
    from ..inference import inference_length
    from ..loading import open_checkpoint
    from ..modeling import check_compatible
    from ..onnx_export import require_extra

    require_extra()
    cfg.validate()
    mdir, config, tok = open_checkpoint(cfg.model, cfg.allow_pickle)
    out = Path(cfg.output).expanduser()
    if out.resolve() == mdir.resolve():
        raise UsageError(f"--output {cfg.output}: the model directory itself; choose another directory")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {cfg.output}: a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise UsageError(f"--output {cfg.output}: not empty; pass --overwrite to replace it or choose another dir")
    max_len = inference_length(config, cfg.max_seq_length)
    check_compatible(config, tok, max_len, "--model")
    return Source(mdir, out, config, tok, tasks.detect(config)(config, tok, max_len, mdir), max_len)


def run(cfg: ExportConfig) -> dict:
    from .. import onnx_export as ox

    t_start = time.time()
    src = open_source(cfg)
    # bad data fails before the export
    validation = src.task.read_labelled(cfg.validation, cfg, "--validation") if cfg.validation else None
    scorer = (lambda model_fn: src.task.score(model_fn, validation, cfg)) if validation is not None else None
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    src.out.parent.mkdir(parents=True, exist_ok=True)
    report: dict = {"bertkit_version": __version__, "kind": src.kind, "source_model": str(src.path), "opset": ox.OPSET,
                    "exporter": "torch.onnx.export (TorchScript tracer), eager attention", "quantize": cfg.quantize}
    with exit_on_signal(lambda sig: f"bertkit export: interrupted ({sig}); nothing was written to {src.out}"), \
            StagedDir(src.out, "export") as tmp:
        (tmp / "work").mkdir(parents=True)
        torch_fn, fp32 = export_fp32(src, tmp / "work", report)
        onnx_fp32 = ox.OnnxModel(fp32, threads=cfg.threads)
        windows = compare_on_samples(src, torch_fn, onnx_fp32, report)
        ref_val = validate_both(cfg, torch_fn, onnx_fp32, src.task, scorer, report)
        if validation is not None:
            report["validation"]["examples"] = len(validation)
        final = quantize_int8(cfg, src, fp32, tmp / "work", onnx_fp32, windows, scorer, ref_val, report) \
            if cfg.quantize == "int8" else fp32
        del onnx_fp32
        write_export(src, final, tmp, report, t_start)
    print_summary("export", summary_rows(src, report))
    return report


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------

def export_fp32(src: Source, work: Path, report: dict):
    """Trace the torch model to ONNX and optimise the graph for CPU; returns (the torch model as a
    ModelFn, the fp32 path)."""
    import torch

    from .. import onnx_export as ox
    from ..tasks import torch_model_fn

    _say(f"export: tracing {src.kind} model {src.path} to ONNX (opset {ox.OPSET})")
    model = ox.load_torch_model(src.task, src.path)
    raw = work / "raw.onnx"
    report["inputs"] = ox.export_graph(model, src.tokenizer, src.task, raw)
    report["outputs"] = list(src.task.outputs)
    fp32 = work / "fp32.onnx"
    report["fused_operators"] = ox.optimize_graph(raw, fp32, src.config)
    raw.unlink()
    report["fp32_bytes"] = fp32.stat().st_size
    return torch_model_fn(model, torch.device("cpu")), fp32


def compare_on_samples(src: Source, torch_fn, onnx_fp32, report: dict):
    """Max |output difference| against torch on built-in sample inputs (English and Chinese, short and
    long); returns their windows (int8 candidates are compared on them too)."""
    from .. import onnx_export as ox

    windows = ox.sample_windows(src.task, ox.SAMPLES)
    report["sample_inputs"] = {"texts": len(ox.SAMPLES), "source": "built-in",
                               **ox.output_difference(src.task, torch_fn, onnx_fp32, windows)}
    _say(f"export: fp32 {report['fp32_bytes'] / 1e6:.1f} MB, max |logit diff| vs torch "
         f"{report['sample_inputs']['max_abs_logit_difference']:.3g} on {len(ox.SAMPLES)} sample inputs")
    return windows


def validate_both(cfg: ExportConfig, torch_fn, onnx_fp32, task, scorer, report: dict):
    """With --validation: both models' metrics and their agreement; returns the torch model's score."""
    if scorer is None:
        return None
    ref_val = scorer(torch_fn)
    val = scorer(onnx_fp32)
    report["validation"] = {"file": cfg.validation, "metric": ref_val.key, "torch": ref_val.metrics,
                            "onnx_fp32": val.metrics, "onnx_fp32_agreement": task.agreement(ref_val, val)}
    _say(f"export: validation {ref_val.key} torch {ref_val.score:.4f}, onnx fp32 {val.score:.4f}")
    return ref_val


def quantize_int8(cfg: ExportConfig, src: Source, fp32: Path, work: Path, onnx_fp32, windows, scorer, ref_val,
                  report: dict) -> Path:
    """The int8 variant chosen on the validation metric (refused, DataError, when it drops more than
    --max-drop: nothing is written); without --validation the conservative variant, its accuracy unmeasured."""
    from .. import onnx_export as ox

    if scorer is None:
        _say("export: int8 without --validation: accuracy is NOT measured; keeping the conservative variant "
             "(per-channel weights, fp32 embeddings). Pass --validation FILE to measure it and choose a smaller one")
    final, qrep = ox.choose_int8(fp32, work, onnx_fp32, windows, src.task, scorer, ref_val,
                                 cfg.max_drop, cfg.threads, log=_say)
    qval = qrep.pop("_validation", None)
    report["int8"] = qrep
    chosen = next(c for c in qrep["candidates"] if c["per_channel"] == qrep["per_channel"]
                  and c["embeddings"] == qrep["embeddings"])
    report["int8_bytes"] = chosen["bytes"]
    report["int8_size_ratio"] = round(chosen["bytes"] / report["fp32_bytes"], 4)
    report["sample_inputs"]["int8_vs_fp32"] = {k: chosen[k] for k in ("max_abs_logit_difference",
                                                                       "mean_abs_logit_difference")}
    if qval is not None:
        report["validation"]["onnx_int8"] = qval.metrics
        report["validation"]["onnx_int8_agreement"] = src.task.agreement(ref_val, qval)
    return final


def write_export(src: Source, final: Path, tmp: Path, report: dict, t_start: float) -> None:
    """model.onnx, the tokenizer, config.json (bertkit's inference settings ride along in it) and
    export.json, into ``tmp``."""
    from .. import onnx_export as ox

    shutil.move(final, tmp / ox.ONNX_FILE)
    shutil.rmtree(tmp / "work")
    # without the padding/truncation state the validation calls left on the backend: it would be saved in
    # tokenizer.json and apply to every plain `tokenizers` user of the dir (the lengths live in config.json)
    src.tokenizer.backend_tokenizer.no_padding()
    src.tokenizer.backend_tokenizer.no_truncation()
    src.tokenizer.save_pretrained(str(tmp))
    src.config.save_pretrained(str(tmp))
    report["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
    report["seconds"] = round(time.time() - t_start, 1)
    (tmp / ox.EXPORT_REPORT).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def summary_rows(src: Source, report: dict) -> list[tuple[str, str]]:
    from .. import onnx_export as ox

    rows = [("model", str(src.path)), ("kind", src.kind), ("opset", str(ox.OPSET)),
            ("fp32 size", f"{report['fp32_bytes'] / 1e6:.1f} MB")]
    if "int8_bytes" in report:
        q = report["int8"]
        rows.append(("int8 size", f"{report['int8_bytes'] / 1e6:.1f} MB ({report['int8_size_ratio']:.0%} of fp32; "
                                  f"{'per-channel' if q['per_channel'] else 'per-tensor'}, embeddings "
                                  f"{'quantized' if q['embeddings'] else 'fp32'})"))
    rows.append(("max |logit diff| fp32", f"{report['sample_inputs']['max_abs_logit_difference']:.3g}"))
    if "validation" in report:
        v = report["validation"]
        k = v["metric"]
        line = f"torch {v['torch'][k]:.4f}, onnx {v['onnx_fp32'][k]:.4f}"
        if "onnx_int8" in v:
            line += f", int8 {v['onnx_int8'][k]:.4f}"
        rows.append((f"validation {k}", line))
        agree = v.get("onnx_int8_agreement") or v["onnx_fp32_agreement"]
        for name, val in agree.items():
            if name.endswith("agreement"):
                rows.append((name.replace("_", " ") + (" (int8)" if "onnx_int8_agreement" in v else ""), f"{val:.4f}"))
    rows.append(("written", str(src.out)))
    return rows

