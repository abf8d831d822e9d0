"""bertkit sweep <command>: a hyperparameter sweep on Optuna, shared by every worker of one storage.

Each trial is a normal run of the target command (``finetune_cls.run`` or ``finetune_qa.run``, as
:data:`bertkit.sweep.schema.TARGETS` says) in ``OUTPUT/trials/<n>/``.  Stages: check the settings ->
open the shared study -> run trials until the study holds ``--trials`` -> results.  The parts live in
:mod:`bertkit.sweep`; ``bertkit sweep --report`` is :func:`report`.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import parse_duration
from ..errors import BertkitError, UsageError
from ..log import get_logger
from ..outputs import OutputLock
from ..summary import print_summary
from ..sweep import require_optuna
from ..sweep.pruning import make_pruner
from ..sweep.results import fmt_params, keep_best, plot, progress_line, report_lines, steps_line, write_results
from ..sweep.schema import SweepFields, Target, resumed_config, save_sweep_config, target_config, target_of
from ..sweep.space import Param, grid_size, make_sampler, search_space
from ..sweep.study import SharedStudy, config_fingerprint, default_study_name, direction
from ..sweep.trial import run_trial

log = get_logger()

MAX_FAILED_IN_A_ROW = 3


@dataclass
class Sweep:
    cfg: SweepFields
    target: Target  # the command each trial runs (finetune-cls, finetune-qa)
    out: Path = None  # type: ignore[assignment]
    params: list[Param] = field(default_factory=list)
    metric: str = "accuracy"
    shared: SharedStudy = None  # type: ignore[assignment]
    total: int = 0
    durations: list[float] = field(default_factory=list)
    ran: int = 0
    stopped: str = ""
    summary: dict = field(default_factory=dict)

    def sampler(self, seed: int):
        return make_sampler(self.cfg.sweep.sampler, self.params, seed, self.total)


# ------------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------------

def check(s: Sweep) -> None:
    """Optuna present, the settings (or the saved ones with --resume), the search space, the target config."""
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = s.cfg
    if not cfg.output:
        raise UsageError("--output is required: the sweep's directory (trials, results, the default storage)")
    s.out = Path(cfg.output)
    if cfg.sweep.resume:
        s.cfg = cfg = resumed_config(cfg)
        log.info(f"Resuming the sweep in {s.out} with its saved settings")
    if cfg.sweep.trials < 1:
        raise UsageError(f"--trials {cfg.sweep.trials}: must be at least 1")
    if cfg.sweep.threads is not None and cfg.sweep.threads < 1:
        raise UsageError(f"--threads {cfg.sweep.threads}: must be at least 1")
    parse_duration(cfg.sweep.timeout)
    s.params = search_space(cfg)
    base = target_config(cfg).validate()  # the fixed values' problems (--train, ...) once, not in every trial
    from ..loading import check_model_dir

    field = s.target.model_field  # once here, not as a failure in every trial
    check_model_dir(getattr(base, field), f"--{field}", base.allow_pickle)
    s.metric = (cfg.metric or "accuracy").removeprefix("eval_")
    direction(cfg.metric, s.target.command)
    s.total = cfg.sweep.trials
    if cfg.sweep.sampler == "grid":
        s.total = min(s.total, grid_size(s.params))
    from ..outputs import check_writable  # --output is checked with the target's config; here the storage file

    storage = (cfg.sweep.storage or "").removeprefix("sqlite:///")
    if "://" not in storage and (problems := check_writable(storage, "--storage", kind="file")):
        raise UsageError(problems[0])
    s.out.mkdir(parents=True, exist_ok=True)
    (s.out / "trials").mkdir(exist_ok=True)


def open_study(s: Sweep) -> None:
    """Create or load the study; a study started with other settings is refused."""
    cfg = s.cfg
    s.shared = SharedStudy(cfg.sweep.storage, s.out, grid=cfg.sweep.sampler == "grid")
    name = cfg.sweep.study or default_study_name(str(s.out))
    settings = {"command": s.target.command, "space": {p.name: p.spec() for p in s.params},
                "config": config_fingerprint(target_config(cfg)), "metric": s.metric}
    s.shared.open(name, direction(cfg.metric, s.target.command), s.sampler(cfg.train.seed),
                  make_pruner(cfg.sweep.pruner), settings)
    # the objective's name once a trial has run (None in the flags: the problem's default metric)
    s.metric = s.shared.study.user_attrs.get("objective", s.metric)
    save_sweep_config(cfg)
    log.info(f"Sweep '{name}' in {s.shared.desc}: {len(s.params)} params "
             f"({', '.join(f'{p.name}={p.spec()}' for p in s.params)}), {s.total} trials, "
             f"{cfg.sweep.sampler} sampler, {cfg.sweep.pruner} pruner, objective {s.metric} "
             f"({s.shared.study.direction.name.lower()})")


def run_trials(s: Sweep) -> None:
    """Ask, run and tell trials until the study holds --trials of them (or --timeout)."""
    t0 = time.time()
    timeout = parse_duration(s.cfg.sweep.timeout)
    # seeded by the trial's number: one worker's sweep is reproducible, and workers asking one after
    # another draw different random parameters (a grid keeps its one sampler: it holds the grid's state)
    sampler_for = None if s.cfg.sweep.sampler == "grid" else lambda n: s.sampler(s.cfg.train.seed + n)
    failed_in_a_row = 0
    while True:
        if timeout is not None and time.time() - t0 >= timeout:
            s.stopped = f"--timeout {s.cfg.sweep.timeout} reached"
            break
        trial = s.shared.ask(s.total, sampler_for, on_stale=lambda t: _remove_checkpoints(s, t.number))
        if trial is None:
            break
        t1 = time.time()
        outcome = run_trial(s.shared, trial, s.cfg, s.target, s.params, s.out, s.metric, s.cfg.sweep.threads)
        s.metric = outcome.metric
        s.ran += 1
        s.durations.append(time.time() - t1)
        _progress(s, trial, outcome, time.time() - t1)
        _write(s, final=False)
        failed_in_a_row = failed_in_a_row + 1 if outcome.state == "FAIL" else 0
        if failed_in_a_row >= MAX_FAILED_IN_A_ROW:
            raise BertkitError(f"{MAX_FAILED_IN_A_ROW} trials failed in a row (see {s.out / 'trials.csv'} and the "
                               "warnings above); fix the cause and rerun the same command to continue")


def finish(s: Sweep) -> None:
    """Results, the best model, plots and the summary."""
    best, kept, plots = _write(s, final=True)
    counts = s.summary["trials"]
    rows = [("study", f"{s.shared.study.study_name} in {s.shared.desc}"),
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


def report(storage: str, study_name: str | None = None) -> None:
    """``bertkit sweep --report``: the trials of an existing study (stdout) and its best trial."""
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if "://" not in storage and not Path(storage).exists():
        raise UsageError(f"--report {storage}: no such file or directory (a journal file, a sweep's output "
                         "directory, or a storage URL)")
    study = SharedStudy(storage, None).load(study_name)
    print("\n".join(report_lines(study)), flush=True)


# ------------------------------------------------------------------------------------------------
# Helpers of the stages
# ------------------------------------------------------------------------------------------------

def _write(s: Sweep, final: bool):
    """sweep.json, trials.csv, best.yaml (after every trial, so a long sweep can be followed); at the end
    also best/ and the plots.  Under a lock in the output directory: workers finishing together would
    otherwise swap best/ at the same time."""
    best = s.shared.best()
    best_cfg = None
    if best is not None:
        best_cfg = target_config(s.cfg, params=best.user_attrs.get("keys") or {},
                                 output=str(s.out / "best-rerun"))
    kept, plots = None, []
    with OutputLock(s.out / ".results.lock"):
        s.summary = write_results(s.out, s.shared.study, s.params, s.metric, s.target.command, best_cfg)
        if final and best is not None and s.cfg.sweep.keep_best:
            kept = keep_best(s.out, s.out / "trials" / str(best.number))
            if kept is None:
                log.info(f"best trial {best.number} ran elsewhere (host {best.user_attrs.get('host')}): its model "
                         f"is in that worker's OUTPUT/trials/{best.number}")
        if final:
            plots = plot(s.out, s.shared.study, s.params, s.metric)
    return best, kept, plots


def _progress(s: Sweep, trial, outcome, seconds: float) -> None:
    trials = s.shared.study.get_trials(deepcopy=False)
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    running = sum(t.state.name == "RUNNING" for t in trials)
    left = max(0, s.total - finished - running)
    eta = sum(s.durations) / len(s.durations) * left / s.shared.workers() if s.durations else 0.0
    log.info(progress_line(trial.number, trial.params, outcome.state, outcome.value, s.metric, seconds, outcome.note,
                           s.shared.best(), finished, s.total, eta))


def _remove_checkpoints(s: Sweep, number: int) -> None:
    """A dead worker's trial: its checkpoints are of no use (trials never resume)."""
    shutil.rmtree(s.out / "trials" / str(number) / "checkpoints", ignore_errors=True)
