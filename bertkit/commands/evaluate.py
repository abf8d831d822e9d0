"""bertkit evaluate: a saved model's metrics on a labelled file, without training, for every task kind
(its kind reads the file and scores it: the same scoring export's --validation runs).

Stages: open the model -> read the labelled file -> score it -> write metrics.json (and the kind's files:
a confusion matrix, per-example predictions) -> print the metrics and a summary.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from ..errors import UsageError
from ..inference import RowProgress, open_model
from ..outputs import check_writable, exit_on_signal, write_json
from ..schemas import EvaluateConfig
from ..summary import print_summary


def run(cfg: EvaluateConfig) -> dict:
    cfg.validate()
    opened = open_model(cfg)
    cfg = dataclasses.replace(cfg, batch_size=opened.batch_size(cfg.batch_size))  # the kinds' score reads it
    task = opened.task
    out = Path(cfg.output) if cfg.output else opened.path / f"eval-{Path(cfg.data).stem}"
    if problems := check_writable(out, "--output"):  # the default, in the model dir, is checked here
        raise UsageError(problems[0])
    with exit_on_signal(lambda sig: f"bertkit evaluate: interrupted ({sig}); nothing was written to {out}"):
        labelled = task.read_labelled(cfg.data, cfg)
        progress = RowProgress(len(labelled), "Evaluating")
        t0 = time.time()
        scored = task.score(opened.model_fn(), labelled, cfg, progress)
        elapsed = time.time() - t0
        progress.close()
    report = {"task": task.name, "examples": len(labelled), **scored.metrics,
              f"{task.unit}_per_second": round(len(labelled) / max(elapsed, 1e-9), 2)}
    out.mkdir(parents=True, exist_ok=True)
    paths = task.report_files(scored, out)
    if scored.records is not None:
        report["predictions_file"] = paths[0]
    write_json(out / "metrics.json", report)
    print(json.dumps(report, ensure_ascii=False))
    print_summary("evaluate", [("model", str(opened.path)), ("data", f"{cfg.data} ({len(labelled):,} examples)"),
                               *task.summary(scored), ("written", ", ".join([str(out / "metrics.json"), *paths]))])
    return report
