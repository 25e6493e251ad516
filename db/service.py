"""`zoo db start | stop | status`: the embedded server as a background service that outlives one command.

A started service holds the server with a handle of its own in pgserver's list: the postmaster's pid. It stays
there as long as that server runs, so the `zoo` commands that join and leave never see themselves as the last
holder and never stop it; a dead one is pruned like any dead holder (db/embedded.py). `stop` drops that handle and
stops the server unless other `zoo` processes still use it.

`--tcp` restarts the server listening on 127.0.0.1 as well as on its socket, for tools that cannot use a Unix
socket. TCP connections need a password (scram-sha-256): pg_hba.conf is rewritten to trust the socket only, whose
folder is private to the server's user, before the server ever listens on TCP.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from db import embedded

TCP_HOST = "127.0.0.1"
PG_HBA = """\
# Written by zoo (db/service.py). The Unix socket's folder is private to the server's user: trust it.
# TCP on localhost is open to every local user: a password (scram-sha-256) is required.
local   all   all                   trust
host    all   all   127.0.0.1/32    scram-sha-256
host    all   all   ::1/128         scram-sha-256
"""


class ServiceError(RuntimeError):
    """The service cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class ServerStatus:
    """Where the embedded server runs and who holds it."""

    data_dir: Path
    running: bool
    pid: int | None = None
    port: int | None = None
    socket_dir: Path | None = None
    tcp_host: str | None = None  # the TCP address it listens on; None when only on its Unix socket
    service: bool = False  # held by `zoo db start`
    clients: list[int] = field(default_factory=list)  # pids of other processes using it

    def as_dict(self) -> dict[str, Any]:
        return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}


def _status(data_dir: Path, info: Any | None, handles: list[int]) -> ServerStatus:
    if info is None:
        return ServerStatus(data_dir, running=False)
    return ServerStatus(data_dir, running=True, pid=info.pid, port=info.port, socket_dir=info.socket_dir,
                        tcp_host=info.hostname or None, service=info.pid in handles,
                        clients=[pid for pid in handles if pid not in (info.pid, os.getpid())])


def status(data_dir: Path) -> ServerStatus:
    with embedded.handle_lock():
        return _status(data_dir, embedded.running_postmaster(data_dir), embedded.live_handles(data_dir))


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((TCP_HOST, port))
        except OSError:
            return False
    return True


def _pg_ctl(data_dir: Path, args: list[str]) -> None:
    """pgserver's pg_ctl, run as the server's user; a failure is one ServiceError with the server log's tail."""
    try:
        embedded.pgserver()._commands.pg_ctl(args, pgdata=data_dir, user=embedded.server_os_user(data_dir),
                                             timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        log = data_dir / "log"
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        raise ServiceError(f"pg_ctl {args[-1]} failed: {' '.join(tail) or error} (server log: {log})") from None


def _listen_on_tcp(data_dir: Path, info: Any, port: int) -> None:
    """Restart the server listening on TCP_HOST:port as well as on its socket (same folder as before)."""
    if not _port_is_free(port):
        raise ServiceError(f"port {port} on {TCP_HOST} is in use: choose another with --port")
    options = f"-h {TCP_HOST} -p {port} -k {shlex.quote(str(info.socket_dir))}"
    _pg_ctl(data_dir, ["-w", "-m", "fast", "-l", str(data_dir / "log"), "-o", options, "restart"])


def _secure_tcp(data_dir: Path, superuser_password: str) -> None:
    """Require passwords on TCP and give the superuser its password, before the server listens there."""
    import psycopg

    (data_dir / "pg_hba.conf").write_text(PG_HBA)  # in place: the file keeps its owner, the server's user
    info = embedded.running_postmaster(data_dir)
    with psycopg.connect(embedded.socket_url(info), autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
            psycopg.sql.Identifier(embedded.SUPERUSER), psycopg.sql.Literal(superuser_password)))
        conn.execute("SELECT pg_reload_conf()")


def start(data_dir: Path, *, tcp_port: int | None = None, superuser_password: str | None = None) -> ServerStatus:
    """Start the server (or keep the running one) and hold it until `stop`; with `tcp_port`, make it listen on
    TCP_HOST:tcp_port too, which needs a restart, refused while other processes use the server."""
    data_dir = data_dir.resolve()
    embedded.embedded_database_url(data_dir)  # initialises and starts it on its socket, if need be
    if tcp_port is not None:
        if superuser_password is None:
            raise ValueError("listening on TCP needs the superuser's password")
        _secure_tcp(data_dir, superuser_password)
    with embedded.handle_lock():
        info = embedded.running_postmaster(data_dir)
        current = _status(data_dir, info, embedded.live_handles(data_dir))
        if tcp_port is not None and (current.tcp_host, current.port) != (TCP_HOST, tcp_port):
            if current.clients:
                raise ServiceError(f"the server is in use by zoo processes {current.clients}; it cannot start "
                                   "listening on TCP now: let them finish (or stop them), then start again")
            if current.service:
                embedded.remove_handle(data_dir, info.pid)
            _listen_on_tcp(data_dir, info, tcp_port)
            info = embedded.running_postmaster(data_dir)
        if info is None:
            raise ServiceError(f"the server in {data_dir} stopped while starting (server log: {data_dir / 'log'})")
        embedded.add_handle(data_dir, info.pid)
        return _status(data_dir, info, embedded.live_handles(data_dir))


def stop(data_dir: Path, *, force: bool = False) -> ServerStatus:
    """Release the service's hold and stop the server now, unless other processes still use it (then it stops when
    the last of them exits), or `force` (their connections are closed)."""
    data_dir = data_dir.resolve()
    with embedded.handle_lock():
        info = embedded.running_postmaster(data_dir)
        current = _status(data_dir, info, embedded.live_handles(data_dir))
        if info is None:
            return current
        embedded.remove_handle(data_dir, info.pid)
        if current.clients and not force:
            return _status(data_dir, info, embedded.live_handles(data_dir))
        shut_down(data_dir)
        return ServerStatus(data_dir, running=False, clients=current.clients)


def shut_down(data_dir: Path) -> None:
    """Stop the server now, closing its connections (call under embedded.handle_lock, having decided it may)."""
    _pg_ctl(data_dir, ["-w", "-m", "fast", "stop"])
