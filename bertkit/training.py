"""Shared training machinery for pretrain-mlm and finetune-cls.

Builds ``TrainingArguments`` from a :class:`~bertkit.schemas.TrainConfig`, prepares the output
directory (resume / refuse / overwrite), adds bertkit's callbacks (progress with rate and ETA,
``training_log.jsonl``, time budget, graceful SIGINT/SIGTERM) and writes the final model atomically.
The ``Trainer`` and ``accelerate`` do the rest, so the same code runs on CPU, one GPU and many
(``accelerate launch`` / ``torchrun``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .config import parse_duration
from .errors import BertkitError, UsageError
from .log import get_logger, is_tty

log = get_logger()

CHECKPOINTS = "checkpoints"
TRAINING_LOG = "training_log.jsonl"
METRICS = "metrics.json"


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------

def _state():
    from accelerate import PartialState

    return PartialState()


def is_main_process() -> bool:
    if "RANK" not in os.environ and "LOCAL_RANK" not in os.environ:
        return True
    return _state().is_main_process


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def main_process_first():
    """The main process runs the block first (tokenizes, writes caches); the others wait, then run it
    and find the cache.  A no-op in a single process."""
    if world_size() <= 1:
        yield
        return
    with _state().main_process_first():
        yield


def wait_for_everyone() -> None:
    if world_size() > 1:
        _state().wait_for_everyone()


# --------------------------------------------------------------------------------------------
# Output directory
# --------------------------------------------------------------------------------------------

def find_checkpoint(output: Path) -> Path | None:
    ckdir = output / CHECKPOINTS
    if not ckdir.is_dir():
        return None
    cks = [p for p in ckdir.glob("checkpoint-*") if p.is_dir() and (p / "trainer_state.json").exists()]
    if not cks:
        return None
    return max(cks, key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1)


def prepare_output(output: str | None, overwrite: bool, resume: str) -> tuple[Path, str | None]:
    """Validate ``--output``; returns (path, checkpoint to resume from or None)."""
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
        else:
            ignorable = {"bertkit_config.yaml", "tokenized", CHECKPOINTS, TRAINING_LOG, ".stop"}
            if any(p.name not in ignorable and not p.name.startswith(".tmp") for p in out.iterdir()):
                raise UsageError(f"--output {output}: not empty and not a resumable run; pass --overwrite or choose another dir")
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
    wait_for_everyone()
    return out, resume_from


def write_final(output: Path, save_fn, extra_files: dict[str, str] | None = None) -> None:
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
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:
        pass
    return str(o)


# --------------------------------------------------------------------------------------------
# TrainingArguments
# --------------------------------------------------------------------------------------------

def check_numbers(train) -> None:
    if train.batch_size < 1:
        raise UsageError(f"--batch-size {train.batch_size}: must be at least 1")
    if train.grad_accum < 1:
        raise UsageError(f"--grad-accum {train.grad_accum}: must be at least 1")
    if not train.lr > 0:
        raise UsageError(f"--lr {train.lr}: must be positive")
    if train.max_steps is not None and train.max_steps < 1:
        raise UsageError(f"--max-steps {train.max_steps}: must be at least 1")
    if train.max_steps is None and not train.epochs > 0:
        raise UsageError(f"--epochs {train.epochs}: must be positive")
    if not 0 <= train.warmup_ratio < 1:
        raise UsageError(f"--warmup-ratio {train.warmup_ratio}: must be in [0, 1)")
    if train.logging_steps < 1:
        raise UsageError(f"--logging-steps {train.logging_steps}: must be at least 1")
    for flag, v in (("--eval-steps", train.eval_steps), ("--save-steps", train.save_steps)):
        if v is not None and v < 1:
            raise UsageError(f"{flag} {v}: must be at least 1")
    if train.report_to not in ("none", "tensorboard"):
        raise UsageError(f"--report-to {train.report_to}: use none or tensorboard (bertkit reports nowhere remote)")


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (getattr(torch.backends, "mps", None) is not None
                                         and torch.backends.mps.is_available())


def precision_flags(precision: str) -> dict[str, bool]:
    import torch

    if precision == "auto":
        if torch.cuda.is_available():
            return {"bf16": True} if torch.cuda.is_bf16_supported() else {"fp16": True}
        return {}
    if precision == "bf16":
        return {"bf16": True}
    if precision == "fp16":
        if not torch.cuda.is_available():
            raise UsageError("--precision fp16 needs a CUDA GPU; on CPU use --precision bf16 or no")
        return {"fp16": True}
    return {}


def training_arguments(train, output: Path, *, eval_strategy: str, max_steps: int | None = None,
                       eval_steps: int | None = None, **extra):
    """TrainingArguments from a TrainConfig.  Checkpoints follow evaluation (needed to keep the best
    model) unless --save-steps is given."""
    from transformers import TrainingArguments

    check_numbers(train)
    steps = max_steps if max_steps is not None else train.max_steps
    eval_steps = eval_steps or train.eval_steps
    if eval_strategy == "steps" and not eval_steps:
        eval_strategy = "epoch"
    if train.save_steps:
        save_strategy, save_steps = "steps", train.save_steps
    elif eval_strategy == "steps":
        save_strategy, save_steps = "steps", eval_steps
    elif eval_strategy == "epoch":
        save_strategy, save_steps = "epoch", None
    elif steps:
        save_strategy, save_steps = "steps", max(1, steps // 5)
    else:
        save_strategy, save_steps = "epoch", None
    kwargs = dict(
        output_dir=str(output / CHECKPOINTS),
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.batch_size * 2,
        gradient_accumulation_steps=train.grad_accum,
        learning_rate=train.lr,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup_ratio,
        lr_scheduler_type=train.scheduler,
        num_train_epochs=train.epochs,
        max_steps=steps if steps else -1,
        seed=train.seed,
        data_seed=train.seed,
        logging_steps=train.logging_steps,
        logging_first_step=True,
        eval_strategy=eval_strategy,
        save_strategy=save_strategy,
        save_total_limit=train.save_total_limit,
        dataloader_num_workers=train.num_workers,
        report_to=[] if train.report_to == "none" else [train.report_to],
        disable_tqdm=True,
        # the fused AdamW is one kernel for all parameters (on CPU too); the per-tensor loop spends
        # ~18% of a short-sequence MiniLM step there
        optim="adamw_torch_fused",
        torch_compile=train.compile,
        # Without a GPU, use_cpu makes accelerate run torchrun/accelerate-launch processes as MULTI_CPU
        # (gloo) DDP; without it each process would silently train on its own.
        use_cpu=not _has_accelerator(),
        ddp_find_unused_parameters=False,
        **precision_flags(train.precision),
    )
    if eval_strategy == "steps":
        kwargs["eval_steps"] = eval_steps
    if save_strategy == "steps":
        kwargs["save_steps"] = save_steps
    kwargs.update(extra)
    if train.report_to == "tensorboard":
        # transformers 5 reads the TensorBoard directory from the environment (no logging_dir argument)
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(output / "runs"))
    try:
        return TrainingArguments(**kwargs)
    except ValueError as e:
        raise UsageError(f"invalid training settings: {str(e).splitlines()[0]}") from None


# --------------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------------

def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def make_callbacks(output: Path, unit: str, time_budget: str | None = None, warmup_ratio: float = 0.0):
    """Callbacks shared by the training commands.

    ``unit`` is what throughput counts: ``tokens`` (pretraining, non-padding tokens) or ``examples``.
    """
    from transformers import TrainerCallback

    budget_s = parse_duration(time_budget)

    class Progress(TrainerCallback):
        """Rate and ETA: a live bar on a terminal, periodic plain lines otherwise; one JSON line per log
        step in training_log.jsonl (step, loss, lr, throughput, eval metrics)."""

        def __init__(self):
            self.t0 = None
            self.last_t = None
            self.last_units = 0
            self.bar = None
            self.log_path = output / TRAINING_LOG
            self.history: list[dict] = []
            self.eval_t0 = None

        def _units(self, state, args):
            if unit == "tokens" and state.num_input_tokens_seen:
                return int(state.num_input_tokens_seen)
            return state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = self.last_t = time.time()
            self.start_step = state.global_step
            self.last_units = self._units(state, args)
            if state.is_world_process_zero and is_tty() and not _quiet():
                from tqdm.auto import tqdm

                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="Training", unit="step",
                                dynamic_ncols=True, file=sys.stderr)

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "train_loss" in logs:  # the end-of-training summary
                return
            now = time.time()
            units = self._units(state, args)
            rec = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
            rec.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in logs.items()})
            if "loss" in logs:
                dt = max(now - self.last_t, 1e-9)
                rec[f"{unit}_per_s"] = round((units - self.last_units) / dt, 1)
                rec[f"{unit}_seen"] = units
                self.last_t, self.last_units = now, units
            done = state.global_step - self.start_step
            if done > 0 and state.max_steps:
                eta = (now - self.t0) / done * (state.max_steps - state.global_step)
                rec["eta_s"] = round(eta, 1)
            rec["elapsed_s"] = round(now - self.t0, 1)
            self.history.append(rec)  # on every process: callers decide collectively from it
            if not state.is_world_process_zero:
                return
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self._print(rec, state)

        def _print(self, rec, state):
            if _quiet():
                return
            parts = [f"step {rec['step']}/{state.max_steps}"]
            for k in ("loss", "eval_loss", "eval_accuracy", "eval_f1", "eval_masked_accuracy", "eval_perplexity",
                      "eval_pearsonr", "eval_f1_micro"):
                if k in rec:
                    parts.append(f"{k} {rec[k]:.4f}")
            if "learning_rate" in rec:
                parts.append(f"lr {rec['learning_rate']:.2e}")
            if f"{unit}_per_s" in rec:
                parts.append(f"{rec[f'{unit}_per_s']:,.0f} {unit}/s")
            if "padding_share" in rec:
                parts.append(f"padding {rec['padding_share']:.1%}")
            if "eta_s" in rec:
                parts.append(f"ETA {_fmt_time(rec['eta_s'])}")
            line = " | ".join(parts)
            if self.bar is not None:
                self.bar.set_postfix_str(", ".join(parts[1:3]))
                self.bar.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr, flush=True)

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    class Stopper(TrainerCallback):
        """Graceful stop: SIGINT/SIGTERM or the time budget ends training after the current step
        with a checkpoint saved."""

        def __init__(self):
            self.signal: int | None = None
            self.budget_hit = False
            self.t0 = None
            self._old = {}

        def install(self):
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._old[sig] = signal.signal(sig, self._handle)
                except ValueError:  # not the main thread
                    pass

        def uninstall(self):
            for sig, h in self._old.items():
                signal.signal(sig, h)

        def _handle(self, signum, frame):
            if self.signal is not None:  # second signal: stop now
                raise KeyboardInterrupt
            self.signal = signum
            print(f"\nbertkit: got {signal.Signals(signum).name}; saving a checkpoint and stopping "
                  "(send again to stop at once)", file=sys.stderr, flush=True)

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.time()
            self.start_step = state.global_step
            self.fitted_steps = None
            self.orig_max_steps = state.max_steps
            self.next_fit = 0.05 * (budget_s or 0)

        def on_step_end(self, args, state, control, **kw):
            elapsed = time.time() - self.t0
            if args.world_size > 1:
                elapsed = self._agree(args, elapsed)
            if budget_s is not None:
                # The run ends on the clock, or where the schedule fitted to the clock has decayed to 0
                # (transformers' flow callback stops at state.max_steps, the fitted step count).
                fitted_end = (self.fitted_steps and state.global_step >= self.fitted_steps
                              and not (self.orig_max_steps and self.fitted_steps >= self.orig_max_steps))
                if elapsed >= budget_s or fitted_end:
                    self.budget_hit = True
                elif state.global_step - self.start_step >= 10 and elapsed >= self.next_fit:
                    self._fit_schedule(state, kw.get("lr_scheduler"), elapsed)
            if self.signal is not None or self.budget_hit:
                control.should_training_stop = True
                control.should_save = self.signal is not None
            return control

        def _agree(self, args, elapsed: float) -> float:
            """Several processes must take the same decisions at the same step: each measures its own
            clock and may catch a signal alone, and a process that stops or refits the schedule on its
            own leaves the others waiting in a collective (a hang) or training at another learning rate.
            One all-reduce (max) per step of the clock and the signal makes every decision common.  Its
            cost is one tiny collective (and, on a GPU, a sync): pretraining's Trainer already gathers
            and syncs every step to count tokens."""
            import torch
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                return elapsed
            t = torch.tensor([elapsed, float(self.signal or 0)], device=args.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            elapsed, sig = t.tolist()
            if sig and self.signal is None:
                self.signal = int(sig)
            return elapsed

        def _fit_schedule(self, state, scheduler, elapsed: float) -> None:
            """Fit the learning-rate schedule to the time budget, so it completes its warm-up and
            decay by the deadline: estimate the steps that fit from the measured step time and give
            the scheduler's lambdas that step count.  Refitted every 10% of the budget; training stops on
            the clock or at the fitted step count, whichever comes first."""
            done = state.global_step - self.start_step
            per_step = elapsed / done
            total = state.global_step + max(1, int((budget_s - elapsed) / per_step))
            self.next_fit = elapsed + 0.1 * budget_s
            total = min(total, self.orig_max_steps) if self.orig_max_steps else total
            if self.fitted_steps == total:
                return
            first = self.fitted_steps is None
            self.fitted_steps = total
            state.max_steps = total
            lambdas = getattr(scheduler, "lr_lambdas", None) or []
            for i, fn in enumerate(lambdas):
                kws = getattr(fn, "keywords", None)
                if kws and "num_training_steps" in kws:
                    new = dict(kws, num_training_steps=total)
                    if "num_warmup_steps" in kws:
                        new["num_warmup_steps"] = min(kws["num_warmup_steps"], int(warmup_ratio * total))
                    lambdas[i] = functools.partial(fn.func, *fn.args, **new)
            if not first:
                return
            log.info(f"time budget: about {total:,} steps fit; learning-rate schedule fitted to them")

    return Progress(), Stopper()


def _quiet() -> bool:
    from .log import quiet

    return quiet()


def remove_default_printers(trainer) -> None:
    """Our Progress callback replaces the Trainer's dict printer and tqdm bar."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)


