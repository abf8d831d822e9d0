"""Trainer callbacks shared by the training commands: progress (rate, ETA, ``training_log.jsonl``)
and the stopper (SIGINT/SIGTERM, time budget), plus the learning-rate schedule refit for a budget.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from .config import parse_duration
from .distributed import agree_max, world_size
from .log import get_logger, is_tty, quiet
from .outputs import TRAINING_LOG, write_text
from .summary import fmt_duration

log = get_logger()

# What the progress line shows when the log has it (the training log keeps everything).
_SHOWN = ("loss", "eval_loss", "eval_accuracy", "eval_f1", "eval_exact_match", "eval_masked_accuracy",
          "eval_perplexity", "eval_pearsonr", "eval_f1_micro")


def _read_log(path: Path) -> list[dict]:
    """The records of a training log; a last line cut short by a kill is left out."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


class Progress(TrainerCallback):
    """Rate and ETA: a live bar on a terminal, periodic plain lines otherwise; one JSON line per log
    step in ``training_log.jsonl`` (step, loss, lr, throughput, eval metrics).  ``unit`` is what
    throughput counts: ``tokens`` (non-padding tokens, pretraining) or ``examples``."""

    def __init__(self, output: Path, unit: str = "examples"):
        self.unit = unit
        self.log_path = Path(output) / TRAINING_LOG
        self.history: list[dict] = []  # this run's records
        self.earlier: list[dict] = []  # a resumed run's records from before its checkpoint
        self.t0 = self.last_t = None
        self.start_step = 0
        self.last_units = self.start_units = 0
        self.step_seconds = 0.0  # the training steps' own time (see on_step_end)
        self._mark = 0.0
        self._eval_s = 0.0
        self._training = False
        self.bar = None

    def _units(self, state, args) -> int:
        if self.unit == "tokens" and state.num_input_tokens_seen:
            return int(state.num_input_tokens_seen)
        return state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = self.last_t = time.time()
        self.start_step = state.global_step
        if state.global_step and self.log_path.exists():
            # Resumed: the killed run may have logged steps past its last checkpoint, which this run
            # trains again; the log keeps the steps up to the checkpoint, then this run's, as a run never
            # interrupted would have it (and its curves show them all).
            self.earlier = [r for r in _read_log(self.log_path) if r.get("step", 0) <= state.global_step]
            if state.is_world_process_zero:
                write_text(self.log_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.earlier))
        self.last_units = self.start_units = self._units(state, args)
        self._mark = time.perf_counter()
        self._training = True
        if state.is_world_process_zero and is_tty() and not quiet():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="Training", unit="step",
                            dynamic_ncols=True, file=sys.stderr)

    def on_step_end(self, args, state, control, **kw):
        # Each step counts from the end of whatever came before it (training start, the previous step, a
        # log, an evaluation, a save), so throughput is of the steps alone, whatever else the run did.
        now = time.perf_counter()
        self.step_seconds += now - self._mark
        self._mark = now
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kw):
        self._log(state, args, logs)
        self._mark = time.perf_counter()

    def _log(self, state, args, logs) -> None:
        if not logs or "train_loss" in logs:  # the end-of-training summary
            return
        if self._training:
            self._eval_s += logs.get("eval_runtime") or 0.0
        now = time.time()
        units = self._units(state, args)
        rec = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        rec.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in logs.items()})
        if "loss" in logs:
            dt = max(now - self.last_t, 1e-9)
            rec[f"{self.unit}_per_s"] = round((units - self.last_units) / dt, 1)
            rec[f"{self.unit}_seen"] = units
            self.last_t, self.last_units = now, units
        done = state.global_step - self.start_step
        if done > 0 and state.max_steps:
            rec["eta_s"] = round((now - self.t0) / done * (state.max_steps - state.global_step), 1)
        rec["elapsed_s"] = round(now - self.t0, 1)
        self.history.append(rec)  # on every process: callers decide collectively from it
        if not state.is_world_process_zero:
            return
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._print(rec, state)

    def on_evaluate(self, args, state, control, **kw):
        self._mark = time.perf_counter()

    def on_save(self, args, state, control, **kw):
        self._mark = time.perf_counter()

    def _print(self, rec: dict, state) -> None:
        if quiet():
            return
        parts = [f"step {rec['step']}/{state.max_steps}"]
        parts += [f"{k} {rec[k]:.4f}" for k in _SHOWN if k in rec]
        if "learning_rate" in rec:
            parts.append(f"lr {rec['learning_rate']:.2e}")
        if f"{self.unit}_per_s" in rec:
            parts.append(f"{rec[f'{self.unit}_per_s']:,.0f} {self.unit}/s")
        if "padding_share" in rec:
            parts.append(f"padding {rec['padding_share']:.1%}")
        if "eta_s" in rec:
            parts.append(f"ETA {fmt_duration(rec['eta_s'])}")
        line = " | ".join(parts)
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join(parts[1:3]))
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def on_train_end(self, args, state, control, **kw):
        self._training = False
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    @property
    def full_history(self) -> list[dict]:
        """Every record of the run, a resumed run's earlier ones included."""
        return self.earlier + self.history

    def eval_seconds(self) -> float:
        """Seconds spent in evaluations during training (the Trainer logs each one's ``eval_runtime``);
        the final evaluation a command runs after training is not one of them."""
        return float(self._eval_s)


