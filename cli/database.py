"""`zoo db`: the schema (upgrade, check, docs), the embedded server as a service (start, stop, status) and the
ways in (url, shell, reader-sql). One sub-command per action; add an action with one more `_action(...)` in
register()."""

from __future__ import annotations

import argparse
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cli.output import EXIT_DATABASE, EXIT_FAILED, EXIT_OK, err, print_json, usage_error
from config import Settings

if TYPE_CHECKING:
    from db.service import ServerStatus

DEFAULT_TCP_PORT = 5432


def cmd_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from db import migrate
    from db.engine import get_engine

    migrate.upgrade(get_engine(settings))
    err.print("database schema is at head")
    return EXIT_OK


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from db import migrate
    from db.engine import get_engine

    migrate.check(get_engine(settings))
    err.print("models and migrations agree")
    return EXIT_OK


def cmd_docs(args: argparse.Namespace, settings: Settings) -> int:
    from db.engine import get_engine
    from db.migrate import ensure_migrated
    from db.schema_docs import write_schema_docs

    with ensure_migrated(get_engine(settings)).connect() as conn:
        write_schema_docs(conn, args.output)
    err.print(f"wrote {args.output}")
    return EXIT_OK


def _embedded_only(settings: Settings, action: str) -> int | None:
    """A usage error when DATABASE_URL names another server: start and stop manage the embedded one only."""
    if settings.database_url:
        return usage_error(f"DATABASE_URL is set: `zoo db {action}` manages the embedded server only "
                           "(unset DATABASE_URL to use it)")
    return None


def _describe(server: ServerStatus) -> str:
    if not server.running:
        return f"the embedded server is not running (data: {server.data_dir})"
    holders = (["`zoo db start`"] if server.service else []) + (
        [f"zoo processes {', '.join(map(str, server.clients))}"] if server.clients else [])
    tcp = f", TCP {server.tcp_host}:{server.port}" if server.tcp_host else ", no TCP"
    return (f"the embedded server is running: pid {server.pid}, socket {server.socket_dir} port {server.port}{tcp}; "
            f"data {server.data_dir}; held by {' and '.join(holders) or 'nobody (the next zoo command stops it)'}")


def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    from db import connect, embedded, passwords, service

    if (refused := _embedded_only(settings, "start")) is not None:
        return refused
    port = args.port if args.port is not None else (DEFAULT_TCP_PORT if args.tcp else None)
    password = (passwords.role_password(settings.embedded_pg_secrets_dir, embedded.SUPERUSER)
                if port is not None else None)
    try:
        server = service.start(settings.embedded_pg_dir, tcp_port=port, superuser_password=password)
    except service.ServiceError as error:
        err.print(f"[red]error:[/red] {error}")
        return EXIT_FAILED
    connect.reader_url(settings)  # migrates the catalogue and gives the read-only role its password now
    if args.json:
        print_json(server.as_dict())
    else:
        err.print(_describe(server))
        err.print("connect: `zoo db url` (`--read-only` for analysts), `zoo db shell`; stop: `zoo db stop`")
    return EXIT_OK


def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    from db import service

    if (refused := _embedded_only(settings, "stop")) is not None:
        return refused
    try:
        server = service.stop(settings.embedded_pg_dir, force=args.force)
    except service.ServiceError as error:
        err.print(f"[red]error:[/red] {error}")
        return EXIT_FAILED
    if args.json:
        print_json(server.as_dict())
    elif server.running:
        err.print(f"zoo processes {', '.join(map(str, server.clients))} still use the server: it stops when the "
                  "last of them exits (`zoo db stop --force` stops it now)")
    else:
        err.print(f"the embedded server is stopped (data: {server.data_dir})")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.engine import make_url

    from db import service

    server = service.status(settings.embedded_pg_dir.resolve())
    configured = make_url(settings.database_url).render_as_string(hide_password=True) if settings.database_url else None
    if args.json:
        print_json({"database_url": configured, "embedded": server.as_dict()})
    else:
        if configured:
            err.print(f"the zoo uses DATABASE_URL {configured}; the embedded server is not used")
        print(_describe(server))
    return EXIT_OK if server.running or configured else EXIT_DATABASE