def exit_for_signal(stopper, output: Path, command_hint: str) -> None:
    """After a graceful stop: tell how to resume and exit 130 (SIGINT) / 143 (SIGTERM)."""
    if stopper.signal is None:
        return
    code = 128 + int(stopper.signal)
    if is_main_process():
        print(f"bertkit: stopped; a checkpoint is in {output / CHECKPOINTS}. Resume with the same command:\n  "
              f"{command_hint}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def command_line() -> str:
    import shlex

    argv = list(sys.argv)
    prog = "bertkit" if argv and (argv[0].endswith("bertkit") or argv[0].endswith("__main__.py")) else argv[0] if argv else "bertkit"
    return " ".join([prog] + [shlex.quote(a) for a in argv[1:]])


def eval_seconds(history: list[dict]) -> float:
    """Seconds spent in evaluations during training (the Trainer logs each one's ``eval_runtime``), so
    throughput figures can leave them out."""
    return float(sum(r.get("eval_runtime") or 0.0 for r in history))


def train_with_signals(trainer, stopper, output: Path, resume_from: str | None):
    """``trainer.train`` with graceful SIGINT/SIGTERM; returns (TrainOutput, seconds)."""
    t0 = time.time()
    stopper.install()
    try:
        result = trainer.train(resume_from_checkpoint=resume_from)
    finally:
        stopper.uninstall()
    exit_for_signal(stopper, output, command_line())
    return result, time.time() - t0


def save_run(trainer, tokenizer, output: Path, command: str, cfg, metrics: dict, history: list[dict],
             card_extra: dict | None = None) -> None:
    """Final model + tokenizer (atomically), then metrics.json, the model card and curves.png."""
    def save(tmp: Path):
        trainer.model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))

    write_final(output, save)
    if is_main_process():
        from .reporting import finish_run

        write_json(output / METRICS, metrics)
        finish_run(output, command, cfg, metrics, history, card_extra)


def steps_per_epoch(n_examples: int, train) -> int:
    per_step = train.batch_size * train.grad_accum * max(world_size(), 1)
    return max(1, math.ceil(n_examples / per_step))


__all__ = ["prepare_output", "training_arguments", "make_callbacks", "write_final", "write_json", "find_checkpoint",
           "main_process_first", "is_main_process", "exit_for_signal", "BertkitError"]
