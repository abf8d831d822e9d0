"""Run outputs and their life: the output directory (resume / refuse / overwrite), atomic writes, JSON,
prediction files, the command line that made a run; and for every writer the same few primitives:
a directory staged beside its place and swapped in (:class:`StagedDir`), a lock on an output
(:class:`OutputLock`), a killed writer told by its pid (:func:`pid_alive`), and a signal ending a writer
in one line (:func:`exit_on_signal`).

Nothing half-written is ever left looking complete: final model files go through a temp dir and are
moved in with the config last; directory outputs are staged and renamed into place; JSON, text and
prediction files are written beside and renamed.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .distributed import is_main_process, wait_for_everyone
from .errors import UsageError, raise_no_room
from .log import get_logger

log = get_logger()

CHECKPOINTS = "checkpoints"
TRAINING_LOG = "training_log.jsonl"
METRICS = "metrics.json"
TEACHER_OUTPUTS = "teacher_outputs"  # distill's teacher pass, kept while the run trains (commands/distill.py)
# files an interrupted run leaves besides checkpoints; their presence alone does not make a dir "used"
_RESUMABLE_LEFTOVERS = {"bertkit_config.yaml", "tokenized", CHECKPOINTS, TRAINING_LOG, ".stop", TEACHER_OUTPUTS}


def find_checkpoint(output: Path) -> Path | None:
    """The newest complete Trainer checkpoint under ``output/checkpoints``."""
    ckdir = output / CHECKPOINTS
    if not ckdir.is_dir():
        return None
    cks = [p for p in ckdir.glob("checkpoint-*") if p.is_dir() and _complete_checkpoint(p)]
    if not cks:
        return None
    return max(cks, key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)


def _complete_checkpoint(ck: Path) -> bool:
    """The Trainer writes ``trainer_state.json`` last (bertkit's trainers after every process's RNG state):
    a checkpoint whose state file is missing or cut short was being written when its run was killed."""
    try:
        json.loads((ck / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


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
            raise UsageError(f"--output {output}: not empty and not a resumable run; "
                             "pass --overwrite or choose another dir")
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


# ------------------------------------------------------------------------------------------------
# An output's life: staged beside its place and swapped in, one writer at a time, killed writers'
# leftovers removed, a signal ending a writer in one line
# ------------------------------------------------------------------------------------------------

def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, killed but not yet reaped, counts as dead;
    a process of another user as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_staging(out: Path) -> None:
    """Remove the staging dirs ``.NAME.tmp-[CMD-]PID`` beside ``out`` whose writer is dead (killed, even by
    SIGKILL): they never count as output, which appears only by rename once complete.  A live writer's
    dir is left alone."""
    if not out.parent.is_dir():
        return
    for d in out.parent.glob(f".{glob.escape(out.name)}.tmp-*"):
        pid = d.name.rsplit("-", 1)[-1]
        if d.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            log.warning(f"Removing {d}: the partial output of an interrupted run (process {pid})")
            shutil.rmtree(d, ignore_errors=True)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """The finished dir ``tmp`` replaces ``out`` by one rename (an old ``out`` is moved aside first, then
    deleted): a reader sees the old output or the new one, never a mix."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class StagedDir:
    """A directory output written in a staging dir beside it and swapped into place on success::

        with StagedDir(out, "export") as tmp:
            tmp.mkdir()
            ...write into tmp...

    The staging dir is ``.NAME.tmp-CMD-PID``: the pid lets a later run tell a killed writer's leftovers,
    which it removes on entry, from a live writer's.  The writer creates it (copytree and build_tokenized
    create their directory themselves).  On an exception it is removed.  ``staging`` names a fixed staging
    dir instead, which the next run finds again: ``keep(staging)`` says whether an interrupted run's is
    worth continuing; it is then kept on an interruption and reused on entry (any other is removed)."""

    def __init__(self, out: Path, command: str, staging: Path | None = None,
                 keep: Callable[[Path], bool] | None = None):
        self.out = Path(out)
        self.path = staging or self.out.parent / f".{self.out.name}.tmp-{command}-{os.getpid()}"
        self.keep = keep

    def __enter__(self) -> Path:
        remove_stale_staging(self.out)
        if self.path.exists() and not (self.keep and self.keep(self.path)):
            shutil.rmtree(self.path)
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            _swap_into_place(self.path, self.out)
        elif not (issubclass(exc_type, KeyboardInterrupt) and self.keep and self.keep(self.path)):
            shutil.rmtree(self.path, ignore_errors=True)


