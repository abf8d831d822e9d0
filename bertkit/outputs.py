"""Run outputs: the output directory (resume / refuse / overwrite), atomic writes, JSON, prediction
files, and the command line that made a run.

Nothing half-written is ever left looking complete: final model files go through a temp dir and are
moved in with the config last; JSON and prediction files are written beside and renamed.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from .distributed import is_main_process, wait_for_everyone
from .errors import UsageError, raise_no_room
from .log import get_logger

log = get_logger()

CHECKPOINTS = "checkpoints"
TRAINING_LOG = "training_log.jsonl"
METRICS = "metrics.json"
# files an interrupted run leaves besides checkpoints; their presence alone does not make a dir "used"
_RESUMABLE_LEFTOVERS = {"bertkit_config.yaml", "tokenized", CHECKPOINTS, TRAINING_LOG, ".stop"}


def find_checkpoint(output: Path) -> Path | None:
    """The newest complete Trainer checkpoint under ``output/checkpoints``."""
    ckdir = output / CHECKPOINTS
    if not ckdir.is_dir():
        return None
    cks = [p for p in ckdir.glob("checkpoint-*") if p.is_dir() and (p / "trainer_state.json").exists()]
    if not cks:
        return None
    return max(cks, key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)


def prepare_output(output: str | None, overwrite: bool, resume: str) -> tuple[Path, str | None]:
    """Validate ``--output``; returns (path, checkpoint to resume from or None).  A finished run is
    refused unless ``overwrite``; an interrupted one resumes from its newest checkpoint (``--resume auto``)."""
    if not output:
        raise UsageError("--output is required: the directory to write the model to")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {output}: a file, not a directory; choose another path")
    resume_from: str | None = None
    if resume not in ("auto", "no", "never", "false"):
        ck = Path(resume)
        if not (ck / "trainer_state.json").exists():
            raise UsageError(f"--resume {resume}: not a checkpoint directory (no trainer_state.json)")
        resume_from = str(ck)
    if out.is_dir() and any(out.iterdir()):
        ck = find_checkpoint(out)
        if overwrite:
            if is_main_process():
                shutil.rmtree(out)
            wait_for_everyone()
        elif resume_from:
            pass
        elif (out / METRICS).exists():
            hint = f", or --resume {ck} to train on from its last checkpoint" if ck else ""
            raise UsageError(f"--output {output}: holds a finished run; pass --overwrite to replace it{hint}")
        elif ck is not None and resume == "auto":
            resume_from = str(ck)
            log.info(f"Resuming from {ck} (pass --overwrite to start over)")
        elif any(p.name not in _RESUMABLE_LEFTOVERS and not p.name.startswith(".tmp") for p in out.iterdir()):
            raise UsageError(f"--output {output}: not empty and not a resumable run; pass --overwrite or choose another dir")
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
    wait_for_everyone()
    return out, resume_from


def write_final(output: Path, save_fn: Callable[[Path], None], extra_files: dict[str, str] | None = None) -> None:
    """Write the final model atomically: into a temp dir first, then move each file into place
    (the config last), so a crash never leaves a half-written model that looks complete."""
    if not is_main_process():
        return
    tmp = output / f".tmp-final-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        save_fn(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        names = sorted(os.listdir(tmp), key=lambda n: (n == "config.json", n == METRICS, n))
        for name in names:
            dst = output / name
            if dst.is_dir():
                shutil.rmtree(dst)
            os.replace(tmp / name, dst)
    except Exception as e:
        raise_no_room(e, output)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:
        pass
    return str(o)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_records(records: list[dict], out_path: str, flatten: Callable[[dict], dict] | None = None) -> int:
    """Records as JSON lines (``-`` is stdout), or CSV/TSV by extension with each record passed through
    ``flatten`` first (one column per scalar).  Files are written beside and renamed when complete."""
    if out_path == "-":
        for r in records:
            sys.stdout.write(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n")
        sys.stdout.flush()
        return len(records)
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    ext = path.suffix.lower()
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            if ext in (".csv", ".tsv"):
                rows = [flatten(r) if flatten else r for r in records]
                fields = list(dict.fromkeys(k for r in rows for k in r))
                w = csv.DictWriter(fh, fieldnames=fields, delimiter="\t" if ext == ".tsv" else ",")
                w.writeheader()
                w.writerows(rows)
            else:
                for r in records:
                    fh.write(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n")
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        raise_no_room(e, path)
        raise
    os.replace(tmp, path)
    return len(records)


def append_jsonl(path: Path, records: Iterable[dict]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n")


def command_line() -> str:
    """The command that started this process, as a user would retype it."""
    argv = list(sys.argv)
    prog = "bertkit" if argv and (argv[0].endswith("bertkit") or argv[0].endswith("__main__.py")) else argv[0] if argv else "bertkit"
    return " ".join([prog] + [shlex.quote(a) for a in argv[1:]])


def check_writable(path: str | Path | None, flag: str, kind: str = "dir") -> list[str]:
    """``[problem]`` when ``path`` cannot be written (``kind`` "dir": a directory a command creates and
    fills; "file": one file, or a directory that will hold the file), else ``[]``; checked before any
    work, so a command never runs for minutes and then fails to write.  The nearest existing ancestor must
    be a writable directory: os.access answers for permissions, and a probe file created and removed
    there answers for filesystems that refuse writes whatever the permissions say (/proc, read-only
    mounts; and root, whom os.access always lets through)."""
    import tempfile

    if not path or str(path) == "-":
        return []
    p = Path(path).expanduser().absolute()
    if p.exists():
        if kind == "dir" and not p.is_dir():
            return [f"{flag} {path}: a file, not a directory; choose another path"]
        if p.is_file() and not os.access(p, os.W_OK):
            return [f"{flag} {path}: the file is not writable"]
    ancestor = p if p.is_dir() else p.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return [f"{flag} {path}: {ancestor} is a file, not a directory"]
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return [f"{flag} {path}: no permission to write in {ancestor}"]
    try:
        fd, probe = tempfile.mkstemp(prefix=".bertkit-probe-", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return [f"{flag} {path}: {ancestor} does not accept new files ({e.strerror or e})"]
    return []
