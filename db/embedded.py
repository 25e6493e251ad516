"""The embedded PostgreSQL 16 + pgvector server (the `pgserver` wheel), used when DATABASE_URL is unset.

pgserver keeps a handle list in the data folder: the pids of the processes using the server. Each process adds
its pid when it joins and removes it at exit, and the last one out stops the server. A process killed before its
exit handlers ran (SIGKILL, or SIGTERM without a handler) leaves its pid behind, and the server then never stops.
So every process here prunes dead pids from the list when it joins and again as it leaves, and makes sure the
server's watchdog runs, which stops it when its last holders were all killed (db/watchdog.py). `zoo db start` keeps
the server running with a handle of its own (db/service.py).
"""

from __future__ import annotations

import atexit
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import psutil

HANDLE_LIST = ".handle_pids.json"  # pgserver's name (PostgresServer.__init__)
SUPERUSER = "postgres"  # the role pgserver's initdb creates
DATABASE = "postgres"  # the database the zoo lives in on the embedded server

_servers: dict[Path, Any] = {}


def pgserver() -> ModuleType:
    """The pgserver package, imported quietly: platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver as module

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    return module


@contextmanager
def handle_lock() -> Iterator[None]:
    """pgserver's machine-wide lock around its handle lists and server starts; held while we change either."""
    with pgserver().PostgresServer._lock:
        yield


def _is_live_handle(pid: int, listed_since: float) -> bool:
    """A pid still holds the server if its process runs (a zombie does not) and started before the list was last
    written: a process started later cannot have put itself there, so it reuses the pid of a dead holder."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= listed_since + 1.0
    except psutil.Error:
        return False


def live_handles(data_dir: Path) -> list[int]:
    """The pids holding the server in `data_dir`, after dropping dead ones from its list (call under handle_lock)."""
    handles = pgserver().utils.DiskList(data_dir / HANDLE_LIST)
    if not handles.path.exists():
        return []
    listed = handles.get()
    live = [pid for pid in listed if _is_live_handle(pid, handles.path.stat().st_mtime)]
    if live != listed:
        handles.put(live)
    return live


def add_handle(data_dir: Path, pid: int) -> None:
    pgserver().utils.DiskList(data_dir / HANDLE_LIST).get_and_add(pid)


def remove_handle(data_dir: Path, pid: int) -> None:
    pgserver().utils.DiskList(data_dir / HANDLE_LIST).get_and_remove(pid)


def prune_handles(data_dir: Path) -> None:
    with handle_lock():
        live_handles(data_dir)


def running_postmaster(data_dir: Path) -> Any | None:
    """pgserver's PostmasterInfo of the server running on `data_dir` (pid, port, socket folder, listen address),
    or None when none runs."""
    info = pgserver().utils.PostmasterInfo.read_from_pgdata(data_dir)
    return info if info is not None and info.is_running() else None


def socket_url(info: Any, user: str = SUPERUSER, password: str | None = None) -> str:
    """A libpq URL through the server's Unix socket. The port is part of the socket's name, so it is always given
    (pgserver's own get_uri leaves it out, which breaks on any port but 5432)."""
    secret = f":{quote(password, safe='')}" if password else ""
    return f"postgresql://{user}{secret}@/{DATABASE}?host={quote(str(info.socket_dir))}&port={info.port}"


def embedded_database_url(data_dir: Path, *, throwaway: bool = False) -> str:
    """Start (or join) the embedded server whose data lives in `data_dir`, and return its SQLAlchemy URL.

    The server is shared by every process that asks for the same folder and stops when the last one exits; a
    `throwaway` one (tests) also deletes its data then. Its parent folder is created first: pgserver refuses a
    missing parent and, as root, opens it to its own user.
    """
    data_dir = data_dir.resolve()
    if data_dir not in _servers:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        prune_handles(data_dir)
        _servers[data_dir] = pgserver().get_server(data_dir, cleanup_mode="delete" if throwaway else "stop")
        # atexit runs handlers last-in first-out: this prune comes just before pgserver's own cleanup, so a holder
        # killed meanwhile does not keep this process from stopping the server.
        atexit.register(prune_handles, data_dir)
        from db.watchdog import ensure_running  # the watchdog imports this module

        ensure_running(data_dir)
    info = running_postmaster(data_dir) or _servers[data_dir].get_postmaster_info()
    return socket_url(info).replace("postgresql://", "postgresql+psycopg://", 1)


def server_os_user(data_dir: Path) -> str | None:
    """The system user pg_ctl must run as: as root, pgserver hands the data folder to a user of its own (PostgreSQL
    refuses to run as root); otherwise the current user."""
    if os.geteuid() != 0:
        return None
    import pwd

    return pwd.getpwuid(data_dir.stat().st_uid).pw_name