class OutputLock:
    """An exclusive lock (``flock``) on the file ``path`` for a ``with`` block: one writer at a time.

    With ``busy`` (the error to give), a lock held by another process is a UsageError at once, and the lock
    file is removed on release (it sits beside an output); without, the lock is waited for and its file
    stays (processes taking turns share it)."""

    def __init__(self, path: Path, busy: str | None = None):
        self.path = Path(path)
        self.busy = busy
        self._fh = None

    def __enter__(self) -> OutputLock:
        import fcntl  # POSIX only: imported when a lock is taken, so the rest of the module imports anywhere

        fh = open(self.path, "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (fcntl.LOCK_NB if self.busy else 0))
        except OSError:
            fh.close()
            if self.busy:
                raise UsageError(self.busy) from None
            raise
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        if self.busy:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
        self._fh = None


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def exit_on_signal(message: Callable[[str], str]):
    """For a writer: inside the block SIGTERM (a scheduler's kill, a closed session) unwinds like Ctrl-C,
    so the ``finally``/``with`` cleanups run (a StagedDir inside removes its staging dir) instead of an
    abrupt exit.  An interruption then logs ``message(signal name)``, one line, and exits 143 (SIGTERM) or
    130 (Ctrl-C), as the training commands do; raised here because Typer, outside standalone mode, turns a
    KeyboardInterrupt into a return value that cli.main drops (exit 0)."""
    main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    old = signal.signal(signal.SIGTERM, _raise_interrupt) if main else None
    try:
        yield
    except KeyboardInterrupt as e:
        sig = signal.SIGTERM if str(e) == f"signal {int(signal.SIGTERM)}" else signal.SIGINT
        log.warning(message(sig.name))
        raise SystemExit(128 + int(sig)) from None
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically: beside it first (named by the pid, so processes writing the same file
    do not share a temp file), then renamed: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise_no_room(e, path)
        raise
    os.replace(tmp, path)


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:
        pass
    return str(o)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def write_records(records: Iterable[dict], out_path: str, flatten: Callable[[dict], dict] | None = None) -> int:
    """Records as JSON lines (``-`` is stdout), or CSV/TSV by extension with each record passed through
    ``flatten`` first (one column per scalar).  Records are consumed as they come (memory stays flat for
    any number); files are written beside and renamed when complete.  Returns the number of records."""
    if out_path == "-":
        n = 0
        for r in records:
            sys.stdout.write(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n")
            n += 1
        sys.stdout.flush()
        return n
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    ext = path.suffix.lower()
    n = 0
    try:
        if ext in (".csv", ".tsv"):
            # the columns are known only once every record is seen (e.g. one column per [MASK]): flattened
            # rows go to a scratch file first, then into the CSV under the union of their columns
            scratch = path.with_name(f".{path.name}.rows-{os.getpid()}")
            fields: dict[str, None] = {}
            try:
                with open(scratch, "w", encoding="utf-8") as fh:
                    for r in records:
                        n += 1
                        row = flatten(r) if flatten else r
                        fields.update(dict.fromkeys(row))
                        fh.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
                with open(scratch, encoding="utf-8") as src, open(tmp, "w", encoding="utf-8", newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=list(fields), delimiter="\t" if ext == ".tsv" else ",")
                    w.writeheader()
                    w.writerows(json.loads(line) for line in src)
            finally:
                scratch.unlink(missing_ok=True)
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                for r in records:
                    fh.write(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n")
                    n += 1
        os.replace(tmp, path)
    except Exception as e:
        raise_no_room(e, path)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return n


def append_jsonl(path: Path, records: Iterable[dict]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n")


def command_line(drop: tuple[str, ...] = ()) -> str:
    """The command that started this process, as a user would retype it, without the flags in ``drop``
    (e.g. ``--overwrite``, which in a resume command would delete the checkpoint to resume from)."""
    argv = list(sys.argv)
    ours = not argv or argv[0].endswith(("bertkit", "__main__.py"))
    prog = "bertkit" if ours else argv[0]
    return " ".join([prog] + [shlex.quote(a) for a in argv[1:] if a not in drop])


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
