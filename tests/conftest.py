"""Shared fixtures: one real embedded Postgres per test session, a fresh database per test module."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def zoo_home() -> Iterator[str]:
    """Tests never write to the user's ~/.zoo: converted models, caches, downloads and the Dagster instance of the
    CLI's runs go to a session folder (a DAGSTER_HOME set in the environment is ignored meanwhile)."""
    home = tempfile.mkdtemp(prefix="zoo-test-home-")
    previous = os.environ.get("ZOO_HOME")
    dagster_home = os.environ.pop("DAGSTER_HOME", None)
    os.environ["ZOO_HOME"] = home
    yield home
    if dagster_home is not None:
        os.environ["DAGSTER_HOME"] = dagster_home
    if previous is None:
        os.environ.pop("ZOO_HOME", None)
    else:
        os.environ["ZOO_HOME"] = previous
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """The embedded server, or an external one via ZOO_TEST_DATABASE_URL.

    Its data lives in a folder of its own, not under pytest's basetemp: pytest deletes all but the three newest
    basetemps, so a concurrent pytest session would delete a live server's data under this one.
    """
    external = os.environ.get("ZOO_TEST_DATABASE_URL")
    if external:
        yield external
        return
    from db.embedded import embedded_database_url

    # The server stops and its data is deleted when the session's process exits, after fixtures are torn down.
    yield embedded_database_url(Path(tempfile.mkdtemp(prefix="zoo-test-pg-")) / "data", throwaway=True)


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
def settings(zoo_home: str, database_url: str):
    """The lite preset's settings on the module's database, with the session's ZOO_HOME (not the environment's)."""
    from config import Settings

    return Settings(zoo_home=Path(zoo_home), database_url=database_url)


@pytest.fixture(scope="module")
def engine(database_url: str) -> Engine:
    """An engine on the module's database, migrated to head."""
    from db.engine import engine_for_url
    from db.migrate import ensure_migrated

    return ensure_migrated(engine_for_url(database_url))


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread: OpenMP hand-offs cost more than the maths on 2 busy cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
