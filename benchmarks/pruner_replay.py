#!/usr/bin/env python
"""Benchmark: bertkit's sweep pruners replayed on the validation curves of finished sweeps.

A real sweep gives one number per pruner, and that number moves with the trials the sampler happened to
draw (a 12-trial sweep on SST-2 takes ~40 min of a core).  This replays recorded curves instead: every
complete trial of the given studies (its metric at each evaluation, as reported to Optuna) is a curve;
each of ``--orders`` random draws of ``--trials`` curves is run through each pruner exactly as a sweep
would (``bertkit.sweep.pruning.make_pruner``: the same Optuna objects, no pruning at a trial's last
evaluation), and the script prints, per pruner, the training steps spent as a share of running every
trial to its end, and what the pruned sweep found.  ``--in-order`` replays one unpruned study's trials
in the order its sampler drew them instead: the pruning decisions of that very sweep, exact up to how
the sampler would have reacted to them (TPE drew the same 12 trials with and without halving on SST-2).
Random orders cannot show that reaction; the real sweep (benchmarks/sweep_sst2.py) does.

    .venv/bin/python benchmarks/pruner_replay.py runs/sweep-sst2/unpruned/study.journal \\
        runs/sweep-sst2/pruned/study.journal --reference 0.8509
    .venv/bin/python benchmarks/pruner_replay.py runs/sweep-sst2/unpruned/study.journal --in-order --trials 12
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load_curves(paths: list[str], study: str | None):
    """The distinct complete trials of the studies in these journal files, in trial-number order:
    (objective, [(report step, training steps, value)...], warm-up steps) each, and the studies' direction."""
    from types import SimpleNamespace

    import optuna
    from optuna.storages.journal import JournalFileBackend
    from transformers import TrainingArguments

    curves, direction = {}, None
    for path in paths:
        storage = optuna.storages.JournalStorage(JournalFileBackend(path))
        names = [study] if study else optuna.get_all_study_names(storage)
        for name in names:
            s = optuna.load_study(study_name=name, storage=storage)
            direction = direction or s.direction
            # the warm-up of trials that do not search it: the study's fixed config
            fixed = s.user_attrs.get("bertkit", {}).get("config", {}).get("train", {})
            for t in s.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                reports = sorted(t.intermediate_values.items())
                steps = t.user_attrs.get("steps")
                if not reports or not steps:
                    continue
                per_step = steps / reports[-1][0]  # training steps per report step (thousandths of an epoch)
                curve = [(r, round(r * per_step), v) for r, v in reports]
                ratio = t.user_attrs.get("keys", {}).get("train.warmup_ratio", fixed.get("warmup_ratio", 0.0))
                # the rule sweep.warming_up applies (below 1 a share of the steps), without building a
                # TrainingArguments per curve (2 s for the first)
                warm = TrainingArguments.get_warmup_steps(SimpleNamespace(warmup_steps=ratio), steps)
                curves[tuple(sorted(t.params.items()))] = (t.value, curve, warm)
    if not curves:
        sys.exit("no complete trial with recorded steps in " + ", ".join(paths))
    return list(curves.values()), direction


def replay(optuna, pruner, direction, order, judge_warm_up=False):
    """Runs one order of curves through a pruner: (steps spent, steps of every trial run to its end,
    best objective of the trials that completed)."""
    # a fixed name: Hyperband puts a trial in a bracket by hashing the study name and trial number, so a
    # random in-memory name would make its figures change from run to run
    study = optuna.create_study(study_name="replay", direction=direction, pruner=pruner)
    spent = full = 0
    best = None
    for objective, curve, warm in order:
        trial = study.ask()
        full += curve[-1][1]
        for i, (report, steps, value) in enumerate(curve):
            trial.report(value, report)
            # never at the last evaluation nor in the warm-up (sweep.PruningCallback, sweep.warming_up)
            if i < len(curve) - 1 and (judge_warm_up or steps >= warm) and trial.should_prune():
                spent += steps
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            spent += curve[-1][1]
            study.tell(trial, objective)
            better = best is None or (objective > best if direction == optuna.study.StudyDirection.MAXIMIZE
                                      else objective < best)
            best = objective if better else best
    return spent, full, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("journals", nargs="+", help="Optuna journal files of finished sweeps (OUTPUT/study.journal)")
    ap.add_argument("--study", help="study name (default: every study in each journal)")
    ap.add_argument("--trials", type=int, default=12, help="trials per replayed sweep")
    ap.add_argument("--orders", type=int, default=200, help="random draws of --trials curves")
    ap.add_argument("--pruners", default="none,median,halving,hyperband")
    ap.add_argument("--reference", type=float, help="an objective to beat (e.g. the default recipe's)")
    ap.add_argument("--in-order", action="store_true",
                    help="replay the first --trials trials of one unpruned study in their own order, once")
    ap.add_argument("--judge-warm-up", action="store_true",
                    help="let the pruners judge trials in their lr warm-up (the rule before the warm-up rule)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.in_order and len(args.journals) > 1:
        ap.error("--in-order replays one study: give one journal file")

    import optuna

    from bertkit.errors import UsageError
    from bertkit.sweep.pruning import make_pruner

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    kinds = args.pruners.split(",")
    try:
        for kind in kinds:
            make_pruner(kind)
    except UsageError as e:
        sys.exit(str(e))
    curves, direction = load_curves(args.journals, args.study)
    if len(curves) < args.trials:
        sys.exit(f"{len(curves)} distinct complete trials recorded, fewer than --trials {args.trials}")
    maximize = direction == optuna.study.StudyDirection.MAXIMIZE
    top = (max if maximize else min)(c[0] for c in curves)
    if args.in_order:
        orders = [curves[:args.trials]]
        print(f"{len(curves)} recorded curves; the first {args.trials} in their own order; "
              f"best recorded objective {top:.4f}")
    else:
        rng = random.Random(args.seed)
        orders = [rng.sample(curves, args.trials) for _ in range(args.orders)]
        print(f"{len(curves)} recorded curves; {len(orders)} random orders of {args.trials} trials; "
              f"best recorded objective {top:.4f}")
    tops = [(max if maximize else min)(c[0] for c in o) for o in orders]
    header = (f"{'pruner':10s} {'steps (share of no pruning)':>28s} {'p90':>6s} {'best found':>10s} "
              f"{'found the top':>13s}")
    print(header + (f" {'best >= ref':>11s}" if args.reference is not None else ""))
    for kind in kinds:
        results = [replay(optuna, make_pruner(kind), direction, o, args.judge_warm_up) for o in orders]
        shares = sorted(spent / full for spent, full, _ in results)
        bests = [b for _, _, b in results if b is not None]
        found = sum(b == t for (_, _, b), t in zip(results, tops, strict=True)) / len(results)
        line = (f"{kind:10s} {statistics.mean(shares):28.3f} {shares[int(0.9 * len(shares))]:6.3f} "
                f"{statistics.mean(bests) if bests else float('nan'):10.4f} {found:13.2f}")
        if args.reference is not None:
            beat = sum(b is not None and (b >= args.reference if maximize else b <= args.reference)
                       for _, _, b in results) / len(results)
            line += f" {beat:11.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
