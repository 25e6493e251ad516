"""Shared fixtures: one real embedded Postgres per test session, a fresh database per test module."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def zoo_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tests never write to the user's ~/.zoo: converted models, caches and downloads go to a session folder."""
    home = str(tmp_path_factory.mktemp("zoo-home"))
    previous = os.environ.get("ZOO_HOME")
    os.environ["ZOO_HOME"] = home
    yield home
    if previous is None:
        os.environ.pop("ZOO_HOME", None)
    else:
        os.environ["ZOO_HOME"] = previous

@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The embedded server (its data under a dedicated folder), or an external one via ZOO_TEST_DATABASE_URL."""
    external = os.environ.get("ZOO_TEST_DATABASE_URL")
    if external:
        return external
    from db.embedded import embedded_database_url

    return embedded_database_url(tmp_path_factory.mktemp("pg") / "data")


@pytest.fixture(scope="module")
def database_url(pg_admin_url: str) -> Iterator[str]:
    """A database of its own for each test module, created empty and dropped afterwards."""
    name = f"zoo_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    yield url
    from db.engine import engine_for_url

    engine_for_url(url).dispose()
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(scope="module")
def engine(database_url: str) -> Engine:
    """An engine on the module's database, migrated to head."""
    from db.engine import engine_for_url
    from db.migrate import ensure_migrated

    return ensure_migrated(engine_for_url(database_url))
