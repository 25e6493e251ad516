"""Apply and check Alembic migrations programmatically (the CLI's `zoo db upgrade`, tests, the pipeline)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = engine.url.render_as_string(hide_password=False)
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


_migrated: set[str] = set()


def ensure_migrated(engine: Engine) -> Engine:
    """Bring the schema to head once per process and database (cheap when it already is)."""
    key = engine.url.render_as_string(hide_password=False)
    if key not in _migrated:
        upgrade(engine)
        _migrated.add(key)
    return engine


def check(engine: Engine) -> None:
    """Raise when the ORM metadata and the migrated schema disagree."""
    command.check(alembic_config(engine))