class CollatorEpoch(TrainerCallback):
    """Tells a collator whose randomness is keyed on the epoch (``collator.epoch``) which epoch starts,
    also when a resumed run starts inside one (``state.epoch`` is then the checkpoint's fraction)."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kw):
        self.collator.epoch = int(state.epoch or 0)


def steps_that_fit(global_step: int, steps_done: int, elapsed: float, budget: float, max_steps: int | None) -> int:
    """The total step count a time budget allows, from the step time measured so far (at least one
    more step; never above ``max_steps`` when that is set)."""
    total = global_step + max(1, int((budget - elapsed) / (elapsed / max(steps_done, 1))))
    return min(total, max_steps) if max_steps else total


def refit_schedule(scheduler, total_steps: int, warmup_ratio: float, warmup_steps: int | None = None) -> bool:
    """Make a transformers schedule (``LambdaLR`` whose lambdas are partials taking
    ``num_training_steps``, as every ``get_*_schedule_with_warmup`` builds) complete its warm-up and
    decay at ``total_steps``; the warm-up shrinks to ``warmup_ratio`` of them (or is ``warmup_steps``, a
    fitted schedule restored).  Returns whether it could (a constant schedule has nothing to refit)."""
    lambdas = getattr(scheduler, "lr_lambdas", None) or []
    changed = False
    for i, fn in enumerate(lambdas):
        kws = getattr(fn, "keywords", None)
        if kws and "num_training_steps" in kws:
            new = dict(kws, num_training_steps=total_steps)
            if "num_warmup_steps" in kws:
                new["num_warmup_steps"] = (warmup_steps if warmup_steps is not None else
                                           min(kws["num_warmup_steps"], int(warmup_ratio * total_steps)))
            lambdas[i] = functools.partial(fn.func, *fn.args, **new)
            changed = True
    return changed


def schedule_warmup(scheduler) -> int | None:
    """The warm-up steps of a (refitted) transformers schedule, or None where it has none to refit."""
    for fn in getattr(scheduler, "lr_lambdas", None) or []:
        kws = getattr(fn, "keywords", None) or {}
        if "num_warmup_steps" in kws:
            return int(kws["num_warmup_steps"])
    return None


# the time budget's bookkeeping in a checkpoint's trainer_state.json (its stateful_callbacks, which the
# Trainer saves and loads as they are; it restores callbacks from them only when told to, which bertkit
# does not)
BUDGET_STATE = "bertkit_time_budget"


class Stopper(TrainerCallback):
    """Graceful stop: SIGINT/SIGTERM or the time budget ends training after the current step (a
    signal also saves a checkpoint, when every process is there to save it).  With a budget, the
    learning-rate schedule is refitted to the steps that fit (every 10% of the budget), so it completes
    its decay by the deadline."""

    def __init__(self, time_budget: str | float | None = None, warmup_ratio: float = 0.0):
        self.budget_s = parse_duration(time_budget)
        self.warmup_ratio = warmup_ratio
        self.signal: int | None = None
        self.distributed = world_size() > 1
        self.budget_hit = False
        self._old: dict = {}

    # -- signals ---------------------------------------------------------------------------
    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def uninstall(self) -> None:
        for sig, h in self._old.items():
            signal.signal(sig, h)
        self._old = {}

    def _handle(self, signum, frame):
        if self.signal is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum
        if not self.distributed:
            self._announce(signum)

    def _announce(self, signum: int) -> None:
        # In a distributed run only once every process has agreed to stop (on_step_end): a launcher
        # sends SIGTERM to the survivors when a peer dies, and then there is no stop to announce, only
        # the lost peer (training.train_with_signals).
        print(f"\nbertkit: got {signal.Signals(signum).name}; stopping after this step and saving a checkpoint "
              "(send again to stop at once)", file=sys.stderr, flush=True)

    # -- training loop ---------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kw):
        self.t0 = time.time()
        self.start_step = state.global_step
        self.fitted_steps: int | None = None
        self.orig_max_steps = state.max_steps
        self.next_fit = 0.05 * (self.budget_s or 0)
        self.agreed = False
        self.clock_before = 0.0
        saved = (getattr(state, "stateful_callbacks", None) or {}).get(BUDGET_STATE) if self.budget_s else None
        if saved:
            # A resumed run goes on with the budget where the checkpoint left it: the training time spent
            # so far, and the schedule fitted to it (the scheduler's saved state holds its step, not the
            # fitted lambdas), so the learning rate of every step is that of a run never interrupted.
            self.clock_before = float(saved["elapsed_s"])
            self.start_step = int(saved["start_step"])
            self.next_fit = float(saved["next_fit"])
            if saved.get("fitted_steps"):
                self.fitted_steps = int(saved["fitted_steps"])
                state.max_steps = self.fitted_steps
                refit_schedule(kw.get("lr_scheduler"), self.fitted_steps, self.warmup_ratio,
                               saved.get("warmup_steps"))

    def on_step_end(self, args, state, control, **kw):
        elapsed = self.clock_before + time.time() - self.t0
        if args.world_size > 1:
            # Each process reads its own clock and may catch a signal alone; one that stops or refits
            # on its own leaves the others waiting in a collective (a hang) or at another learning
            # rate.  One tiny all-reduce per step makes every decision common.
            elapsed, sig = agree_max([elapsed, float(self.signal or 0)], args.device)
            if sig and not self.agreed:
                self.agreed = True
                self.signal = int(sig)
                if state.is_world_process_zero:
                    self._announce(self.signal)
        if self.budget_s is not None:
            # The run ends on the clock, or where the schedule fitted to the clock has decayed to 0
            # (transformers' flow callback stops at state.max_steps, the fitted step count).
            fitted_end = (self.fitted_steps and state.global_step >= self.fitted_steps
                          and not (self.orig_max_steps and self.fitted_steps >= self.orig_max_steps))
            if elapsed >= self.budget_s or fitted_end:
                self.budget_hit = True
            elif state.global_step - self.start_step >= 10 and elapsed >= self.next_fit:
                self._fit(state, kw.get("lr_scheduler"), elapsed)
            # saved with the next checkpoint (trainer_state.json), read back by on_train_begin on resume
            state.stateful_callbacks = getattr(state, "stateful_callbacks", None) or {}
            state.stateful_callbacks[BUDGET_STATE] = {
                "elapsed_s": elapsed, "start_step": self.start_step, "next_fit": self.next_fit,
                "fitted_steps": self.fitted_steps, "warmup_steps": schedule_warmup(kw.get("lr_scheduler")),
            }
        if self.signal is not None or self.budget_hit:
            control.should_training_stop = True
            control.should_save = self.signal is not None
            if self.signal is None and args.load_best_model_at_end and args.eval_strategy != "no":
                # the budget's last step is evaluated and saved too: otherwise load_best_model_at_end throws
                # away every step since the last evaluation (SQuAD, MiniLM, 50 minutes: step 287 scored F1
                # 55.41 and the model kept was step 240's 54.31).  Not on a signal: the user wants out, and
                # the checkpoint saved for resuming is enough.
                control.should_evaluate = True
                control.should_save = True
        return control

    def _fit(self, state, scheduler, elapsed: float) -> None:
        total = steps_that_fit(state.global_step, state.global_step - self.start_step, elapsed, self.budget_s,
                               self.orig_max_steps)
        self.next_fit = elapsed + 0.1 * self.budget_s
        if self.fitted_steps == total:
            return
        first = self.fitted_steps is None
        self.fitted_steps = total
        state.max_steps = total
        refit_schedule(scheduler, total, self.warmup_ratio)
        if first:
            log.info(f"time budget: about {total:,} steps fit; learning-rate schedule fitted to them")
