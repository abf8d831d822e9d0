"""Machine description, the bertkit command and step timing shared by the benchmark scripts."""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def bertkit_cmd() -> list[str]:
    """The ``bertkit`` console script next to this Python (or ``python -m bertkit``)."""
    exe = Path(sys.executable).parent / "bertkit"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bertkit"]


def step_timer(warmup_steps: int, steps: int, state: dict):
    """A Trainer callback timing steps ``warmup_steps``..``steps``: sets ``state["t0"]``/``state["t1"]``
    and ``state["counting"]`` while the timed steps run (token counters read it)."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, args, st, control, **kw):
            if st.global_step == warmup_steps and state["t0"] is None:
                state["t0"] = time.perf_counter()
                state["counting"] = True

        def on_step_end(self, args, st, control, **kw):
            if st.global_step == steps and state["t1"] is None:
                state["t1"] = time.perf_counter()
                state["counting"] = False

    return Timer()


def train_clock(state: dict):
    """A Trainer callback summing the wall and CPU seconds (``time.process_time``: this process, all its
    threads) of the training steps alone into ``state["wall"]``/``state["cpu"]``: each step counts from the
    end of whatever came before it (training start, the previous step, a log, an evaluation, a save), so
    evaluations and checkpoint saves are left out.  A single-threaded run's CPU seconds hardly move when
    other jobs share the cores (its wall seconds do: time slicing), so ratios of CPU seconds compare runs
    made under different load."""
    from transformers import TrainerCallback

    state.setdefault("wall", 0.0)
    state.setdefault("cpu", 0.0)

    class Clock(TrainerCallback):
        def _mark(self):
            state["ref"] = (time.perf_counter(), time.process_time())

        def on_train_begin(self, *a, **kw):
            self._mark()

        def on_step_end(self, *a, **kw):
            wall, cpu = state["ref"]
            state["wall"] += time.perf_counter() - wall
            state["cpu"] += time.process_time() - cpu
            self._mark()

        on_log = on_evaluate = on_save = lambda self, *a, **kw: self._mark()

    return Clock()
