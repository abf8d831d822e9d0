"""bertkit sweep <command>: a hyperparameter sweep on Optuna, shared by every worker of one storage.

Each trial is a normal run of the target command (``finetune_cls.run`` or ``finetune_qa.run``, as
:data:`bertkit.sweep_schema.TARGETS` says) in ``OUTPUT/trials/<n>/``.
Trials are asked and told by hand (Optuna's ask-and-tell interface) rather than through
``study.optimize``, because the sweep needs three things ``optimize`` lacks: ``--trials`` as a total over
every worker (counted in the storage, under a file lock when the storage is a local file), a liveness
check that also covers the journal storage (which has no heartbeat in Optuna 5), and a per-trial sampler
seed so that workers starting together do not draw the same random parameters.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import CONFIG_FILENAME, parse_duration, resolve, to_dict
from ..errors import BertkitError, UsageError
from ..log import get_logger
from ..summary import print_summary
from ..sweep import (Param, PruningCallback, default_study_name, direction, first_difference, config_fingerprint,
                     fmt_params, grid_space, keep_best, plot, require_optuna, search_space, step_totals, steps_line,
                     suggest, table, trial_rows, write_results, write_text)
from ..sweep_schema import SweepFields, Target, target_config, target_of

log = get_logger()

JOURNAL = "study.journal"
# A worker writes a heartbeat into its running trial every HEARTBEAT_S; a trial whose heartbeat is older
# than GRACE_S (or whose worker's pid is gone, on this host) is failed by the next worker that looks.
HEARTBEAT_S = 15
GRACE_S = 120
MAX_FAILED_IN_A_ROW = 3
HOST = socket.gethostname()


@dataclass
class Sweep:
    cfg: SweepFields
    target: Target  # the command each trial runs (finetune-cls, finetune-qa)
    out: Path = None  # type: ignore[assignment]
    params: list[Param] = field(default_factory=list)
    metric: str = "accuracy"
    optuna: Any = None
    storage: Any = None
    storage_desc: str = ""
    lock_path: Path | None = None
    study: Any = None
    total: int = 0
    durations: list[float] = field(default_factory=list)
    ran: int = 0
    stopped: str = ""
    summary: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------------

def check(s: Sweep) -> None:
    """Optuna present, the settings (or the saved ones with --resume), the search space, the target config."""
    s.optuna = require_optuna()
    s.optuna.logging.set_verbosity(s.optuna.logging.WARNING)
    cfg = s.cfg
    if not cfg.output:
        raise UsageError("--output is required: the sweep's directory (trials, results, the default storage)")
    s.out = Path(cfg.output)
    if cfg.sweep.resume:
        saved = s.out / CONFIG_FILENAME
        if not saved.is_file():
            raise UsageError(f"--resume: {saved} not found; start the sweep without --resume first")
        _check_saved_command(saved, s.target.command)
        cmdline = cfg.sweep
        cfg = resolve(type(cfg), saved)
        # what may change between sessions of one study: how long this worker runs, and where
        for name in ("trials", "timeout", "threads", "storage"):
            if getattr(cmdline, name) != getattr(type(cmdline)(), name):
                setattr(cfg.sweep, name, getattr(cmdline, name))
        cfg.output = str(s.out)
        s.cfg = cfg
        log.info(f"Resuming the sweep in {s.out} with its saved settings")
    if cfg.sweep.trials < 1:
        raise UsageError(f"--trials {cfg.sweep.trials}: must be at least 1")
    if cfg.sweep.threads is not None and cfg.sweep.threads < 1:
        raise UsageError(f"--threads {cfg.sweep.threads}: must be at least 1")
    parse_duration(cfg.sweep.timeout)
    s.params = search_space(cfg)
    base = target_config(cfg).validate()  # the fixed values' problems (--train, ...) once, not in every trial
    from ..loading import check_model_dir

    check_model_dir(base.model, "--model", base.allow_pickle)  # once here, not as a failure in every trial
    s.metric = (cfg.metric or "accuracy").removeprefix("eval_")
    direction(cfg.metric, s.target.command)
    s.total = cfg.sweep.trials
    if cfg.sweep.sampler == "grid":
        import math

        size = math.prod(len(v) for v in grid_space(s.params).values())
        s.total = min(s.total, size)
    from ..outputs import check_writable  # --output is checked with the target's config; here the storage file

    storage = (cfg.sweep.storage or "").removeprefix("sqlite:///")
    if "://" not in storage and (problems := check_writable(storage, "--storage", kind="file")):
        raise UsageError(problems[0])
    s.out.mkdir(parents=True, exist_ok=True)
    (s.out / "trials").mkdir(exist_ok=True)


def open_study(s: Sweep) -> None:
    """Create or load the study; a study started with other settings is refused."""
    optuna, cfg = s.optuna, s.cfg
    s.storage, s.storage_desc, s.lock_path = make_storage(cfg.sweep.storage, s.out)
    name = cfg.sweep.study or default_study_name(str(s.out))
    try:
        s.study = optuna.create_study(study_name=name, storage=s.storage,
                                      direction=direction(cfg.metric, s.target.command),
                                      sampler=make_sampler(s, cfg.train.seed), pruner=make_pruner(s),
                                      load_if_exists=True)
    except Exception as e:  # noqa: BLE001 - a bad URL, an unreachable database, a foreign file
        raise UsageError(f"--storage {s.storage_desc}: cannot open the study ({str(e).splitlines()[0]})") from None
    mine = {"command": s.target.command, "space": {p.name: p.spec() for p in s.params},
            "config": config_fingerprint(target_config(cfg)), "metric": s.metric}
    with file_lock(s.lock_path):
        theirs = s.study.user_attrs.get("bertkit")
        if theirs is None:
            s.study.set_user_attr("bertkit", mine)
        else:
            diff = first_difference(mine["command"], theirs.get("command"), "command")
            diff = diff or first_difference(mine["space"], theirs.get("space", {}), "search ")
            diff = diff or first_difference(mine["config"], theirs.get("config", {}))
            diff = diff or first_difference(mine["metric"], theirs.get("metric"), "metric")
            if diff:
                raise UsageError(f"study '{name}' in {s.storage_desc} was started with other settings: {diff}; "
                                 "use the same flags (or --resume), or a new --study")
    # the objective's name once a trial has run (None in the flags: the problem's default metric)
    s.metric = s.study.user_attrs.get("objective", s.metric)
    _save_sweep_config(s)
    log.info(f"Sweep '{name}' in {s.storage_desc}: {len(s.params)} params "
             f"({', '.join(f'{p.name}={p.spec()}' for p in s.params)}), {s.total} trials, "
             f"{cfg.sweep.sampler} sampler, {cfg.sweep.pruner} pruner, objective {s.metric} "
             f"({s.study.direction.name.lower()})")


def run_trials(s: Sweep) -> None:
    """Ask, run and tell trials until the study holds --trials of them (or --timeout)."""
    t0 = time.time()
    timeout = parse_duration(s.cfg.sweep.timeout)
    failed_in_a_row = 0
    while True:
        if timeout is not None and time.time() - t0 >= timeout:
            s.stopped = f"--timeout {s.cfg.sweep.timeout} reached"
            break
        trial = next_trial(s)
        if trial is None:
            break
        state = run_one(s, trial)
        _write(s, final=False)
        failed_in_a_row = failed_in_a_row + 1 if state == "FAIL" else 0
        if failed_in_a_row >= MAX_FAILED_IN_A_ROW:
            raise BertkitError(f"{MAX_FAILED_IN_A_ROW} trials failed in a row (see {s.out / 'trials.csv'} and the "
                               "warnings above); fix the cause and rerun the same command to continue")


def _write(s: Sweep, final: bool):
    """sweep.json, trials.csv, best.yaml (after every trial, so a long sweep can be followed); at the end
    also best/ and the plots.  Under a lock in the output directory: workers finishing together would
    otherwise swap best/ at the same time."""
    best = _best(s)
    best_cfg = None
    if best is not None:
        best_cfg = target_config(s.cfg, params=best.user_attrs.get("keys") or {},
                                 output=str(s.out / "best-rerun"))
    kept, plots = None, []
    with file_lock(s.out / ".results.lock"):
        s.summary = write_results(s.out, s.study, s.params, s.metric, s.target.command, best_cfg)
        if final and best is not None and s.cfg.sweep.keep_best:
            kept = keep_best(s.out, s.out / "trials" / str(best.number))
            if kept is None:
                log.info(f"best trial {best.number} ran elsewhere (host {best.user_attrs.get('host')}): its model "
                         f"is in that worker's OUTPUT/trials/{best.number}")
        if final:
            plots = plot(s.out, s.study, s.params, s.metric)
    return best, kept, plots


def finish(s: Sweep) -> None:
    """Results, the best model, plots and the summary."""
    best, kept, plots = _write(s, final=True)
    counts = s.summary["trials"]
    rows = [("study", f"{s.study.study_name} in {s.storage_desc}"),
            ("trials", ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f" (this worker ran {s.ran})"),
            ("training steps", steps_line(s.summary["steps_total"], s.summary["steps_without_pruning"]))]
    if s.stopped:
        rows.append(("stopped", s.stopped))
    if best is None:
        rows.append(("best", "no complete trial yet"))
    else:
        rows += [("best", f"trial {best.number}: {s.metric} {best.value:.4f}"),
                 ("best params", fmt_params(best.params)),
                 ("reproduce", f"bertkit {s.target.command} --config {s.out / 'best.yaml'}")]
        if kept:
            rows.append(("best model", str(kept)))
    rows.append(("results", ", ".join(["sweep.json", "trials.csv"] + (["best.yaml"] if best else []) + plots)
                 + f" in {s.out}"))
    print_summary("sweep", rows)


STAGES = [check, open_study, run_trials, finish]


def run(cfg: SweepFields) -> dict:
    s = Sweep(cfg, target_of(cfg))
    for stage in STAGES:
        stage(s)
    return s.summary


# ------------------------------------------------------------------------------------------------
# Storage, sampler, pruner
# ------------------------------------------------------------------------------------------------

def make_storage(spec: str | None, out: Path | None):
    """(storage, description, lock file or None).  A path is a journal file (Optuna's storage for
    several processes on one filesystem, no server needed); a URL (sqlite:///..., postgresql://...) an
    RDB storage."""
    import optuna

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


def make_sampler(s: Sweep, seed: int):
    optuna, kind = s.optuna, s.cfg.sweep.sampler
    if kind == "grid":
        from ..sweep_optuna import GridSampler  # imports optuna: only when asked for

        return GridSampler(grid_space(s.params), seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Optuna's 10 random start-up trials would make a 12-trial sweep a random search; a third of the
    # budget (at least 3) explores, the rest is TPE.  constant_liar: running trials of other workers
    # count as bad, so parallel workers do not all sample next to the same good point.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, min(10, s.total // 3)), constant_liar=True)


def make_pruner(s: Sweep):
    return pruner_for(s.optuna, s.cfg.sweep.pruner)


def pruner_for(optuna, kind: str):
    """The pruner --pruner names (also used by benchmarks/pruner_replay.py to compare them)."""
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind in ("halving", "hyperband"):
        from .. import sweep_optuna  # imports optuna: only when asked for

        return sweep_optuna.halving_pruner() if kind == "halving" else sweep_optuna.hyperband_pruner()
    if kind == "median":
        # no pruning before 3 complete trials: the median of fewer is mostly noise
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    raise UsageError(f"--pruner {kind}: use one of median, halving, hyperband, none")


@contextlib.contextmanager
def file_lock(path: Path | None):
    """An exclusive lock over counting and asking (local storages), so two workers cannot both take the
    last trial.  Storages on a server are checked after asking instead (see next_trial)."""
    if path is None:
        yield
        return
    import fcntl

    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------
# Trials
# ------------------------------------------------------------------------------------------------

def _counted(optuna):
    S = optuna.trial.TrialState
    return (S.COMPLETE, S.PRUNED, S.RUNNING, S.WAITING)


def counts(s: Sweep, t) -> bool:
    """Whether a trial counts towards --trials.  Failed trials do not (a rerun replaces them), except on a
    grid, where Optuna's GridSampler takes a failed point as visited and would never draw it again: there
    only a dead worker's trial is not counted, and its point is queued again (fail_stale)."""
    if t.state in _counted(s.optuna):
        return True
    return (s.cfg.sweep.sampler == "grid" and t.state == s.optuna.trial.TrialState.FAIL
            and not t.user_attrs.get("stale"))


def next_trial(s: Sweep):
    """A new trial, or None when the study holds --trials trials (failed ones do not count)."""
    optuna = s.optuna
    with file_lock(s.lock_path):
        fail_stale(s)
        trials = s.study.get_trials(deepcopy=False)
        if sum(counts(s, t) for t in trials) >= s.total:
            return None
        if s.cfg.sweep.sampler != "grid":
            # seeded by the trial's number: one worker's sweep is reproducible, and workers asking one
            # after another draw different random parameters
            s.study.sampler = make_sampler(s, s.cfg.train.seed + len(trials))
        trial = s.study.ask()
        trial.set_user_attr("host", HOST)
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("heartbeat", time.time())
    if s.lock_path is None:
        # no lock on a server storage: if workers asked at once, the later numbers give way
        before = [t for t in s.study.get_trials(deepcopy=False) if t.number < trial.number and counts(s, t)]
        if len(before) >= s.total:
            trial.set_user_attr("note", "over the --trials total (asked at the same time as another worker)")
            s.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return None
    return trial


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed worker whose parent has not reaped it yet is a zombie: dead all the same
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def fail_stale(s: Sweep) -> None:
    """Fail the running trials of dead workers: on this host, a worker pid that is gone; anywhere, a
    heartbeat older than GRACE_S.  Optuna's own heartbeat (RDBStorage(heartbeat_interval=...) +
    fail_stale_trials) exists for RDB storages only and runs inside study.optimize, so the sweep keeps
    one mechanism for every storage; a rerun then continues the study."""
    optuna = s.optuna
    now = time.time()
    for t in s.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        host, pid, beat = t.user_attrs.get("host"), t.user_attrs.get("pid"), t.user_attrs.get("heartbeat")
        if host == HOST and pid == os.getpid():
            continue
        if host == HOST and pid is not None and not _pid_alive(int(pid)):
            why = f"worker {host}:{pid} died"
        elif beat is not None and now - float(beat) > GRACE_S:
            why = f"worker {host}:{pid} silent for {now - float(beat):.0f}s"
        elif beat is None and t.datetime_start and now - t.datetime_start.timestamp() > GRACE_S:
            why = "no heartbeat"
        else:
            continue
        try:
            # storage calls by trial id: the trial belongs to another (dead) worker
            s.study._storage.set_trial_user_attr(t._trial_id, "note", why)
            s.study._storage.set_trial_user_attr(t._trial_id, "stale", True)
            s.study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        except Exception:  # noqa: BLE001 - another worker failed it first, or its worker finished just now
            continue
        if s.cfg.sweep.sampler == "grid" and t.params:
            s.study.enqueue_trial(t.params)  # the grid point is run again (GridSampler alone would skip it)
        shutil.rmtree(s.out / "trials" / str(t.number) / "checkpoints", ignore_errors=True)
        log.warning(f"trial {t.number}: marked failed ({why})")


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


def _threads(s: Sweep) -> int:
    """Torch threads for this worker: the CPU cores shared by the workers running on this host."""
    if s.cfg.sweep.threads:
        return s.cfg.sweep.threads
    pids = {t.user_attrs.get("pid") for t in s.study.get_trials(deepcopy=False, states=(s.optuna.trial.TrialState.RUNNING,))
            if t.user_attrs.get("host") == HOST}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, len(pids)))


