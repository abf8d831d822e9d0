"""The schema of ``bertkit sweep <command>``: the target command's schema plus a ``search`` mapping and a
``sweep`` section, and :data:`TARGETS`, the commands a sweep can run (finetune-cls, finetune-qa,
finetune-ner, distill) with their schemas, runners and metrics; the sweep's settings saved in its output and read back
by ``--resume``.  The CLI imports every schema at start-up, so this module imports neither Optuna nor
transformers."""

from __future__ import annotations

import typing
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import ClassVar, Literal

import yaml

from ..config import CONFIG_FILENAME, from_dict, opt, resolve, section, set_dotted, to_dict
from ..errors import UsageError
from ..outputs import write_text
from ..schemas import NER_METRICS, DistillConfig, FinetuneConfig, FinetuneNERConfig, FinetuneQAConfig


@dataclass
class SweepSection:
    params: list[str] = opt(None, "A searched field: NAME=log:LOW:HIGH, int:LOW:HIGH, float:LOW:HIGH or choice:A,B,... "
                                  "(e.g. lr=log:1e-5:3e-4, epochs=int:2:6, batch_size=choice:16,32); repeatable.",
                            "--param", factory=list)
    trials: int = opt(20, "Trials in the whole study, shared by every worker (failed trials are not counted).",
                      "--trials")
    timeout: str | None = opt(None, "This worker starts no new trial after this wall time, e.g. 2h.", "--timeout")
    sampler: Literal["tpe", "random", "grid"] = opt(
        "tpe", "tpe (Optuna's default), random, or grid (choice and int params only; stops when the grid is done).",
        "--sampler", choices=("tpe", "random", "grid"))
    pruner: Literal["median", "halving", "hyperband", "none"] = opt(
        "median", "Stop bad trials at an evaluation: median (below the median of complete trials, after 3 "
                  "of them), halving (successive halving: only the best third goes on at each rung; the "
                  "fewest steps), hyperband (halving in several brackets), none. No trial is judged at its "
                  "last evaluation or while its lr warms up.", "--pruner",
        choices=("median", "halving", "hyperband", "none"))
    storage: str | None = opt(None, "Where the study lives: a journal file path (default OUTPUT/study.journal), "
                                       "sqlite:///FILE.db or any RDB URL; workers sharing it share the study.",
                                 "--storage")
    study: str | None = opt(None, "Study name in the storage (default: the --output directory's name).", "--study")
    keep_best: bool = opt(True, "Keep the best trial's model as OUTPUT/best/.", "--keep-best/--no-keep-best")
    resume: bool = opt(False, "Continue the sweep in --output with the settings it was started with "
                              "(rerunning the same command continues it too).", "--resume")
    threads: int | None = opt(None, "Torch threads per worker (default: CPU cores / workers running on this host).",
                                 "--threads")


@dataclass
class TrialTrainFields:
    """Mixed into the target's ``train`` section: every trial starts afresh in its own directory, and the
    --resume flag belongs to the sweep (SweepSection.resume)."""
    resume: str = opt("no", "Trials never resume a checkpoint.")


@dataclass
class SweepFields:
    """Mixed into the target command's schema (placed first among the bases, so these fields override the
    target's and come after its own in the CLI and the saved config)."""
    command: ClassVar[str]  # the target command: TARGETS[command]
    # the sweep owns --output (trials go to OUTPUT/trials/<n>) and never overwrites a study
    overwrite: bool = opt(False, "Not used by sweeps: trials write to new directories.")
    search: dict | None = opt(None, "Search space in a recipe: {name: 'log:1e-5:3e-4' | [choices]}; "
                                       "--param adds to it.")
    sweep: SweepSection = section(SweepSection)


def make_sweep_schema(name: str, command: str, target: type) -> type:
    """``bertkit sweep COMMAND``'s schema: the target's, whose ``train`` section gets TrialTrainFields, with
    SweepFields.  Made by one function (dataclasses.make_dataclass) so every target's sweep schema is built
    the same way; a sweep config's class names its target (``command``)."""
    train = typing.get_type_hints(target)["train"]
    trial_train = make_dataclass(f"Sweep{train.__name__}", [], bases=(TrialTrainFields, train),
                                 namespace={"__module__": __name__})
    return make_dataclass(name, [("train", trial_train, section(trial_train))], bases=(SweepFields, target),
                          namespace={"__module__": __name__, "command": command})


