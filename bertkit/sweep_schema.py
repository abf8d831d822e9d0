"""The schema of ``bertkit sweep <command>``: the target command's schema plus a ``search`` mapping and
a ``sweep`` section.  Kept apart from :mod:`bertkit.sweep`, which imports transformers (3.5 s), because
the CLI imports every schema at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from .config import from_dict, opt, section, set_dotted, to_dict
from .schemas import FinetuneConfig, FinetuneTrainConfig


@dataclass
class SweepSection:
    params: list[str] = opt(None, "A searched field: NAME=log:LOW:HIGH, int:LOW:HIGH, float:LOW:HIGH or choice:A,B,... "
                                  "(e.g. lr=log:1e-5:3e-4, epochs=int:2:6, batch_size=choice:16,32); repeatable.",
                            "--param", factory=list)
    trials: int = opt(20, "Trials in the whole study, shared by every worker (failed trials are not counted).",
                      "--trials")
    timeout: Optional[str] = opt(None, "This worker starts no new trial after this wall time, e.g. 2h.", "--timeout")
    sampler: Literal["tpe", "random", "grid"] = opt(
        "tpe", "tpe (Optuna's default), random, or grid (choice and int params only; stops when the grid is done).",
        "--sampler", choices=("tpe", "random", "grid"))
    pruner: Literal["median", "hyperband", "none"] = opt(
        "median", "Stop bad trials at an evaluation: median (after 3 complete trials), hyperband, none.", "--pruner",
        choices=("median", "hyperband", "none"))
    storage: Optional[str] = opt(None, "Where the study lives: a journal file path (default OUTPUT/study.journal), "
                                       "sqlite:///FILE.db or any RDB URL; workers sharing it share the study.",
                                 "--storage")
    study: Optional[str] = opt(None, "Study name in the storage (default: the --output directory's name).", "--study")
    keep_best: bool = opt(True, "Keep the best trial's model as OUTPUT/best/.", "--keep-best/--no-keep-best")
    resume: bool = opt(False, "Continue the sweep in --output with the settings it was started with "
                              "(rerunning the same command continues it too).", "--resume")
    threads: Optional[int] = opt(None, "Torch threads per worker (default: CPU cores / workers running on this host).",
                                 "--threads")


@dataclass
class SweepTrainConfig(FinetuneTrainConfig):
    # every trial starts afresh in its own directory: the flag belongs to the sweep (--resume)
    resume: str = opt("no", "Trials never resume a checkpoint.")


@dataclass
class SweepFinetuneConfig(FinetuneConfig):
    # the sweep owns --output (trials go to OUTPUT/trials/<n>) and never overwrites a study
    overwrite: bool = opt(False, "Not used by sweeps: trials write to new directories.")
    train: SweepTrainConfig = section(SweepTrainConfig)
    search: Optional[dict] = opt(None, "Search space in a recipe: {name: 'log:1e-5:3e-4' | [choices]}; --param adds to it.")
    sweep: SweepSection = section(SweepSection)


TARGETS: dict[str, type] = {"finetune-cls": FinetuneConfig}


def target_config(cfg: SweepFinetuneConfig, command: str = "finetune-cls", params: dict | None = None,
                  output: str | None = None):
    """The target command's config of one trial: the fixed fields, the trial's params, its output."""
    data = to_dict(cfg)
    data.pop("search", None)
    data.pop("sweep", None)
    data["overwrite"] = False
    data["train"]["resume"] = "no"
    if output is not None:
        data["output"] = output
    for key, value in (params or {}).items():
        set_dotted(data, key, value)
    return from_dict(TARGETS[command], data, source="sweep")
