"""Engine creation: DATABASE_URL when set, else the embedded server under ZOO_HOME."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine

from config import Settings
from db.embedded import embedded_database_url


def database_url(settings: Settings) -> str:
    """The SQLAlchemy URL the settings name (the embedded server is started when they name none)."""
    return url_or_embedded(settings.database_url, settings.embedded_pg_dir)


def url_or_embedded(url: str | None, embedded_dir: Path) -> str:
    """`url` with the psycopg 3 driver forced on plain postgresql:// URLs; without one, the URL of the embedded
    server whose data lives in `embedded_dir` (started on first use)."""
    if url is None:
        return embedded_database_url(embedded_dir)
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@lru_cache(maxsize=8)
def engine_for_url(url: str) -> Engine:
    """One pooled engine per URL and process."""
    return create_engine(url, pool_pre_ping=True, future=True)


def get_engine(settings: Settings) -> Engine:
    return engine_for_url(database_url(settings))
