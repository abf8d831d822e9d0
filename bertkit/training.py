"""The training stages every training command shares: ``TrainingArguments`` from a
:class:`~bertkit.schemas.TrainConfig`, bertkit's callbacks, training with graceful signals, and saving
the run.  The ``Trainer`` and ``accelerate`` do the rest, so the same code runs on CPU, one GPU and many
(``accelerate launch`` / ``torchrun``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from .callbacks import Progress, Stopper
from .config import save_config
from .distributed import has_accelerator, is_main_process, is_peer_failure, process_ids
from .errors import PeerLost, UsageError, raise_no_room
from .outputs import (
    CHECKPOINTS,
    METRICS,
    command_line,
    find_checkpoint,
    pid_alive,
    prepare_output,
    write_final,
    write_json,
)
from .reporting import finish_run


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
    """TrainingArguments from a (validated) TrainConfig.  Checkpoints follow evaluation (needed to keep
    the best model) unless --save-steps is given."""
    from transformers import TrainingArguments

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
        use_cpu=not has_accelerator(),
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


def finetune_arguments(train, output: Path, metric: str) -> tuple:
    """A fine-tuning run's TrainingArguments (evaluation every epoch or every --eval-steps, the best
    checkpoint by ``metric`` kept and loaded at the end, the --batching order) and its early-stopping
    callbacks (--patience).  Returns (arguments, callbacks)."""
    from transformers import EarlyStoppingCallback

    from .metrics import greater_is_better

    metric = metric.removeprefix("eval_")
    args = training_arguments(
        train, output, eval_strategy="steps" if train.eval_steps else "epoch",
        load_best_model_at_end=True, metric_for_best_model=metric, greater_is_better=greater_is_better(metric),
        train_sampling_strategy="group_by_length" if train.batch_order() == "length" else "random",
        include_num_input_tokens_seen="no")
    return args, [EarlyStoppingCallback(early_stopping_patience=train.patience)] if train.patience else []


@contextlib.contextmanager
def start_run(cfg, command: str):
    """The stage that creates a training command's output, for the ``with`` block that prepares training
    (reading the data, loading the model, building the trainer): prepare the output dir (refuse, overwrite
    or resume) and save the resolved config there; yields (output dir, checkpoint to resume from or None).

    Commands validate the config and open the model first, so a bad flag or model leaves nothing behind;
    when the block fails (bad data), what this run put in the dir is removed again, and the dir itself if
    the run created it: a failed run leaves no output that holds only its config.  A resumed run's dir and
    whatever the user had there stay."""
    out = Path(cfg.output) if cfg.output else None
    existed = out is not None and out.is_dir()
    before = {p.name for p in out.iterdir()} if existed and not cfg.overwrite else set()
    out, resume_from = prepare_output(cfg.output, cfg.overwrite, cfg.train.resume)
    if is_main_process():
        save_config(cfg, out, command)
    try:
        yield out, resume_from
    except BaseException:
        if resume_from is None and is_main_process():
            for p in [p for p in out.iterdir() if p.name not in before] if existed else [out]:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        raise


def pad_multiple() -> int | None:
    """Dynamic padding rounds batch lengths up to a multiple of 8 on a GPU (tensor-core tile sizes); on a
    CPU the rounding only adds tokens (+8% on short SST-2 batches), so there is none."""
    return 8 if has_accelerator() else None


def default_callbacks(output: Path, unit: str, train) -> list:
    """bertkit's callbacks for a run: progress (counting ``unit``) and the stopper (signals, and the
    time budget of configs that have one)."""
    return [Progress(output, unit), Stopper(train.time_budget, train.warmup_ratio)]


def train_with_signals(trainer, output: Path, resume_from: str | None):
    """``trainer.train`` with graceful SIGINT/SIGTERM; returns (TrainOutput, seconds).  After a signal:
    tells how to resume and exits 130 (SIGINT) / 143 (SIGTERM).  In a distributed run, a peer that dies
    (killed, out of memory) breaks every collective: the survivors end with :class:`PeerLost` naming it
    and the checkpoint to resume from, saving nothing (a checkpoint needs every process)."""
    stopper = trainer.stopper
    peers = process_ids()
    t0 = time.time()
    stopper.install()
    try:
        result = trainer.train(resume_from_checkpoint=resume_from)
    except Exception as e:
        if peers and is_peer_failure(e):
            raise PeerLost(peer_lost_message(output, peers)) from None
        # a checkpoint being saved (one left without trainer_state.json is never resumed from)
        raise_no_room(e, output / CHECKPOINTS)
        raise
    finally:
        stopper.uninstall()
    if stopper.signal is not None:
        if is_main_process():
            print(f"bertkit: stopped; the checkpoint to resume from is {find_checkpoint(output)}. Resume with:\n  "
                  f"{command_line(drop=('--overwrite',))}", file=sys.stderr, flush=True)
        raise SystemExit(128 + int(stopper.signal))
    return result, time.time() - t0


def peer_lost_message(output: Path, peers: list[tuple[str, int]], wait_s: float = 2.0) -> str:
    """One line for a survivor: which rank died (a peer on this host whose process is gone; the broken
    connection can reach us a moment before the process is reaped) and the newest complete checkpoint."""
    host, me = socket.gethostname(), os.getpid()
    deadline = time.time() + wait_s
    while True:
        lost = [r for r, (h, pid) in enumerate(peers) if h == host and pid != me and not pid_alive(pid)]
        if lost or time.time() >= deadline:
            break
        time.sleep(0.1)
    who = (f"the process of rank {lost[0]} of this distributed run died" if len(lost) == 1 else
           f"the processes of ranks {', '.join(map(str, lost))} of this distributed run died" if lost else
           "a peer process of this distributed run died or stopped answering")
    ck = find_checkpoint(output)
    where = (f"the newest complete checkpoint is {ck}; the same command resumes from it" if ck else
             "no checkpoint was complete yet; the same command starts over")
    return f"{who}, so this one stops too; {where} (torchrun --max-restarts N restarts and resumes by itself)"


def run_metrics(trainer, result, train_time: float, unit: str, units: int) -> dict:
    """What every training run reports: loss, steps, epochs, seconds, and ``unit``/s of the training
    steps alone (counted by :class:`~bertkit.callbacks.Progress`: evaluations, logs and checkpoint saves
    left out; units of this process only when the run resumed)."""
    progress = trainer.progress
    step_s = progress.step_seconds
    return {
        "train_loss": result.training_loss,
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0.0, 4),
        "train_seconds": round(train_time, 2),
        "eval_seconds": round(progress.eval_seconds(), 2),
        f"{unit}_per_second": round((units - progress.start_units) / step_s, 2) if step_s > 0 else 0.0,
        **gpu_memory(),
    }


def gpu_memory() -> dict:
    """The most GPU memory this process's tensors held (``torch.cuda.max_memory_allocated``), nothing on a
    machine without CUDA.  ``nvidia-smi`` also counts the caching allocator's reserve and the CUDA context:
    3.9 GiB against this figure's 0.97 for BERT-tiny pretraining on an H200 (docs/benchmarks.md)."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return {}
    return {"gpu_peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)}


def examples_seen(trainer) -> int:
    args = trainer.args
    return trainer.state.global_step * args.train_batch_size * args.gradient_accumulation_steps * args.world_size


def save_run(trainer, tokenizer, output: Path, command: str, cfg, metrics: dict,
             card_extra: dict | None = None) -> None:
    """Final model + tokenizer (atomically), then metrics.json, the model card and curves.png."""
    def save(tmp: Path):
        trainer.model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))

    write_final(output, save)
    if is_main_process():
        write_json(output / METRICS, metrics)
        finish_run(output, command, cfg, metrics, trainer.progress.full_history, card_extra)
