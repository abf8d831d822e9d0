"""The study every worker of a sweep shares, and the coordination of those workers.

Workers (processes, on one host or several) that give the same ``--storage`` share one Optuna study.
Trials are asked and told by hand (Optuna's ask-and-tell interface) rather than through
``study.optimize``, because the sweep needs three things ``optimize`` lacks: ``--trials`` as a total over
every worker (counted in the storage, under a file lock when the storage is a local file), a liveness
check that also covers the journal storage (which has no heartbeat in Optuna 5), and a per-trial sampler
seed so that workers starting together do not draw the same random parameters.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import to_dict
from ..errors import UsageError
from ..log import get_logger
from ..metrics import LOWER_IS_BETTER, METRICS_BY_PROBLEM, greater_is_better
from ..outputs import OutputLock, pid_alive
from . import require_optuna
from .schema import TARGETS

optuna = require_optuna()  # the sweep extra: a UsageError saying how to install it, not an ImportError
log = get_logger()

JOURNAL = "study.journal"
# A worker writes a heartbeat into its running trial every HEARTBEAT_S; a trial whose heartbeat is older
# than GRACE_S (or whose worker's pid is gone, on this host) is failed by the next worker that looks.
HEARTBEAT_S = 15
GRACE_S = 120
HOST = socket.gethostname()
_COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING,
            optuna.trial.TrialState.WAITING)


def make_storage(spec: str | None, out: Path | None):
    """(storage, description, lock file or None).  A path is a journal file (Optuna's storage for
    several processes on one filesystem, no server needed); a URL (sqlite:///..., postgresql://...) an
    RDB storage."""
    if spec and "://" in spec:
        lock = None
        kwargs = {}
        if spec.startswith("sqlite:///"):
            lock = Path(spec[len("sqlite:///"):] + ".bertkit-lock")
            # workers wait for each other's writes instead of failing on "database is locked"
            kwargs = {"engine_kwargs": {"connect_args": {"timeout": 60}}}
        try:
            return optuna.storages.RDBStorage(spec, **kwargs), spec, lock
        except ImportError as e:
            raise UsageError(f"--storage {spec}: the database driver is not installed ({e})") from None
        except Exception as e:  # noqa: BLE001
            raise UsageError(f"--storage {spec}: cannot connect ({str(e).splitlines()[0]})") from None
    path = Path(spec) if spec else out / JOURNAL
    if path.is_dir():
        path = path / JOURNAL
    if not path.parent.is_dir():
        raise UsageError(f"--storage {spec}: directory {path.parent} does not exist")
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path))), str(path), Path(str(path) + ".bertkit-lock")


def direction(metric: str | None, command: str = "finetune-cls") -> str:
    """Optuna's direction of the target command's ``--metric`` (finetune-cls's None: the per-problem
    default, all maximised: accuracy, f1_micro, pearsonr; finetune-qa's f1 and exact_match are maximised;
    distill's: its teacher's kind's, so any target's)."""
    m = (metric or "accuracy").removeprefix("eval_")
    known: set[str] = set()
    for t in TARGETS.values() if TARGETS[command].any_kind else [TARGETS[command]]:
        # finetune-cls's None: whatever some problem computes
        known |= set(t.metrics or {name for names in METRICS_BY_PROBLEM.values() for name in names} | LOWER_IS_BETTER)
    if m not in known:
        raise UsageError(f"--metric {metric}: unknown direction; use one of {', '.join(sorted(known))}")
    return "maximize" if greater_is_better(m) else "minimize"


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def default_study_name(output: str) -> str:
    return _SAFE.sub("-", Path(output).resolve().name) or "sweep"


def config_fingerprint(cfg) -> dict:
    """What must be the same for workers to share a study: every fixed field but the output."""
    data = to_dict(cfg)
    data.pop("output", None)
    return json.loads(json.dumps(data, default=str))


def first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
            if d:
                return d
        return None
    return None if a == b else f"{prefix.rstrip('.')} ({b!r} in the study, {a!r} here)"


class SharedStudy:
    """One study in a storage shared by workers: opening it with the same settings, asking for a trial
    within the ``--trials`` total, failing the trials of dead workers, and a heartbeat in this worker's.

    ``grid``: the sweep's sampler is a grid, whose failed points count as visited (see :meth:`counts`)."""

    def __init__(self, spec: str | None, out: Path | None, grid: bool = False):
        self.storage, self.desc, self.lock_path = make_storage(spec, out)
        self.grid = grid
        self.study: Any = None

    def lock(self):
        """An exclusive lock over counting and asking (local storages), so two workers cannot both take the
        last trial.  Storages on a server are checked after asking instead (see :meth:`ask`)."""
        return OutputLock(self.lock_path) if self.lock_path is not None else contextlib.nullcontext()

    def open(self, name: str, direction: str, sampler, pruner, settings: dict) -> None:
        """Create or load the study; one started with other ``settings`` (command, search space, fixed
        config, metric) is refused."""
        try:
            self.study = optuna.create_study(study_name=name, storage=self.storage, direction=direction,
                                             sampler=sampler, pruner=pruner, load_if_exists=True)
        except Exception as e:  # noqa: BLE001 - a bad URL, an unreachable database, a foreign file
            raise UsageError(f"--storage {self.desc}: cannot open the study ({str(e).splitlines()[0]})") from None
        with self.lock():
            theirs = self.study.user_attrs.get("bertkit")
            if theirs is None:
                self.study.set_user_attr("bertkit", settings)
                return
            diff = first_difference(settings["command"], theirs.get("command"), "command")
            diff = diff or first_difference(settings["space"], theirs.get("space", {}), "search ")
            diff = diff or first_difference(settings["config"], theirs.get("config", {}))
            diff = diff or first_difference(settings["metric"], theirs.get("metric"), "metric")
        if diff:
            raise UsageError(f"study '{name}' in {self.desc} was started with other settings: {diff}; "
                             "use the same flags (or --resume), or a new --study")

    def load(self, name: str | None, flag: str = "--report"):
        """An existing study for reading (the only one of the storage when ``name`` is None)."""
        names = optuna.get_all_study_names(self.storage)
        if not names:
            raise UsageError(f"{flag} {self.desc}: holds no study")
        if name is None:
            if len(names) > 1:
                raise UsageError(f"{flag} {self.desc}: holds {len(names)} studies; pick one with --study "
                                 f"({', '.join(names)})")
            name = names[0]
        elif name not in names:
            raise UsageError(f"--study {name}: not in {self.desc} (studies: {', '.join(names)})")
        self.study = optuna.load_study(study_name=name, storage=self.storage)
        return self.study

    # -- trials ------------------------------------------------------------------------------------
    def counts(self, t) -> bool:
        """Whether a trial counts towards --trials.  Failed trials do not (a rerun replaces them), except on
        a grid, where Optuna's GridSampler takes a failed point as visited and would never draw it again:
        there only a dead worker's trial is not counted, and its point is queued again (fail_stale)."""
        if t.state in _COUNTED:
            return True
        return self.grid and t.state == optuna.trial.TrialState.FAIL and not t.user_attrs.get("stale")

    def ask(self, total: int, sampler_for: Callable[[int], Any] | None, on_stale: Callable[[Any], None]):
        """A new trial of this worker, or None when the study holds ``total`` trials (failed ones do not
        count).  ``sampler_for(n)``: the sampler for a trial asked after n trials (None: keep the study's);
        ``on_stale(trial)``: cleans up after a dead worker's trial (see :meth:`fail_stale`)."""
        with self.lock():
            self.fail_stale(on_stale)
            trials = self.study.get_trials(deepcopy=False)
            if sum(self.counts(t) for t in trials) >= total:
                return None
            if sampler_for is not None:
                self.study.sampler = sampler_for(len(trials))
            trial = self.study.ask()
            trial.set_user_attr("host", HOST)
            trial.set_user_attr("pid", os.getpid())
            trial.set_user_attr("heartbeat", time.time())
        if self.lock_path is None:
            # no lock on a server storage: if workers asked at once, the later numbers give way
            before = [t for t in self.study.get_trials(deepcopy=False) if t.number < trial.number and self.counts(t)]
            if len(before) >= total:
                trial.set_user_attr("note", "over the --trials total (asked at the same time as another worker)")
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                return None
        return trial

    def running(self) -> list:
        return self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))

    def fail_stale(self, on_stale: Callable[[Any], None]) -> None:
        """Fail the running trials of dead workers: on this host, a worker pid that is gone; anywhere, a
        heartbeat older than GRACE_S.  Optuna's own heartbeat (RDBStorage(heartbeat_interval=...) +
        fail_stale_trials) exists for RDB storages only and runs inside study.optimize, so the sweep keeps
        one mechanism for every storage; a rerun then continues the study."""
        now = time.time()
        for t in self.running():
            host, pid, beat = t.user_attrs.get("host"), t.user_attrs.get("pid"), t.user_attrs.get("heartbeat")
            if host == HOST and pid == os.getpid():
                continue
            if host == HOST and pid is not None and not pid_alive(int(pid)):
                why = f"worker {host}:{pid} died"
            elif beat is not None and now - float(beat) > GRACE_S:
                why = f"worker {host}:{pid} silent for {now - float(beat):.0f}s"
            elif beat is None and t.datetime_start and now - t.datetime_start.timestamp() > GRACE_S:
                why = "no heartbeat"
            else:
                continue
            if not self._fail_others_trial(t, why):
                continue
            if self.grid and t.params:
                self.study.enqueue_trial(t.params)  # the grid point is run again (GridSampler alone would skip it)
            on_stale(t)
            log.warning(f"trial {t.number}: marked failed ({why})")

    def _fail_others_trial(self, t, why: str) -> bool:
        """Fail another (dead) worker's trial, with a note why.  Optuna's public API sets attributes only
        through the Trial object of the process that asked for it, so this writes to the storage by the
        trial's id.  The only private names of the sweep are here: ``Study._storage`` and
        ``FrozenTrial._trial_id`` (the storage methods are BaseStorage's public interface).  False when
        another worker failed it first, or its worker finished it just now."""
        storage, trial_id = self.study._storage, t._trial_id
        try:
            storage.set_trial_user_attr(trial_id, "note", why)
            storage.set_trial_user_attr(trial_id, "stale", True)
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        except Exception:  # noqa: BLE001 - the trial is finished already (by its worker or another)
            return False
        return True

    def heartbeat(self, trial) -> Heartbeat:
        return Heartbeat(trial)

    def workers_here(self) -> int:
        """Workers with a running trial on this host."""
        return len({t.user_attrs.get("pid") for t in self.running() if t.user_attrs.get("host") == HOST})

    def workers(self) -> int:
        """Workers with a running trial, anywhere, and this one."""
        return len({(t.user_attrs.get("host"), t.user_attrs.get("pid")) for t in self.running()}
                   | {(HOST, os.getpid())})

    def best(self):
        """The best complete trial, or None."""
        try:
            return self.study.best_trial
        except ValueError:  # no complete trial
            return None


class Heartbeat:
    """Writes the time into the running trial every HEARTBEAT_S, from a thread."""

    def __init__(self, trial):
        self.trial = trial
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self):
        while not self.stop_event.wait(HEARTBEAT_S):
            try:
                self.trial.set_user_attr("heartbeat", time.time())
            except Exception:  # noqa: BLE001 - the trial was finished meanwhile
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(timeout=5)
