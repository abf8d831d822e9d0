"""Hyperparameter sweeps on Optuna: the search space, the sweep's schema, pruning and the results.

``bertkit sweep finetune-cls ...`` (or ``finetune-qa``) takes every flag of the target command (the
fixed part of each trial) plus the sweep's own (``--param``, ``--trials``, ...): :class:`SweepFinetuneConfig`
(:class:`SweepFinetuneQAConfig`) is the target's schema with a ``search`` mapping and a ``sweep`` section
added, so the CLI generates both from one schema; :data:`bertkit.sweep_schema.TARGETS` says what each
target's schema, runner and metrics are.  Optuna is an extra (``bertkit[sweep]``): nothing here imports it
at module level.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import coerce, iter_all_fields, to_dict
from .errors import UsageError
from .log import get_logger
from .metrics import LOWER_IS_BETTER, METRICS_BY_PROBLEM, greater_is_better
from .schemas import FinetuneConfig
from .sweep_schema import TARGETS, SweepFields, SweepFinetuneConfig, SweepFinetuneQAConfig, target_config, target_of

log = get_logger()

EXTRA_HINT = "pip install 'bertkit[sweep]'"


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise UsageError(f"bertkit sweep needs Optuna, which is not installed: {EXTRA_HINT}") from None
    return optuna


# ------------------------------------------------------------------------------------------------
# Search space
# ------------------------------------------------------------------------------------------------

@dataclass
class Param:
    name: str             # what the user wrote, shown in tables (lr)
    key: str              # the schema's dotted key (train.lr)
    kind: str             # log, int, float, choice
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    def spec(self) -> str:
        if self.kind == "choice":
            return "choice:" + ",".join(map(str, self.choices))
        return f"{self.kind}:{_num(self.low)}:{_num(self.high)}"


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


_NOT_SEARCHABLE = {"output", "overwrite", "allow_pickle", "train.resume", "train.report_to", "data.train",
                   "data.validation", "data.test"}


def field_index(schema: type = FinetuneConfig) -> tuple[dict[str, tuple[str, Any]], dict[str, list[str]]]:
    """{dotted key: (key, type)} of the searchable fields and {short name: [dotted keys]}."""
    fields = {k: (k, tp) for k, _, tp in iter_all_fields(schema) if k not in _NOT_SEARCHABLE}
    short: dict[str, list[str]] = {}
    for k in fields:
        short.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    return fields, short


def resolve_name(name: str, schema: type = FinetuneConfig) -> tuple[str, Any]:
    """A field by dotted key (train.lr), short name (lr) or flag spelling (warmup-ratio) -> (key, type)."""
    fields, short = field_index(schema)
    n = name.strip().lstrip("-").replace("-", "_")
    if n in fields:
        return fields[n]
    keys = short.get(n, [])
    if len(keys) == 1:
        return fields[keys[0]]
    if len(keys) > 1:
        raise UsageError(f"--param {name}: ambiguous; use one of {', '.join(keys)}")
    valid = sorted(short[k][0].rsplit(".", 1)[-1] if len(short[k]) == 1 else k for k in short)
    command = next((t.command for t in TARGETS.values() if t.schema is schema), "the command")
    raise UsageError(f"--param {name}: not a field of {command}; searchable: {', '.join(valid)}")


def _base_type(tp):
    import typing

    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is not None and type(None) in typing.get_args(tp) and len(args) == 1:
        return args[0]
    return tp


def parse_param(text: str, schema: type = FinetuneConfig) -> Param:
    """``lr=log:1e-5:3e-4`` -> Param.  Kinds: log (log-uniform; int fields give log-spaced ints), int, float,
    choice (comma-separated values, each coerced to the field's type)."""
    if "=" not in text:
        raise UsageError(f"--param {text!r}: expected NAME=KIND:..., e.g. --param lr=log:1e-5:3e-4")
    name, _, spec = text.partition("=")
    return parse_spec(name.strip(), spec.strip(), schema)


def parse_spec(name: str, spec: Any, schema: type = FinetuneConfig) -> Param:
    key, tp = resolve_name(name, schema)
    where = f"--param {name}"
    base = _base_type(tp)
    if isinstance(spec, (list, tuple)):  # a recipe's `lr: [1e-5, 3e-5]` is a choice
        kind, rest = "choice", list(spec)
    else:
        kind, _, rest_s = str(spec).partition(":")
        kind = kind.strip().lower()
        rest = rest_s
    if kind == "choice":
        values = rest if isinstance(rest, list) else [v.strip() for v in rest.split(",") if v.strip()]
        if len(values) < 1:
            raise UsageError(f"{where}: choice needs values, e.g. {name}=choice:16,32")
        import yaml

        parsed = tuple(coerce(yaml.safe_load(v) if isinstance(v, str) else v, tp, key) for v in values)
        if len(set(map(repr, parsed))) != len(parsed):
            raise UsageError(f"{where}: repeated choices {list(parsed)}")
        return Param(name, key, "choice", choices=parsed)
    if kind not in ("log", "int", "float"):
        raise UsageError(f"{where}: unknown kind {kind!r}; "
                         "use log:LOW:HIGH, int:LOW:HIGH, float:LOW:HIGH or choice:A,B")
    if base not in (int, float):
        raise UsageError(f"{where}: {key} is not numeric; search it with choice:A,B,...")
    parts = rest.split(":")
    if len(parts) != 2:
        raise UsageError(f"{where}: expected {kind}:LOW:HIGH (got {spec!r})")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise UsageError(f"{where}: LOW and HIGH must be numbers (got {spec!r})") from None
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise UsageError(f"{where}: need LOW < HIGH (got {spec!r})")
    if kind == "log" and low <= 0:
        raise UsageError(f"{where}: log needs LOW > 0 (got {spec!r})")
    if kind == "float" and base is int:
        raise UsageError(f"{where}: {key} is an integer; use int:{parts[0]}:{parts[1]}")
    if kind == "int" or (kind == "log" and base is int):
        if not (low.is_integer() and high.is_integer()):
            raise UsageError(f"{where}: int bounds must be whole numbers (got {spec!r})")
        return Param(name, key, kind, int(low), int(high))
    return Param(name, key, kind, low, high)


def search_space(cfg: SweepFields) -> list[Param]:
    """The recipe's ``search:`` entries, then ``--param`` flags (a flag replaces a recipe entry of the same field);
    names are fields of the sweep's target command."""
    schema = target_of(cfg).schema
    params: dict[str, Param] = {}
    for name, spec in (cfg.search or {}).items():
        p = parse_spec(str(name), spec, schema)
        params[p.key] = p
    for text in cfg.sweep.params or []:
        p = parse_param(text, schema)
        params[p.key] = p
    if not params:
        raise UsageError("nothing to search: give --param NAME=KIND:... (e.g. --param lr=log:1e-5:3e-4) "
                         "or a search: section in the recipe")
    return list(params.values())


def suggest(trial, params: list[Param]) -> dict[str, Any]:
    """The trial's values, by dotted key.  Optuna's distribution names are the names the user wrote."""
    out = {}
    for p in params:
        if p.kind == "choice":
            out[p.key] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            out[p.key] = trial.suggest_int(p.name, p.low, p.high)
        elif p.kind == "log" and isinstance(p.low, int):
            out[p.key] = trial.suggest_int(p.name, p.low, p.high, log=True)
        else:
            out[p.key] = trial.suggest_float(p.name, p.low, p.high, log=p.kind == "log")
    return out


def grid_space(params: list[Param]) -> dict[str, list]:
    grid = {}
    for p in params:
        if p.kind == "choice":
            grid[p.name] = list(p.choices)
        elif p.kind == "int" and p.high - p.low <= 100:
            grid[p.name] = list(range(p.low, p.high + 1))
        else:
            raise UsageError(f"--sampler grid: --param {p.name}={p.spec()} is continuous; give it as "
                             f"choice:A,B,... (or int:LOW:HIGH)")
    return grid


# ------------------------------------------------------------------------------------------------
# Objective direction
# ------------------------------------------------------------------------------------------------

def direction(metric: str | None, command: str = "finetune-cls") -> str:
    """Optuna's direction of the target command's ``--metric`` (finetune-cls's None: the per-problem
    default, all maximised: accuracy, f1_micro, pearsonr; finetune-qa's f1 and exact_match are maximised)."""
    m = (metric or "accuracy").removeprefix("eval_")
    known = set(TARGETS[command].metrics or ())
    if not known:  # finetune-cls: whatever some problem computes
        known = {name for names in METRICS_BY_PROBLEM.values() for name in names} | LOWER_IS_BETTER
    if m not in known:
        raise UsageError(f"--metric {metric}: unknown direction; use one of {', '.join(sorted(known))}")
    return "maximize" if greater_is_better(m) else "minimize"


# ------------------------------------------------------------------------------------------------
# Pruning
# ------------------------------------------------------------------------------------------------

try:
    from transformers import TrainerCallback as _TrainerCallback
except ImportError:  # pragma: no cover - transformers is a dependency
    _TrainerCallback = object


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
    (README "Sweeps").  The trial still reports, so the others are compared with its value there; once
    judged, halving enters it into the rungs it passed with its value then (Optuna's rule for a trial that
    reports past a rung), a higher bar for the trials after it.  With this rule the half-epoch SST-2 sweep
    spent 61.2% of the unpruned steps (70.5% before), with the same best trial."""
    return bool(state.max_steps) and state.global_step < args.get_warmup_steps(state.max_steps)


class PruningCallback(_TrainerCallback):
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
            import optuna

            self.pruned_at = state.global_step
            raise optuna.TrialPruned(f"step {state.global_step}: {key.removeprefix('eval_')} {float(value):.4f}")


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------

def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def fmt_params(params: dict) -> str:
    return " ".join(f"{k}={fmt_value(v)}" for k, v in params.items())


def step_totals(rows: list[dict]) -> tuple[int, int]:
    """(steps the trials trained, steps they would have trained with none pruned)."""
    return sum(r["steps"] or 0 for r in rows), sum(r["planned_steps"] or 0 for r in rows)


def steps_line(spent: int, unpruned: int) -> str:
    """The steps a sweep trained, and what pruning saved of running its trials to their ends."""
    if unpruned <= spent:
        return f"{spent:,}"
    return f"{spent:,} ({spent / unpruned:.1%} of the {unpruned:,} its trials would have run unpruned)"


def trial_rows(study) -> list[dict]:
    """One row per trial: number, params, objective, state, steps, seconds; also ``planned_steps`` (a
    pruned trial's steps had it run to its end, else its steps) and ``note``, in sweep.json only."""
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        seconds = None
        if t.datetime_start and t.datetime_complete:
            seconds = round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
        rows.append({
            "number": t.number,
            "params": dict(t.params),
            "objective": t.value,
            "state": t.state.name,
            "steps": t.user_attrs.get("steps"),
            "planned_steps": t.user_attrs.get("planned_steps", t.user_attrs.get("steps")),
            "seconds": seconds,
            "note": t.user_attrs.get("note", ""),
        })
    return rows


def best_trial(study):
    import optuna

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if not done:
        return None
    return study.best_trial


def trials_csv(rows: list[dict], names: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["number", *names, "objective", "state", "steps", "seconds"])
    for r in rows:
        w.writerow([r["number"], *[r["params"].get(n, "") for n in names],
                    "" if r["objective"] is None else r["objective"], r["state"],
                    "" if r["steps"] is None else r["steps"], "" if r["seconds"] is None else r["seconds"]])
    return buf.getvalue()


def table(rows: list[dict], names: list[str], metric: str) -> str:
    """The trials as an aligned text table (``--report``)."""
    head = ["#", *names, metric, "state", "steps", "seconds"]
    body = [[str(r["number"]), *[fmt_value(r["params"].get(n, "")) for n in names],
             "" if r["objective"] is None else f"{r['objective']:.4f}", r["state"].lower(),
             "" if r["steps"] is None else str(r["steps"]), "" if r["seconds"] is None else f"{r['seconds']:.0f}"]
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in [head, *body])


def write_text(path: Path, text: str) -> None:
    """Atomic: a reader (another worker, the user) never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_results(out: Path, study, params: list[Param], metric: str, command: str, best_cfg=None) -> dict:
    """sweep.json, trials.csv and best.yaml (from the best trial's config); returns the summary dict."""
    import yaml

    rows = trial_rows(study)
    names = [p.name for p in params]
    best = best_trial(study)
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"].lower()] = states.get(r["state"].lower(), 0) + 1
    spent, unpruned = step_totals(rows)
    summary = {
        "command": command,
        "study": study.study_name,
        "direction": study.direction.name.lower(),
        "metric": metric,
        "search_space": {p.name: {"key": p.key, "spec": p.spec()} for p in params},
        "trials": states,
        "best": None if best is None else {"number": best.number, "objective": best.value, "params": best.params,
                                           "steps": best.user_attrs.get("steps")},
        "steps_total": spent,
        # what the same trials would have cost with none pruned: what pruning saved, in the sweep's own terms
        "steps_without_pruning": unpruned,
        "rows": rows,
    }
    write_text(out / "sweep.json", json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n")
    write_text(out / "trials.csv", trials_csv(rows, names))
    if best is not None and best_cfg is not None:
        data = {"command": command, **to_dict(best_cfg)}
        header = (f"# bertkit {command} --config {out / 'best.yaml'}\n"
                  f"# Reruns trial {best.number} of study '{study.study_name}' ({metric} {best.value:.4f}): "
                  f"{fmt_params(best.params)}\n")
        write_text(out / "best.yaml", header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return summary


def keep_best(out: Path, trial_dir: Path) -> Path | None:
    """OUTPUT/best/: the best trial's model directory (hard links where the filesystem allows, so it
    costs no disk), swapped in whole: a reader never sees a mix of two trials."""
    if not (trial_dir / "config.json").exists():
        return None
    dest = out / "best"
    tmp = out / f".best-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(trial_dir, tmp, copy_function=link, ignore=shutil.ignore_patterns("checkpoints", ".tmp*"))
    old = out / f".best-old-{os.getpid()}"
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def plot(out: Path, study, params: list[Param], metric: str) -> list[str]:
    """history.png (objective per trial, the running best) and importances.png (>= 2 params, >= 2
    complete trials); skipped without matplotlib.  Plain matplotlib: optuna.visualization.matplotlib is
    experimental and warns on every call."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: no history.png (pip install 'bertkit[plots]')")
        return []
    import optuna

    done = [t for t in study.get_trials(deepcopy=False) if t.value is not None
            and t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        return []
    written = []
    maximise = study.direction == optuna.study.StudyDirection.MAXIMIZE
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [t.number for t in done]
    ys = [t.value for t in done]
    ax.plot(xs, ys, "o", label=f"trial {metric}")
    best, run = None, []
    for y in ys:
        best = y if best is None else (max(best, y) if maximise else min(best, y))
        run.append(best)
    ax.step(xs, run, where="post", color="C3", label="best so far")
    pruned = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.PRUNED
              and t.intermediate_values]
    if pruned:
        ax.plot([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
                "x", color="grey", label="pruned (last report)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"sweep {study.study_name}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "history.png", dpi=100)
    plt.close(fig)
    written.append("history.png")
    if len(params) >= 2 and len(done) >= 2:
        try:
            imp = optuna.importance.get_param_importances(study)
        except Exception as e:  # noqa: BLE001 - importances need varied complete trials; the sweep stands without
            log.info(f"no importances.png ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
            imp = None
        if imp:
            fig, ax = plt.subplots(figsize=(6, 0.5 + 0.5 * len(imp)))
            names = list(imp)[::-1]
            ax.barh(names, [imp[n] for n in names])
            ax.set_xlabel(f"importance for {metric}")
            fig.tight_layout()
            fig.savefig(out / "importances.png", dpi=100)
            plt.close(fig)
            written.append("importances.png")
    return written


def config_fingerprint(cfg) -> dict:
    """What must be the same for workers to share a study: every fixed field but the output."""
    data = to_dict(cfg)
    data.pop("output", None)
    return json.loads(json.dumps(data, default=str))


def first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = first_difference(a.get(k), b.get(k), f"{prefix}{k}.")
            if d:
                return d
        return None
    return None if a == b else f"{prefix.rstrip('.')} ({b!r} in the study, {a!r} here)"


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def default_study_name(output: str) -> str:
    return _SAFE.sub("-", Path(output).resolve().name) or "sweep"


__all__ = ["SweepFinetuneConfig", "SweepFinetuneQAConfig", "Param", "parse_param", "search_space", "direction",
           "PruningCallback", "write_results", "keep_best", "plot", "target_config", "require_optuna"]
