"""Engine creation: DATABASE_URL when set, else the embedded server under ZOO_HOME."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine, create_engine

from config import Settings
from db.embedded import embedded_database_url


def database_url(settings: Settings) -> str:
    """The SQLAlchemy URL to use, forcing the psycopg 3 driver on plain postgresql:// URLs."""
    if settings.database_url is None:
        return embedded_database_url(settings.embedded_pg_dir)
    url = settings.database_url
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


@lru_cache(maxsize=8)
def engine_for_url(url: str) -> Engine:
    """One pooled engine per URL and process."""
    return create_engine(url, pool_pre_ping=True, future=True)


def get_engine(settings: Settings | None = None) -> Engine:
    return engine_for_url(database_url(settings or Settings.from_env()))
