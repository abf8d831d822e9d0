"""bertkit tokenize: raw files -> a packed (mlm) or per-example (cls) dataset, tokenizer and manifest."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import threading
from pathlib import Path

from ..config import save_config
from ..errors import UsageError
from ..log import get_logger
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
    _remove_stale_tmp(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A fixed name, not one per process: an interrupted mlm run leaves its finished shards there and
    # the same command continues from them (build_tokenized checks inputs, parameters and tokenizer).
    tmp = out.with_name(f".{out.name}.partial")
    lock = _lock(out)
    if tmp.exists() and not (tmp / RESUME).exists():
        shutil.rmtree(tmp)  # stopped before its first finished shard: nothing to continue from
    # SIGTERM (a scheduler's kill, a closed session) unwinds like Ctrl-C, so the partial output is
    # handled below instead of being left behind by an abrupt exit.
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    try:
        manifest = build_tokenized(cfg.data, cfg.tokenizer, cfg.task, tmp, flag="INPUT")
        save_config(cfg, tmp, "tokenize")
    except BaseException as e:
        interrupted = isinstance(e, KeyboardInterrupt)
        if interrupted and (tmp / RESUME).exists():
            done = json.loads((tmp / RESUME).read_text(encoding="utf-8")).get("bytes_done", 0)
            log.warning(f"bertkit tokenize: interrupted; {out} was not written. The finished part "
                        f"({done / 1e6:,.1f} MB of input) is kept in {tmp}: run the same command again to continue")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            if interrupted:
                log.warning(f"bertkit tokenize: interrupted; nothing was written to {out} (the partial output "
                            "was removed); run the same command again to start over")
        if interrupted:
            # exit 143 (SIGTERM) / 130 (Ctrl-C) here: Typer, outside standalone mode, turns a
            # KeyboardInterrupt into a return value that cli.main drops (exit 0)
            raise SystemExit(143 if str(e) == f"signal {int(signal.SIGTERM)}" else 130) from None
        raise
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        _unlock(lock)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
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


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _remove_stale_tmp(out: Path) -> None:
    """Remove ``.NAME.tmp-PID`` dirs next to ``out`` left by a killed run (PID no longer alive): they
    never count as output (the output dir only appears, by rename, once complete)."""
    for d in out.parent.glob(f".{out.name}.tmp-*") if out.parent.is_dir() else ():
        pid = d.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # another tokenize is writing it
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        log.warning(f"Removing {d}: the partial output of an interrupted run (process {pid})")
        shutil.rmtree(d, ignore_errors=True)


def _lock(out: Path):
    """Hold ``.NAME.lock`` next to ``out`` for the run: two tokenize runs must not share a partial dir."""
    fh = open(out.with_name(f".{out.name}.lock"), "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise UsageError(f"--output {out}: another bertkit tokenize is writing it; "
                         "wait for it or choose another dir") from None
    return fh


def _unlock(fh) -> None:
    try:
        os.unlink(fh.name)
    except OSError:
        pass
    fh.close()
