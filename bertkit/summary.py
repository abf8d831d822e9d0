"""End-of-run summaries: a rich table on a terminal, plain ``key: value`` lines otherwise (stderr); the
durations and sizes that progress lines and summaries show.  Light imports: the tokenize workers load it."""

from __future__ import annotations

import math
import sys

from .log import is_tty, quiet


def fmt_duration(seconds: float) -> str:
    """``M:SS``, or ``H:MM:SS`` from an hour on; ``?`` for an unknown (infinite) ETA."""
    if not math.isfinite(seconds):
        return "?"
    s = int(max(seconds, 0))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def human_bytes(n: float) -> str:
    """A byte count in decimal units (``512 B``, ``4.2 MB``)."""
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def print_summary(title: str, rows: list[tuple[str, str]]) -> None:
    if quiet():
        return
    rows = [(k, v) for k, v in rows if v not in (None, "")]
    if is_tty():
        try:
            from rich.console import Console
            from rich.table import Table

            table = Table(title=f"bertkit {title}", show_header=False, title_justify="left")
            table.add_column(style="bold")
            table.add_column()
            for k, v in rows:
                table.add_row(k, str(v))
            Console(file=sys.stderr).print(table)
            return
        except ImportError:
            pass
    width = max(len(k) for k, _ in rows) if rows else 0
    print(f"== bertkit {title} ==", file=sys.stderr)
    for k, v in rows:
        print(f"{k.ljust(width)} : {v}", file=sys.stderr)
    sys.stderr.flush()
