"""bertkit tokenize: raw files -> a packed (mlm) or per-example (cls) dataset, tokenizer and manifest."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import save_config
from ..errors import UsageError
from ..log import get_logger
from ..outputs import OutputLock, StagedDir, exit_on_signal
from ..schemas import TokenizeConfig
from ..summary import print_summary
from ..tokenization import DATASET_DIR, MANIFEST, RESUME, TOKENIZER_DIR, build_tokenized

log = get_logger()


def run(cfg: TokenizeConfig) -> dict:
    cfg.validate()
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {cfg.output}: a file, not a directory; choose another path")
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise UsageError(f"--output {cfg.output}: not empty; pass --overwrite to replace it or choose another dir")
    out.parent.mkdir(parents=True, exist_ok=True)
    # A fixed staging dir, not one per process: an interrupted mlm run leaves its finished shards there and
    # the same command continues from them (build_tokenized checks inputs, parameters and tokenizer); one
    # stopped before its first finished shard has nothing to continue from and is removed.
    partial = out.with_name(f".{out.name}.partial")
    busy = f"--output {out}: another bertkit tokenize is writing it; wait for it or choose another dir"
    with OutputLock(out.with_name(f".{out.name}.lock"), busy=busy), \
            exit_on_signal(lambda sig: _interrupted(out, partial)), \
            StagedDir(out, "tokenize", staging=partial, keep=lambda d: (d / RESUME).exists()) as tmp:
        manifest = build_tokenized(cfg.data, cfg.tokenizer, cfg.task, tmp, flag="INPUT")
        save_config(cfg, tmp, "tokenize")
    c = manifest["counts"]
    print_summary("tokenize", [
        ("examples", f"{c['examples']:,}" + (f" in {c['documents']:,} documents" if c.get("documents") else "")),
        ("tokens", f"{c['tokens']:,}"),
        ("blocks" if cfg.task == "mlm" else "rows", f"{c['blocks']:,} x {cfg.data.max_seq_length} max tokens"),
        ("packing efficiency", f"{c['packing_efficiency']:.1%}"),
        ("vocabulary", _vocabulary(manifest["tokenizer"]["vocab_size"], manifest["tokenizer"]["source"],
                                   cfg.tokenizer)),
        ("time", f"{manifest['seconds']:.1f}s"),
        ("throughput", _throughput(manifest)),
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


def _throughput(manifest: dict) -> str | None:
    t = manifest.get("throughput")
    if not t:
        return None
    return (f"{t['mb_per_s']:.2f} MB/s, {t['tokens_per_s']:,} tokens/s "
            f"({t['bytes'] / 1e6:,.1f} MB in {t['seconds']:.1f}s)")


def _interrupted(out: Path, partial: Path) -> str:
    """What an interrupted run left: the finished part of an mlm run, to continue from, or nothing."""
    if partial.exists():
        done = json.loads((partial / RESUME).read_text(encoding="utf-8")).get("bytes_done", 0)
        return (f"bertkit tokenize: interrupted; {out} was not written. The finished part ({done / 1e6:,.1f} MB "
                f"of input) is kept in {partial}: run the same command again to continue")
    return (f"bertkit tokenize: interrupted; nothing was written to {out} (the partial output was removed); "
            "run the same command again to start over")
