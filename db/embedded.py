"""The embedded PostgreSQL 16 + pgvector server (the `pgserver` wheel), used when DATABASE_URL is unset."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

_servers: dict[Path, object] = {}


def embedded_database_url(data_dir: Path, *, throwaway: bool = False) -> str:
    """Start (or join) the embedded server whose data lives in `data_dir`, and return its SQLAlchemy URL.

    The server is shared by every process that asks for the same folder and stops when the last one exits; a
    `throwaway` one (tests) also deletes its data then. Its parent folder is created first: pgserver refuses a
    missing parent and, as root, opens it to its own user.
    """
    data_dir = data_dir.resolve()
    if data_dir not in _servers:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers)
            import pgserver

            logging.getLogger("pgserver").setLevel(logging.WARNING)
            _servers[data_dir] = pgserver.get_server(data_dir, cleanup_mode="delete" if throwaway else "stop")
    uri: str = _servers[data_dir].get_uri()  # type: ignore[attr-defined]
    return uri.replace("postgresql://", "postgresql+psycopg://", 1)
