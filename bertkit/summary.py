"""End-of-run summaries: a rich table on a terminal, plain ``key: value`` lines otherwise (stderr)."""

from __future__ import annotations

import sys

from .log import is_tty, quiet


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
