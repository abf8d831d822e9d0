"""Pruning: the pruners ``--pruner`` names, and the callback that reports a trial's validation metric
to its pruner at each evaluation and stops the trial it rejects (never at its last evaluation, nor while
its learning rate warms up)."""

from __future__ import annotations

import math
from collections.abc import Callable

from transformers import TrainerCallback

from ..errors import UsageError
from . import require_optuna

optuna = require_optuna()  # the sweep extra: a UsageError saying how to install it, not an ImportError

PRUNERS = ("median", "halving", "hyperband", "none")


def make_pruner(kind: str):
    """The pruner --pruner names (also used by benchmarks/pruner_replay.py to compare them).

    halving: successive halving, one bracket: a trial goes on past an evaluation rung only among the best
    third of the trials that reached it (Optuna's rule for the first trials: the first always goes on, the
    next ones only if best so far).  hyperband: successive halving in brackets whose first rungs sit at 1,
    3, 9... times the first evaluation's step, the number of brackets set by the first complete trial's
    length.  Both have their first rung at the first evaluation (:class:`FromFirstEvaluation`)."""
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "halving":
        return FromFirstEvaluation(lambda first: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=first, reduction_factor=3))
    if kind == "hyperband":
        return FromFirstEvaluation(lambda first: optuna.pruners.HyperbandPruner(
            min_resource=first, reduction_factor=3))
    if kind == "median":
        # no pruning before 3 complete trials: the median of fewer is mostly noise
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    raise UsageError(f"--pruner {kind}: use one of {', '.join(PRUNERS)}")


class FromFirstEvaluation(optuna.pruners.BasePruner):
    """An Optuna pruner whose ``min_resource`` (the first rung) is the step of the first evaluation.

    Steps are thousandths of an epoch (:func:`report_step`), so where the first evaluation
    falls depends on --eval-steps, the batch size and the data: it is known only once a trial reports.
    A rung before it is checked at it anyway; a rung after it lets every bad trial run to that rung.
    Optuna's own ``min_resource="auto"`` (a hundredth of the first complete trial's steps) makes
    Hyperband log3(100), about 5, brackets, and 12 trials spread over 5 brackets hardly compete.
    Replayed on 37 recorded SST-2 curves (benchmarks/pruner_replay.py, 200 random orders of 12 trials):
    Hyperband with its first rung at one epoch, as before, spent 77% of the steps; at the first evaluation
    (half an epoch) 67%, and successive halving 47% (49% since trials are not judged in their warm-up).
    In a real 12-trial TPE sweep halving spent 61.2% (docs/benchmarks.md, "Sweeps and pruning")."""

    def __init__(self, make: Callable[[int], optuna.pruners.BasePruner]):
        self._make = make
        self._inner: optuna.pruners.BasePruner | None = None

    def prune(self, study, trial) -> bool:
        if self._inner is None:
            if not trial.intermediate_values:
                return False
            self._inner = self._make(min(trial.intermediate_values))
        return self._inner.prune(study, trial)


def report_step(state) -> int:
    """The step a validation metric is reported at: thousandths of an epoch, so trials with other batch
    sizes (other optimizer step counts) are compared at the same share of the data, and trials that
    differ only in lr/epochs/warmup at the same evaluation."""
    if state.epoch is not None:
        return int(round(state.epoch * 1000))
    return int(state.global_step)


def warming_up(args, state) -> bool:
    """Whether the learning rate is still warming up at this step.  The pruner does not judge a trial then:
    below its peak lr a trial with a longer warm-up only looks worse, so a searched warm-up ratio would be
    judged by its cost, not its benefit.  On SST-2 (4k rows, evaluation every quarter epoch), halving
    stopped five trials at the first evaluation, three of them still warming up, all at or near the
    majority-class accuracy (0.5092); the sweep's best was then 0.8417, below the default recipe's 0.8509
    (docs/benchmarks.md, "Sweeps and pruning").  The trial still reports, so the others are compared with its
    value there; once judged, halving enters it into the rungs it passed with its value then (Optuna's rule for
    a trial that reports past a rung), a higher bar for the trials after it.  With this rule the half-epoch SST-2 sweep
    spent 61.2% of the unpruned steps (70.5% before), with the same best trial."""
    return bool(state.max_steps) and state.global_step < args.get_warmup_steps(state.max_steps)


class PruningCallback(TrainerCallback):
    """Reports the Trainer's validation metric (``metric_for_best_model``, as the target command set it) to an
    Optuna trial at each evaluation and stops a trial the pruner rejects by raising ``TrialPruned``:
    the exception leaves ``trainer.train`` before the checkpoint of that evaluation and before the final
    model is written, so a pruned trial spends nothing more (its directory is removed by the sweep)."""

    def __init__(self, trial):
        self.trial = trial
        self.steps = 0
        # the steps the trial would have run unpruned, read at each evaluation (a time budget may refit them)
        self.planned: int | None = None
        self.pruned_at: int | None = None

    def on_step_end(self, args, state, control, **kw):
        self.steps = state.global_step

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        if not metrics or not state.is_world_process_zero or not args.metric_for_best_model:
            return
        key = args.metric_for_best_model
        key = key if key.startswith("eval_") else f"eval_{key}"
        value = metrics.get(key)
        if value is None or not math.isfinite(float(value)):
            return
        self.steps, self.planned = state.global_step, state.max_steps
        self.trial.report(float(value), report_step(state))
        # At the last evaluation the steps are spent: pruning would only throw the result away (and
        # keep it from the sampler), so the trial completes.
        last = state.max_steps and state.global_step >= state.max_steps
        if not last and not warming_up(args, state) and self.trial.should_prune():
            self.pruned_at = state.global_step
            raise optuna.TrialPruned(f"step {state.global_step}: {key.removeprefix('eval_')} {float(value):.4f}")