def _url(settings: Settings, read_only: bool) -> str:
    from db import connect

    return connect.reader_url(settings) if read_only else connect.owner_url(settings)


def _connect_errors(command: Callable[[argparse.Namespace, Settings], int]) -> Callable[..., int]:
    """One line and a meaningful exit code when there is nothing to connect to, or no read-only role there."""
    def guarded(args: argparse.Namespace, settings: Settings) -> int:
        from db.connect import NoReader, NotRunning

        try:
            return command(args, settings)
        except NotRunning as error:
            err.print(f"[red]error:[/red] {error}")
            return EXIT_DATABASE
        except NoReader as error:
            err.print(f"[red]error:[/red] {error}")
            return EXIT_FAILED
    return guarded


@_connect_errors
def cmd_url(args: argparse.Namespace, settings: Settings) -> int:
    print(_url(settings, args.read_only))
    return EXIT_OK


@_connect_errors
def cmd_shell(args: argparse.Namespace, settings: Settings) -> int:
    """psql, the embedded server's own binary. Without `zoo db start` the server runs for the shell's lifetime."""
    from db import embedded

    if not settings.database_url:
        embedded.embedded_database_url(settings.embedded_pg_dir)  # join (or start) it while psql runs
    psql = embedded.pgserver()._commands.POSTGRES_BIN_PATH / "psql"
    url = _url(settings, args.read_only)
    # Ctrl-C belongs to psql (it cancels the running query), not to this process. A handler, not SIG_IGN, so psql
    # and its pager start with the default disposition (exec resets handlers but keeps ignored signals ignored).
    previous = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        extra = args.psql_args[1:] if args.psql_args[:1] == ["--"] else args.psql_args
        return subprocess.run([str(psql), url, *extra], check=False).returncode
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_reader_sql(args: argparse.Namespace, settings: Settings) -> int:
    from db.engine import get_engine
    from db.reader_role import sql_for_dba

    with get_engine(settings).connect() as conn:
        print(sql_for_dba(conn), end="")
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    db = commands.add_parser("db", help="the database: schema, the embedded server, URLs and psql",
                             description="exit codes: 3 when the embedded server is not running (status, url)")
    actions = db.add_subparsers(dest="action", required=True, metavar="action")

    def _action(name: str, handler: Callable[[argparse.Namespace, Settings], int], help_: str,
                json: bool = False) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_, description=help_)
        parser.set_defaults(handler=handler)
        if json:
            parser.add_argument("--json", action="store_true", help="print the result as JSON")
        return parser

    _action("upgrade", cmd_upgrade, "bring the schema to the newest migration")
    _action("check", cmd_check, "check that the ORM models and the migrations agree")
    docs = _action("docs", cmd_docs, "write the schema's tables, views and columns with their comments as Markdown")
    docs.add_argument("--output", type=Path, default=Path("docs/schema.md"), help="where (default: docs/schema.md)")
    start = _action("start", cmd_start, "run the embedded server in the background until `zoo db stop`", json=True)
    start.add_argument("--tcp", action="store_true",
                       help=f"listen on 127.0.0.1 too, with a password (port {DEFAULT_TCP_PORT} unless --port)")
    start.add_argument("--port", type=int, help="the TCP port (implies --tcp)")
    stop = _action("stop", cmd_stop, "stop the embedded server", json=True)
    stop.add_argument("--force", action="store_true", help="stop it even while other zoo processes use it")
    _action("status", cmd_status, "whether the embedded server runs, where, its pid and port", json=True)
    url = _action("url", cmd_url, "print a postgresql:// URL of the configured database (psql, pandas, BI tools)")
    url.add_argument("--read-only", action="store_true", help="the URL of the read-only role for analysts")
    shell = _action("shell", cmd_shell, "open psql on the configured database")
    shell.add_argument("--read-only", action="store_true", help="as the read-only role")
    shell.add_argument("psql_args", nargs=argparse.REMAINDER, help="after --, passed on to psql: zoo db shell -- -c 'SELECT 1'")
    _action("reader-sql", cmd_reader_sql, "print the SQL that creates the read-only role, for a DBA")
