"""bertkit predict: inference for every task kind, files (or stdin) in, JSON lines or CSV (or stdout) out.

Stages: open the model (its kind decides how rows are read, encoded and written) -> read the rows ->
load the weights (torch or ONNX Runtime) -> run them in bounded, length-sorted chunks -> write the records
in input order -> one summary line.
"""

from __future__ import annotations

import sys
import time

from ..inference import RowProgress, open_model
from ..log import quiet
from ..outputs import exit_on_signal, write_records
from ..schemas import PredictConfig
from ..tasks import predict_records


def run(cfg: PredictConfig) -> dict:
    cfg.validate()
    target = "nothing was written" if cfg.output == "-" else f"{cfg.output} was not written"
    with exit_on_signal(lambda sig: f"bertkit predict: interrupted ({sig}); {target}"):
        opened = open_model(cfg)
        task = opened.task
        rows = task.read_inputs(cfg)
        model_fn = opened.model_fn()
        t0 = time.time()
        progress = RowProgress(len(rows))
        records = predict_records(task, model_fn, rows, opened.batch_size(cfg.batch_size), cfg, progress)
        n = write_records(records, cfg.output, flatten=task.flatten)
        progress.close()
    elapsed = time.time() - t0
    rate = n / max(elapsed, 1e-9)
    if not quiet():
        print(f"predict: {n:,} {task.unit} in {elapsed:.1f}s ({rate:,.1f} {task.unit}/s), task {task.name}"
              + (f" -> {cfg.output}" if cfg.output != "-" else ""), file=sys.stderr)
    return {"rows": n, "seconds": elapsed, "rows_per_second": rate, "task": task.name}
