"""bertkit tokenize: raw files -> a packed (mlm) or per-example (cls) dataset, tokenizer and manifest."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..config import save_config
from ..errors import UsageError
from ..log import get_logger
from ..schemas import TokenizeConfig
from ..summary import print_summary
from ..tokenization import DATASET_DIR, MANIFEST, TOKENIZER_DIR, build_tokenized

log = get_logger()


def run(cfg: TokenizeConfig) -> dict:
    cfg.validate()
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {cfg.output}: a file, not a directory; choose another path")
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise UsageError(f"--output {cfg.output}: not empty; pass --overwrite to replace it or choose another dir")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        manifest = build_tokenized(cfg.data, cfg.tokenizer, cfg.task, tmp, flag="INPUT")
        save_config(cfg, tmp, "tokenize")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    c = manifest["counts"]
    print_summary("tokenize", [
        ("examples", f"{c['examples']:,}" + (f" in {c['documents']:,} documents" if c.get("documents") else "")),
        ("tokens", f"{c['tokens']:,}"),
        ("blocks" if cfg.task == "mlm" else "rows", f"{c['blocks']:,} x {cfg.data.max_seq_length} max tokens"),
        ("packing efficiency", f"{c['packing_efficiency']:.1%}"),
        ("vocabulary", _vocabulary(manifest["tokenizer"]["vocab_size"], manifest["tokenizer"]["source"], cfg.tokenizer)),
        ("time", f"{manifest['seconds']:.1f}s"),
        ("dataset", str(out / DATASET_DIR)),
        ("tokenizer", str(out / TOKENIZER_DIR)),
        ("manifest", str(out / MANIFEST)),
    ])
    return manifest


def _vocabulary(size: int, source: str, tok_cfg) -> str:
    text = f"{size:,} ({source})"
    if tok_cfg.train and size < tok_cfg.vocab_size:
        text += (f"; {tok_cfg.vocab_size:,} asked, but the corpus supports only {size:,} at min_frequency "
                 f"{tok_cfg.min_frequency}")
    return text
