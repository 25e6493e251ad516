"""The `zoo` command line: refresh and inspect the catalogue, search it, generate and edit images with it.

Settings are read once here and handed to the verb, which passes down what each part needs. Errors are one line,
root cause first (`--debug` prints the traceback); exit codes are listed in cli/output.py.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from cli import catalogue, database, inspect, search, serve, studio
from rich.markup import escape

from cli.output import EXIT_DATABASE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, err
from config import Settings, SettingsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__.splitlines()[0],
                                     epilog="exit codes: 0 ok, 1 failed, 2 bad usage or settings, "
                                            "3 database unreachable, 130 interrupted")
    parser.add_argument("--debug", action="store_true", help="print tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (catalogue, database, search, inspect, serve, studio):
        group.register(commands)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def _terminate_like_ctrl_c() -> Iterator[None]:
    """SIGTERM and SIGHUP end the command as Ctrl-C does. By default they kill Python without running its exit
    handlers, and one of those releases this process's hold on the embedded server: without it the server would
    never stop (db/embedded.py)."""
    previous = {number: signal.signal(number, _interrupt) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _terminate_like_ctrl_c():
            return args.handler(args, Settings.from_env())
    except SettingsError as error:
        return _fail(args, f"configuration error: {error}", EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", EXIT_INTERRUPTED)
    except Exception as error:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if _is_connection_error(error):
            return _fail(args, f"cannot reach the database: {_joined(error)} (check DATABASE_URL, or unset "
                               "it to use the embedded server)", EXIT_DATABASE)
        return _fail(args, f"{type(error).__name__}: {_first_line(error)} (run with --debug for the traceback)",
                     EXIT_FAILED)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if args.debug:
        err.print_exception()
    err.print(f"[red]error:[/red] {escape(message)}")
    return code


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _joined(error: BaseException) -> str:
    """A driver error's lines as one (without SQLAlchemy's pointer to its docs)."""
    lines = [line.strip() for line in str(getattr(error, "orig", None) or error).splitlines()]
    return " ".join(line for line in lines if line and not line.startswith("(Background on this error"))


def _is_connection_error(error: BaseException) -> bool:
    """A database that cannot be reached, whichever layer (SQLAlchemy, psycopg, Alembic) raised it."""
    import psycopg
    from sqlalchemy.exc import OperationalError

    seen = error
    while seen is not None:
        if isinstance(seen, OperationalError | psycopg.OperationalError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
