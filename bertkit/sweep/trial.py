"""One trial of a sweep: a normal run of the target command in ``OUTPUT/trials/<n>/`` with the trial's
params and the pruning callback, its result told to the study."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..log import get_logger
from . import require_optuna
from .pruning import PruningCallback
from .schema import SweepFields, Target, target_config
from .space import Param, suggest
from .study import SharedStudy

optuna = require_optuna()  # the sweep extra: a UsageError saying how to install it, not an ImportError
log = get_logger()


@dataclass
class Outcome:
    state: str          # COMPLETE, PRUNED, FAIL
    value: float | None  # the objective (COMPLETE)
    metric: str         # its name, as the target command reported it
    note: str = ""      # why it was pruned or failed


def run_trial(shared: SharedStudy, trial, cfg: SweepFields, target: Target, params: list[Param], out: Path,
              metric: str, threads: int | None) -> Outcome:
    """Run ``trial`` as a normal run of ``target``; tells the study its state (and value)."""
    runner = importlib.import_module(f"bertkit.commands.{target.module}")
    study = shared.study
    values = suggest(trial, params)
    trial.set_user_attr("keys", values)
    tdir = out / "trials" / str(trial.number)
    shutil.rmtree(tdir, ignore_errors=True)  # numbers are unique in a study: only a wiped study's leftovers
    tcfg = target_config(cfg, params=values, output=str(tdir))
    torch.set_num_threads(threads or _threads(shared))
    callback = PruningCallback(trial)
    try:
        with shared.heartbeat(trial), _trial_logging():
            metrics = runner.run(tcfg, callbacks=[callback])
    except optuna.TrialPruned as e:
        trial.set_user_attr("steps", callback.steps)
        trial.set_user_attr("planned_steps", callback.planned)
        trial.set_user_attr("note", f"pruned: {e}")
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        shutil.rmtree(tdir, ignore_errors=True)  # a pruned trial's checkpoints and logs are of no further use
        return Outcome("PRUNED", None, metric, f"pruned at {e}")
    except (KeyboardInterrupt, SystemExit):
        trial.set_user_attr("note", "interrupted")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    except Exception as e:  # noqa: BLE001 - one trial's failure (a diverging lr, memory) is not the sweep's
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        note = f"{type(e).__name__}: {msg}"
        trial.set_user_attr("steps", callback.steps)
        trial.set_user_attr("note", note)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        shutil.rmtree(tdir / "checkpoints", ignore_errors=True)
        log.warning(f"trial {trial.number} failed: {note}")
        return Outcome("FAIL", None, metric, f"failed: {note}")
    metric = metrics.get("metric_for_best_model", metric)
    if metric != study.user_attrs.get("objective"):
        study.set_user_attr("objective", metric)
    value = metrics.get(f"eval_{metric}")
    trial.set_user_attr("steps", metrics.get("steps"))
    # checkpoints only serve to resume; the trial's final model (the best checkpoint's) stays
    shutil.rmtree(tdir / "checkpoints", ignore_errors=True)
    if value is None or value != value:
        trial.set_user_attr("note", f"no eval_{metric} in metrics.json")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return Outcome("FAIL", value, metric)
    study.tell(trial, float(value))
    return Outcome("COMPLETE", value, metric)


def _threads(shared: SharedStudy) -> int:
    """Torch threads for this worker: the CPU cores shared by the workers running on this host."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, shared.workers_here()))


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
