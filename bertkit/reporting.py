"""What a training run leaves for people: a Hugging Face model card (README.md) and curves.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from . import __version__
from .config import to_dict
from .log import get_logger
from .outputs import command_line

log = get_logger()


def pyplot(what: str):
    """matplotlib's pyplot rendering headless (Agg), or None (and a note naming ``what`` is skipped)
    when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info(f"matplotlib is not installed: no {what} (pip install 'bertkit[plots]')")
        return None
    return plt


def plot_curves(history: list[dict], path: Path, title: str) -> bool:
    """Training loss and eval metrics against steps."""
    plt = pyplot(path.name)
    if plt is None:
        return False
    train = [(r["step"], r["loss"]) for r in history if "loss" in r]
    timings = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
    evals = {k for r in history for k in r if k.startswith("eval_") and k not in timings}
    eval_keys = [k for k in ("eval_loss", "eval_accuracy", "eval_f1", "eval_masked_accuracy", "eval_pearsonr",
                             "eval_f1_micro") if k in evals]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if "eval_loss" in eval_keys:
        points = [(r["step"], r["eval_loss"]) for r in history if "eval_loss" in r]
        ax.plot(*zip(*points, strict=True), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    ax = axes[1]
    plotted = False
    for k in eval_keys:
        if k == "eval_loss":
            continue
        pts = [(r["step"], r[k]) for r in history if k in r]
        ax.plot(*zip(*pts, strict=True), "o-", label=k.replace("eval_", ""))
        plotted = True
    if not plotted:
        lr = [(r["step"], r["learning_rate"]) for r in history if "learning_rate" in r]
        if lr:
            ax.plot(*zip(*lr, strict=True), label="learning rate")
            plotted = True
    ax.set_xlabel("step")
    ax.set_title("eval metrics" if eval_keys[1:] else "learning rate")
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def model_card(out: Path, command: str, cfg, metrics: dict, extra: dict | None = None) -> str:
    extra = extra or {}
    task_tag = extra.get("pipeline_tag") or ("fill-mask" if command == "pretrain-mlm" else "text-classification")
    scalar = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    front = {
        "library_name": "transformers",
        "pipeline_tag": task_tag,
        "tags": ["bertkit", "bert", task_tag],
        "model-index": [{"name": out.name, "results": [{
            "task": {"type": task_tag},
            "metrics": [{"type": k, "value": v} for k, v in scalar.items()
                        if k.startswith(("eval_", "test_", "perplexity", "masked_accuracy", "accuracy", "f1"))],
        }]}],
    }
    rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in scalar.items())
    hp = yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True).strip()
    purpose = extra.get("purpose") or ("a masked-language model: use it with `pipeline(\"fill-mask\")` "
               "or fine-tune it with `bertkit finetune-cls --model DIR`" if command == "pretrain-mlm" else
               "a text classifier: use it with `pipeline(\"text-classification\")` or `bertkit predict --model DIR`")
    labels = ""
    if extra.get("labels"):
        labels = "\n## Labels\n\n" + ", ".join(f"`{n}`" for n in extra["labels"]) + "\n"
    return f"""---
{yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip()}
---

# {out.name}

This model was trained with [bertkit](https://pypi.org/project/bertkit/) {__version__} (`bertkit {command}`). It is
{purpose}.

## Reproduce

```bash
{command_line()}
```

The resolved configuration is in `bertkit_config.yaml`; rerun it with `bertkit {command} --config bertkit_config.yaml`.

## Data

{extra.get("data", "See `bertkit_config.yaml` for the input files.")}
{labels}
## Results

| metric | value |
|---|---|
{rows}

Training curves: `curves.png`; the per-step log: `training_log.jsonl`.

## Hyperparameters

```yaml
{hp}
```

## Intended use and limits

Trained for research and applications on data similar to its training data. It inherits the biases of
that data, was evaluated only on the held-out data above, and should be re-evaluated before use on other
domains or languages. Inputs longer than the model's maximum sequence length are truncated or windowed.
"""


def finish_run(out: Path, command: str, cfg, metrics: dict, history: list[dict], extra: dict | None = None) -> None:
    try:
        plot_curves(history, out / "curves.png", f"bertkit {command}: {out.name}")
    except Exception as e:  # noqa: BLE001 - a plot must never fail a finished run
        log.warning(f"could not draw curves.png ({e})")
    (out / "README.md").write_text(model_card(out, command, cfg, metrics, extra), encoding="utf-8")


def plot_confusion(cm: list[list[int]], labels: list[str], path: Path) -> bool:
    plt = pyplot(path.name)
    if plt is None:
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
