"""What the command line prints: exit codes, the error console, tables of hits and JSON lines.

Exit codes: 0 success, 1 the run failed (its asset or check failures are printed), 2 bad usage or settings.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

err = Console(stderr=True)


def out(width: int = 140) -> Console:
    """A console on stdout; fixed width when piped, so tables do not wrap at 80 columns in a file."""
    return Console(width=None if sys.stdout.isatty() else width)


def print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, default=str), flush=True)


def usage_error(message: str) -> int:
    err.print(f"[red]{message}")
    return EXIT_USAGE


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Sequence[str] = ()) -> Table:
    """A rich table: `columns` as headers (underscores read as spaces), `right`-aligned where named."""
    result = Table(title=title)
    for column in columns:
        result.add_column(column.replace("_", " "), justify="right" if column in right else "left")
    for row in rows:
        result.add_row(*(str(cell) for cell in row))
    return result
