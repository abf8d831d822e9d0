"""bertkit evaluate: a saved model's metrics on a labelled file (classification) or on text (MLM),
without training.  Classification adds a confusion matrix (JSON and PNG)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..data import load_inputs, split_columns
from ..errors import UsageError
from ..evaluation import classification_metrics, confusion_matrix, perplexity
from ..labels import LabelSpace
from ..log import get_logger
from ..onnx_runtime import backend_of
from ..schemas import EvaluateConfig, TokenizerConfig
from ..summary import print_summary
from ..tokenization import DATASET_DIR, build_tokenized, is_tokenized_dir
from ..training import write_json
from .predict import (_Progress, _batches, classification_logits, load_model, long_text_of, open_model_dir,
                      pick_device)

log = get_logger()


def run(cfg: EvaluateConfig) -> dict:
    if not cfg.data:
        raise UsageError("--data is required: the file to evaluate on")
    mdir, config, task, tok, max_len = open_model_dir(cfg)
    device = pick_device(cfg.device, backend_of(cfg))
    out = Path(cfg.output) if cfg.output else mdir / f"eval-{Path(cfg.data).stem}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out}: a file, not a directory")
    if task == "classification":
        report = _classification(cfg, mdir, config, tok, device, max_len)
    else:
        report = _mlm(cfg, mdir, tok, device)
    out.mkdir(parents=True, exist_ok=True)
    cm = report.pop("confusion_matrix", None)
    write_json(out / "metrics.json", report)
    paths = [str(out / "metrics.json")]
    if cm is not None:
        write_json(out / "confusion_matrix.json", {"labels": report["labels"], "matrix": cm,
                                                   "rows": "reference", "columns": "prediction"})
        paths.append(str(out / "confusion_matrix.json"))
        if _plot_confusion(cm, report["labels"], out / "confusion_matrix.png"):
            paths.append(str(out / "confusion_matrix.png"))
    print(json.dumps(report, ensure_ascii=False))
    shown = [(k, f"{v:.4f}") for k, v in report.items() if isinstance(v, float)]
    print_summary("evaluate", [("model", str(mdir)), ("data", f"{cfg.data} ({report['examples']:,} examples)"),
                               *shown, ("written", ", ".join(paths))])
    return report


def _classification(cfg, mdir, config, tok, device, max_len: int) -> dict:
    space = LabelSpace.from_model_config(config)
    cols = {"--text-column": cfg.text_column, "--text-pair-column": cfg.text_pair_column,
            "--label-column": cfg.label_column}
    ds, _ = load_inputs([cfg.data], "--data", cols)
    labels = space.encode(ds[cfg.label_column], source=cfg.data, column=cfg.label_column)
    tcols = split_columns(cfg.text_column)
    from ..data import join_text

    texts = join_text(ds.to_dict(), tcols, len(ds))
    pairs = [str(x) for x in ds[cfg.text_pair_column]] if cfg.text_pair_column else None
    model = load_model(mdir, "classification", device, cfg.backend, cfg.threads)
    logits = classification_logits(model, tok, texts, pairs, cfg.batch_size, max_len, device, _Progress(len(texts)),
                                   **long_text_of(config))
    metrics = classification_metrics(space.problem, logits, np.asarray(labels), space.num_labels, space.threshold)
    report = {"task": "classification", "problem": space.problem, "examples": len(texts), **metrics}
    if space.problem == "single":
        report["labels"] = space.names
        report["confusion_matrix"] = confusion_matrix(logits.argmax(-1), np.asarray(labels), space.num_labels)
    return report


def _mlm(cfg, mdir, tok, device) -> dict:
    import datasets
    import torch

    from ..masking import MLMCollator
    from ..modeling import load_mlm_model

    block = cfg.max_seq_length or 128
    tmp = None
    if is_tokenized_dir(cfg.data):
        ds = datasets.load_from_disk(str(Path(cfg.data) / DATASET_DIR))
    else:
        from ..schemas import DataConfig

        tmp = Path(tempfile.mkdtemp(prefix="bertkit-eval-"))
        dcfg = DataConfig(inputs=[cfg.data], text_column=cfg.text_column, max_seq_length=block)
        build_tokenized(dcfg, TokenizerConfig(path=str(mdir)), "mlm", tmp / "tok", flag="--data")
        ds = datasets.load_from_disk(str(tmp / "tok" / DATASET_DIR))
    try:
        if backend_of(cfg) == "onnx":  # called with labels it returns what the sparse model does (loss, predictions)
            model = load_model(mdir, "fill-mask", device, cfg.backend, cfg.threads)
        else:
            model = load_mlm_model(mdir, sparse=True).to(device).eval()
        collator = MLMCollator(tok, eval_seed=cfg.seed)
        total_loss, total_tokens, correct = 0.0, 0, 0
        progress = _Progress(len(ds))
        with collator.evaluation(), torch.inference_mode():
            for idx in _batches(list(range(len(ds))), cfg.batch_size):
                rows = ds[idx[0]:idx[-1] + 1]["input_ids"]
                batch = collator([{"input_ids": r} for r in rows])
                batch = {k: v.to(device) for k, v in batch.items()}
                outp = model(**batch)
                n = int((batch["labels"] != -100).sum())
                total_loss += float(outp.loss) * n
                total_tokens += n
                correct += int(((outp.logits == batch["labels"]) & (batch["labels"] != -100)).sum())
                progress.update(len(rows))
        progress.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    loss = total_loss / max(total_tokens, 1)
    return {"task": "fill-mask", "examples": len(ds), "masked_tokens": total_tokens, "loss": loss,
            "perplexity": perplexity(loss), "masked_accuracy": correct / max(total_tokens, 1)}


def _plot_confusion(cm: list[list[int]], labels: list[str], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    arr = np.asarray(cm)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * n + 2), max(3.5, 0.5 * n + 1.5)))
    im = ax.imshow(arr, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(arr[i, j]), ha="center", va="center",
                        color="white" if arr[i, j] > arr.max() / 2 else "black", fontsize=8)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
