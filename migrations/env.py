"""Alembic environment: the project's metadata and its database URL, online migrations only."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from config import Settings
from db.engine import engine_for_url, get_engine
from db.schema import Base

config = context.config
url = config.attributes.get("url")
engine = engine_for_url(url) if url else get_engine(Settings.from_env())  # the `alembic` command line

HNSW_INDEX_PREFIX = "embeddings_hnsw_"
QUEUE_TABLE_PREFIX = "procrastinate_"


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Objects we do not model: per-space HNSW indexes are built at run time for the spaces in use (db.vectors);
    the job queue's tables (and their indexes) are the queue library's schema, created by migration 0008."""
    if not (reflected and compare_to is None):
        return True
    if type_ == "index" and (name or "").startswith(HNSW_INDEX_PREFIX):
        return False
    table = obj if type_ == "table" else getattr(obj, "table", None)
    return not (table is not None and (table.name or "").startswith(QUEUE_TABLE_PREFIX))


with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, compare_server_default=True,
                      include_object=include_object)
    with context.begin_transaction():
        # Several processes (Dagster workers, tests) may start at once: one migrates, the others wait.
        connection.execute(text("SELECT pg_advisory_xact_lock(7226001)"))
        context.run_migrations()
    connection.commit()