SweepFinetuneConfig = make_sweep_schema("SweepFinetuneConfig", "finetune-cls", FinetuneConfig)
SweepFinetuneQAConfig = make_sweep_schema("SweepFinetuneQAConfig", "finetune-qa", FinetuneQAConfig)
SweepFinetuneNERConfig = make_sweep_schema("SweepFinetuneNERConfig", "finetune-ner", FinetuneNERConfig)
SweepDistillConfig = make_sweep_schema("SweepDistillConfig", "distill", DistillConfig)


@dataclass(frozen=True)
class Target:
    """A command a sweep runs: each trial is ``bertkit.commands.<module>.run(config, callbacks=[pruning])``."""
    command: str            # finetune-qa
    schema: type            # its config (FinetuneQAConfig): what --param names are checked against
    sweep_schema: type      # the sweep's (SweepFinetuneQAConfig): the CLI's flags for `bertkit sweep finetune-qa`
    module: str             # finetune_qa
    # the --metric values it evaluates (the objective; direction from metrics.greater_is_better); None:
    # finetune-cls's, every metric of metrics.METRICS_BY_PROBLEM and loss (kept out of here: it imports numpy)
    metrics: tuple[str, ...] | None = None
    any_kind: bool = False  # its --metric is that of the teacher's kind: any target's metric is known
    model_field: str = "model"  # the field naming the model the trials start from (checked once)


# Another command becomes sweepable by one entry here (its schema's sweep schema made by make_sweep_schema):
# the CLI registers `bertkit sweep COMMAND` from this table and each trial runs commands/<module>.run.
TARGETS: dict[str, Target] = {
    "finetune-cls": Target("finetune-cls", FinetuneConfig, SweepFinetuneConfig, "finetune_cls"),
    # QATrainer scores EM/F1 without labels in the evaluation windows: no eval loss to minimise
    "finetune-qa": Target("finetune-qa", FinetuneQAConfig, SweepFinetuneQAConfig, "finetune_qa",
                          metrics=("f1", "exact_match")),
    "finetune-ner": Target("finetune-ner", FinetuneNERConfig, SweepFinetuneNERConfig, "finetune_ner",
                           metrics=NER_METRICS),
    # a student's --alpha, --temperature, lr ... against its validation metric (the teacher's kind's)
    "distill": Target("distill", DistillConfig, SweepDistillConfig, "distill", any_kind=True,
                      model_field="teacher"),
}


def target_of(cfg) -> Target:
    """The target of a sweep config (its schema class says which)."""
    return TARGETS[type(cfg).command]


def target_config(cfg: SweepFields, params: dict | None = None, output: str | None = None):
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
    return from_dict(target_of(cfg).schema, data, source="sweep")


def save_sweep_config(cfg: SweepFields) -> None:
    """OUTPUT/bertkit_config.yaml: the resolved sweep settings, which --resume reads back."""
    command = type(cfg).command
    data = {"command": f"sweep {command}", **to_dict(cfg)}
    data["sweep"]["resume"] = False
    out = Path(cfg.output)
    header = f"# Resolved bertkit sweep; continue with: bertkit sweep {command} --output {out} --resume\n"
    write_text(out / CONFIG_FILENAME, header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def resumed_config(cfg: SweepFields) -> SweepFields:
    """--resume: the settings the sweep in ``cfg.output`` was started with, and from the command line what
    may change between runs of one study: how long this worker runs, and where."""
    out = Path(cfg.output)
    saved = out / CONFIG_FILENAME
    if not saved.is_file():
        raise UsageError(f"--resume: {saved} not found; start the sweep without --resume first")
    _check_saved_command(saved, type(cfg).command)
    resumed = resolve(type(cfg), saved)
    for name in ("trials", "timeout", "threads", "storage"):
        if getattr(cfg.sweep, name) != getattr(SweepSection(), name):
            setattr(resumed.sweep, name, getattr(cfg.sweep, name))
    resumed.output = str(out)
    return resumed


def _check_saved_command(saved: Path, command: str) -> None:
    """The saved settings fit only the command the sweep was started with."""
    try:
        started = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("command")
    except (yaml.YAMLError, AttributeError):
        started = None  # resolve() says what is wrong with the file
    if not started or started == f"sweep {command}":
        return
    if started.startswith("sweep "):
        raise UsageError(f"--resume: the sweep in {saved.parent} was started as `bertkit {started}`, not "
                         f"`bertkit sweep {command}`; resume it with `bertkit {started} --output {saved.parent} "
                         "--resume`")
    # a run of another command (finetune-cls...), which no sweep continues: nothing to suggest but another dir
    raise UsageError(f"--resume: {saved.parent} holds a {started} run, not a sweep; give the sweep another "
                     "--output (without --resume to start it)")
