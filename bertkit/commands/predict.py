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
    # the model (and torch, transformers) opened before the handler, as evaluate and export do: a
    # KeyboardInterrupt raised inside a library's import can be lost (1 of 20 SIGTERMs sent while
    # `import torch, transformers` ran left the process running), and with the handler first a SIGTERM sent
    # as soon as it was in place ended predict by SIGINT (-2) instead of 143 in 3 runs of about 80; a
    # SIGTERM before the handler ends predict by the signal itself, with nothing written
    opened = open_model(cfg)
    task = opened.task
    with exit_on_signal(lambda sig: f"bertkit predict: interrupted ({sig}); {target}"):
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