@contextlib.contextmanager
def _trial_logging():
    """A trial's own progress lines stay in its training_log.jsonl; stderr gets one line per trial
    (warnings and errors still show)."""
    logger = get_logger()
    level = logger.level
    if level <= logging.INFO:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_one(s: Sweep, trial) -> str:
    """Run one trial as a normal run of the target command; returns its final state's name."""
    import torch

    runner = importlib.import_module(f"bertkit.commands.{s.target.module}")
    optuna = s.optuna
    values = suggest(trial, s.params)
    trial.set_user_attr("keys", values)
    tdir = s.out / "trials" / str(trial.number)
    shutil.rmtree(tdir, ignore_errors=True)  # numbers are unique in a study: only a wiped study's leftovers
    tcfg = target_config(s.cfg, params=values, output=str(tdir))
    torch.set_num_threads(_threads(s))
    callback = PruningCallback(trial)
    t0 = time.time()
    note = ""
    try:
        with Heartbeat(trial), _trial_logging():
            metrics = runner.run(tcfg, callbacks=[callback])
    except optuna.TrialPruned as e:
        trial.set_user_attr("steps", callback.steps)
        trial.set_user_attr("planned_steps", callback.planned)
        trial.set_user_attr("note", f"pruned: {e}")
        s.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        shutil.rmtree(tdir, ignore_errors=True)  # a pruned trial's checkpoints and logs are of no further use
        state, value, note = "PRUNED", None, f"pruned at {e}"
    except (KeyboardInterrupt, SystemExit):
        trial.set_user_attr("note", "interrupted")
        s.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    except Exception as e:  # noqa: BLE001 - one trial's failure (a diverging lr, memory) is not the sweep's
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        note = f"{type(e).__name__}: {msg}"
        trial.set_user_attr("steps", callback.steps)
        trial.set_user_attr("note", note)
        s.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        shutil.rmtree(tdir / "checkpoints", ignore_errors=True)
        state, value = "FAIL", None
        log.warning(f"trial {trial.number} failed: {note}")
        note = f"failed: {note}"
    else:
        metric = metrics.get("metric_for_best_model", s.metric)
        if metric != s.study.user_attrs.get("objective"):
            s.study.set_user_attr("objective", metric)
        s.metric = metric
        value = metrics.get(f"eval_{metric}")
        trial.set_user_attr("steps", metrics.get("steps"))
        # checkpoints only serve to resume; the trial's final model (the best checkpoint's) stays
        shutil.rmtree(tdir / "checkpoints", ignore_errors=True)
        if value is None or value != value:
            trial.set_user_attr("note", f"no eval_{metric} in metrics.json")
            s.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            state = "FAIL"
        else:
            s.study.tell(trial, float(value))
            state = "COMPLETE"
    s.ran += 1
    s.durations.append(time.time() - t0)
    _progress(s, trial.number, trial.params, state, value, time.time() - t0, note)
    return state


