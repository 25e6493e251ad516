"""What the command line prints: exit codes, the error console, tables of hits and JSON lines.

Exit codes: 0 success; 1 the work failed (a refresh step or check, a download, a generation; each printed in one
line); 2 bad usage, input or settings; 3 the database cannot be reached; 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DATABASE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

err = Console(stderr=True)


def out(width: int = 140) -> Console:
    """A console on stdout; fixed width when piped, so tables do not wrap at 80 columns in a file."""
    return Console(width=None if sys.stdout.isatty() else width)


def print_json(data: Any) -> None:
    """One JSON document on one line. Text that UTF-8 cannot carry (a lone surrogate from a bad input line) is
    written as JSON escapes instead of failing the print."""
    line = json.dumps(data, ensure_ascii=False, default=str)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(data, ensure_ascii=True, default=str)
    print(line, flush=True)


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
