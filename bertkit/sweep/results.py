"""What a sweep leaves and prints: sweep.json, trials.csv and best.yaml (rewritten after every trial, so a
long sweep can be followed), OUTPUT/best/, the plots, the progress line of each trial and the ``--report``
table."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from ..config import to_dict
from ..log import get_logger
from ..outputs import StagedDir, write_text
from ..summary import fmt_duration
from . import require_optuna
from .space import Param

optuna = require_optuna()  # the sweep extra: a UsageError saying how to install it, not an ImportError
log = get_logger()


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
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)).rstrip()
                     for line in [head, *body])


def write_results(out: Path, study, params: list[Param], metric: str, command: str, best_cfg=None) -> dict:
    """sweep.json, trials.csv and best.yaml (from the best trial's config); returns the summary dict."""
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

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    with StagedDir(out / "best", "sweep") as tmp:
        shutil.copytree(trial_dir, tmp, copy_function=link, ignore=shutil.ignore_patterns("checkpoints", ".tmp*"))
    return out / "best"


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


def progress_line(number: int, params: dict, state: str, value, metric: str, seconds: float, note: str,
                  best, done: int, total: int, eta: float) -> str:
    """One trial's line on stderr: its params, its result, the best so far, the count and the time left."""
    shown = f"{metric} {value:.4f}" if value is not None else (note or state.lower())
    best_s = f"best {best.value:.4f} (trial {best.number})" if best is not None else "no best yet"
    return (f"trial {number} {state.lower()}: {fmt_params(params)} | {shown} | {best_s} | "
            f"{done}/{total} done, {seconds:.0f}s, ETA {fmt_duration(eta)}")


def report_lines(study) -> list[str]:
    """``bertkit sweep --report``: the trials table of a study, the steps they trained and the best trial."""
    info = study.user_attrs.get("bertkit", {})
    metric = study.user_attrs.get("objective") or info.get("metric", "objective")
    rows = trial_rows(study)
    names = list(info.get("space") or dict.fromkeys(k for r in rows for k in r["params"]))
    lines = [table(rows, names, metric), f"training steps: {steps_line(*step_totals(rows))}"]
    best = best_trial(study)
    lines.append(f"best: trial {best.number}, {metric} {best.value:.4f}: {fmt_params(best.params)}" if best
                 else "best: no complete trial yet")
    return lines