def _best(s: Sweep):
    try:
        return s.study.best_trial
    except ValueError:  # no complete trial
        return None


def _progress(s: Sweep, number: int, params: dict, state: str, value, seconds: float, note: str = "") -> None:
    trials = s.study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    running = [t for t in trials if t.state.name == "RUNNING"]
    workers = len({(t.user_attrs.get("host"), t.user_attrs.get("pid")) for t in running} | {(HOST, os.getpid())})
    left = max(0, s.total - len(finished) - len(running))
    eta = sum(s.durations) / len(s.durations) * left / workers if s.durations else 0.0
    best = _best(s)
    shown = f"{s.metric} {value:.4f}" if value is not None else (note or state.lower())
    best_s = f"best {best.value:.4f} (trial {best.number})" if best is not None else "no best yet"
    log.info(f"trial {number} {state.lower()}: {fmt_params(params)} | {shown} | {best_s} | "
             f"{len(finished)}/{s.total} done, {seconds:.0f}s, ETA {_fmt(eta)}")


def _fmt(seconds: float) -> str:
    m, sec = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _save_sweep_config(s: Sweep) -> None:
    """OUTPUT/bertkit_config.yaml: the resolved sweep settings, which --resume reads back."""
    import yaml

    data = {"command": f"sweep {s.target.command}", **to_dict(s.cfg)}
    data["sweep"]["resume"] = False
    write_text(s.out / CONFIG_FILENAME, f"# Resolved bertkit sweep; continue with: bertkit sweep {s.target.command} "
               f"--output {s.out} --resume\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def _check_saved_command(saved: Path, command: str) -> None:
    """--resume reads the sweep's saved settings, which fit only the command it was started with."""
    import yaml

    try:
        started = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("command")
    except (yaml.YAMLError, AttributeError):
        started = None  # resolve() below says what is wrong with the file
    if started and started != f"sweep {command}":
        raise UsageError(f"--resume: the sweep in {saved.parent} was started as `bertkit {started}`, not "
                         f"`bertkit sweep {command}`; resume it with `bertkit {started} --output {saved.parent} "
                         "--resume`")


# ------------------------------------------------------------------------------------------------
# --report
# ------------------------------------------------------------------------------------------------

def report(storage: str, study_name: str | None = None) -> None:
    """Print the trials of an existing study (stdout) and its best trial."""
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if "://" not in storage and not Path(storage).exists():
        raise UsageError(f"--report {storage}: no such file or directory (a journal file, a sweep's output "
                         "directory, or a storage URL)")
    st, desc, _ = make_storage(storage, None)
    names = optuna.get_all_study_names(st)
    if not names:
        raise UsageError(f"--report {desc}: holds no study")
    if study_name is None:
        if len(names) > 1:
            raise UsageError(f"--report {desc}: holds {len(names)} studies; pick one with --study "
                             f"({', '.join(names)})")
        study_name = names[0]
    elif study_name not in names:
        raise UsageError(f"--study {study_name}: not in {desc} (studies: {', '.join(names)})")
    study = optuna.load_study(study_name=study_name, storage=st)
    info = study.user_attrs.get("bertkit", {})
    metric = study.user_attrs.get("objective") or info.get("metric", "objective")
    rows = trial_rows(study)
    names_ = list(info.get("space") or dict.fromkeys(k for r in rows for k in r["params"]))
    print(table(rows, names_, metric))
    print(f"training steps: {steps_line(*step_totals(rows))}")
    try:
        best = study.best_trial
        print(f"best: trial {best.number}, {metric} {best.value:.4f}: {fmt_params(best.params)}")
    except ValueError:
        print("best: no complete trial yet")
    sys.stdout.flush()


__all__ = ["run", "report", "STAGES"]
