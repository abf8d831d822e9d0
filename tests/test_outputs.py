"""bertkit.outputs: an output's life (staging dir swapped into place, stale staging dirs of dead writers, the lock
on an output, a signal ending a writer) and atomic writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import dead_pid

from bertkit.errors import UsageError
from bertkit.outputs import OutputLock, StagedDir, exit_on_signal, pid_alive, remove_stale_staging, write_text


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # exited, not yet reaped (wait() is called below): a zombie, dead all the same
        for _ in range(3000):
            if Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.01)
        assert not pid_alive(zombie.pid)
    finally:
        zombie.wait()


def test_staged_dir_swaps_into_place_and_replaces_the_old_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with StagedDir(out, "export") as tmp:
        assert tmp.name == f".out.tmp-export-{os.getpid()}" and tmp.parent == tmp_path
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
        assert (out / "old.txt").exists()  # the old output stands until the new one is complete
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging or old dir left


def test_staged_dir_removed_on_failure_old_output_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), StagedDir(out, "export") as tmp:
        tmp.mkdir()
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("midway")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "old.txt").exists()


def test_staged_dir_kept_on_interruption_when_resumable(tmp_path):
    out, partial = tmp_path / "out", tmp_path / ".out.partial"
    resumable = lambda d: (d / "resume.json").exists()  # noqa: E731
    with pytest.raises(KeyboardInterrupt), StagedDir(out, "tokenize", staging=partial, keep=resumable) as tmp:
        tmp.mkdir()
        (tmp / "resume.json").write_text("{}")
        raise KeyboardInterrupt
    assert (partial / "resume.json").exists() and not out.exists()
    with StagedDir(out, "tokenize", staging=partial, keep=resumable) as tmp:
        assert (tmp / "resume.json").exists()  # the next run continues from it
    assert (out / "resume.json").exists() and not partial.exists()
    # an error (not an interruption) removes even a resumable staging dir
    with pytest.raises(ValueError), StagedDir(out, "tokenize", staging=partial, keep=resumable) as tmp:
        tmp.mkdir()
        (tmp / "resume.json").write_text("{}")
        raise ValueError
    assert not partial.exists()


def test_stale_staging_dirs_of_dead_writers_are_removed(tmp_path):
    out = tmp_path / "out"
    dead = tmp_path / f".out.tmp-export-{dead_pid()}"
    old_style = tmp_path / f".out.tmp-{dead_pid()}"
    live = tmp_path / f".out.tmp-export-{os.getppid()}"  # a live writer's
    other = tmp_path / f".other.tmp-export-{dead_pid()}"  # another output's
    for d in (dead, old_style, live, other):
        d.mkdir()
    remove_stale_staging(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
    # StagedDir does the same on entry
    dead.mkdir()
    with StagedDir(out, "export") as tmp:
        tmp.mkdir()
    assert not dead.exists() and live.exists() and out.is_dir()


def test_output_lock_busy_is_a_usage_error(tmp_path):
    lock = tmp_path / ".out.lock"
    with OutputLock(lock, busy="--output out: another writer"):
        with pytest.raises(UsageError, match="another writer"), OutputLock(lock, busy="--output out: another writer"):
            pass
    assert not lock.exists()  # a lock beside an output leaves no file
    with OutputLock(lock, busy="--output out: another writer"):  # free again
        pass


def test_output_lock_waits_without_busy(tmp_path):
    lock = tmp_path / "study.lock"
    order = []

    def second():
        with OutputLock(lock):
            order.append("second")

    with OutputLock(lock):
        t = threading.Thread(target=second)
        t.start()
        t.join(timeout=0.5)
        order.append("first")  # the other holder waits until this one releases
    t.join(timeout=30)
    assert order == ["first", "second"] and lock.exists()


def test_exit_on_signal_sigterm_cleans_up_says_one_line_exits_143(tmp_path):
    out = tmp_path / "out"
    said = []

    def message(sig: str) -> str:
        said.append((sig, list(tmp_path.iterdir())))  # what is left when the line is written
        return f"interrupted ({sig})"

    with pytest.raises(SystemExit) as e, exit_on_signal(message), StagedDir(out, "export") as tmp:
        tmp.mkdir()
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10**6):  # the handler raises at one of the next bytecodes
            pass
    assert e.value.code == 143 and said == [("SIGTERM", [])]  # the staging dir was removed first
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit) as e, exit_on_signal(message):
        raise KeyboardInterrupt  # Ctrl-C
    assert e.value.code == 130 and said[-1][0] == "SIGINT"


def test_exit_on_signal_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with exit_on_signal(lambda sig: ""):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_write_text_is_atomic(tmp_path):
    path = tmp_path / "a.json"
    write_text(path, "one")
    write_text(path, "two")
    assert path.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_the_resume_command_drops_overwrite(monkeypatch):
    """Rerun as printed, a resume command with --overwrite would delete the checkpoint it resumes from."""
    from bertkit.outputs import command_line

    monkeypatch.setattr("sys.argv", ["/x/bin/bertkit", "finetune-cls", "--output", "runs/a b", "--overwrite"])
    assert command_line() == "bertkit finetune-cls --output 'runs/a b' --overwrite"
    assert command_line(drop=("--overwrite",)) == "bertkit finetune-cls --output 'runs/a b'"
