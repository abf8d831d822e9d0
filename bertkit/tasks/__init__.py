"""Task kinds behind one interface (:class:`bertkit.tasks.base.Task`): one module per kind.

A new kind is one module with a ``TASK`` class, named in ``MODULES``; predict, evaluate, export, serve and
the sweeps find it here (by name, or from a model dir's architectures) and never branch on kind names.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module

from ..errors import UsageError
from .base import (
    ModelFn,
    Scored,
    Task,
    Windows,
    batches,
    iter_windows,
    pad_batch,
    predict_records,
    run_chunks,
    run_windows,
    torch_model_fn,
    trim_freed_memory,
)

MODULES = ("classification", "fill_mask", "question_answering", "token_classification")

__all__ = ["ModelFn", "Scored", "Task", "Windows", "batches", "pad_batch", "predict_records", "run_chunks",
           "iter_windows", "run_windows", "torch_model_fn", "trim_freed_memory", "kinds", "names", "get", "detect"]


@cache
def kinds() -> dict[str, type[Task]]:
    """Every task kind by name, in ``MODULES`` order."""
    found = [import_module(f"{__name__}.{m}").TASK for m in MODULES]
    return {t.name: t for t in found}


def names() -> tuple[str, ...]:
    return tuple(kinds())


def get(name: str) -> type[Task]:
    try:
        return kinds()[name]
    except KeyError:
        raise UsageError(f"--task {name}: use auto or one of {', '.join(names())}") from None


def detect(config, forced: str = "auto") -> type[Task]:
    """The kind of a model dir, from its config's architectures (or ``forced``)."""
    if forced != "auto":
        return get(forced)
    for t in kinds().values():
        if t.matches(config):
            return t
    archs = " ".join(getattr(config, "architectures", None) or []) or "(none)"
    raise UsageError(f"--model: cannot tell the task from architectures {archs}; pass --task "
                     + ", ".join(names()))
