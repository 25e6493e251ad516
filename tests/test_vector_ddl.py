"""The HNSW index DDL of db.vectors against a real Postgres: base-model family names come from Civitai data and are
spelled into the partial indexes' predicates, so they must stay literals whatever `standard_conforming_strings` an
external server runs with; and dropping an index no longer wanted must not queue every search behind a long read.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from sqlalchemy import create_engine, text

from db.vectors import FAMILY, ensure_hnsw_indexes, hnsw_index_name, sql_literal
from testkit.synthetic_zoo import create_synthetic_zoo

SPACE = "ddl-test|none|8+0"
HOSTILE = ["It's a \\ test", "Pony\\", "x\\' OR true --", "a\\'; DROP TABLE models; --"]


@pytest.fixture(scope="module")
def zoo(engine):
    made = create_synthetic_zoo(engine, SPACE, checkpoints=10, adapters=80, dimension=8, clusters=2, seed=5)
    ids = [int(i) for i in made.adapter_ids]
    with engine.begin() as conn:
        for n, family in enumerate(HOSTILE):  # 20 adapters of each hostile family
            chosen = ids[n * 20:(n + 1) * 20]
            conn.execute(text("UPDATE model_versions SET base_model_family = :f WHERE id = ANY(:ids)"),
                         {"f": family, "ids": chosen})
            conn.execute(text("UPDATE embeddings SET base_model_family = :f WHERE version_id = ANY(:ids)"),
                         {"f": family, "ids": chosen})
    return made


@pytest.fixture(scope="module")
def old_fashioned(database_url):
    """An engine whose sessions run with standard_conforming_strings off, as an external server may."""
    from db.engine import engine_for_url

    url = engine_for_url(database_url).url
    engine = create_engine(url, connect_args={"options": "-c standard_conforming_strings=off"})
    with engine.connect() as conn:
        assert conn.execute(text("SHOW standard_conforming_strings")).scalar_one() == "off"
    yield engine
    engine.dispose()


def _family_indexes(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT indexname, pg_get_expr(i.indpred, i.indrelid) FROM pg_indexes p "
            "JOIN pg_class c ON c.relname = p.indexname JOIN pg_index i ON i.indexrelid = c.oid "
            "WHERE p.tablename = 'embeddings' AND p.indexname LIKE 'embeddings_hnsw_%'")).all())


def test_sql_literal_is_a_literal_in_either_string_mode(engine, old_fashioned) -> None:
    for connection_engine in (engine, old_fashioned):
        with connection_engine.connect() as conn:
            for value in HOSTILE + ["plain", "", "\\\\", "''"]:
                assert conn.exec_driver_sql(f"SELECT {sql_literal(value)}").scalar_one() == value


def test_family_indexes_are_built_safely_with_standard_conforming_strings_off(zoo, engine, old_fashioned) -> None:
    created = ensure_hnsw_indexes(old_fashioned, SPACE, 8, family_min_vectors=20)
    predicates = _family_indexes(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM models")).scalar_one() >= 90  # nothing was dropped
        for family in HOSTILE:
            name = hnsw_index_name(SPACE, FAMILY, family)
            assert name in created and name in predicates, family
            # The predicate selects exactly the family's vectors: the name stayed one literal.
            covered = conn.execute(text(f"SELECT count(*) FROM embeddings WHERE {predicates[name]}")).scalar_one()
            assert covered == 20, (family, predicates[name])
    assert ensure_hnsw_indexes(old_fashioned, SPACE, 8, family_min_vectors=20) == []  # found again: no rebuild
    assert ensure_hnsw_indexes(engine, SPACE, 8, family_min_vectors=20) == []


def test_a_drop_waits_briefly_behind_a_long_read_then_leaves_the_index_for_later(zoo, engine, caplog) -> None:
    family = HOSTILE[0]
    stale = hnsw_index_name(SPACE, "adapter", family)  # an index the current rules no longer want
    with engine.begin() as conn:
        conn.execute(text(
            f"CREATE INDEX IF NOT EXISTS {stale} ON embeddings USING hnsw ((emb::vector(8)) vector_ip_ops) "
            f"WHERE space = {sql_literal(SPACE)} AND base_model_family = {sql_literal(family)}"))
    ensure_hnsw_indexes(engine, SPACE, 8, family_min_vectors=20)  # the others exist: only the drop is left to do
    assert stale not in _family_indexes(engine)
    with engine.begin() as conn:
        conn.execute(text(
            f"CREATE INDEX {stale} ON embeddings USING hnsw ((emb::vector(8)) vector_ip_ops) "
            f"WHERE space = {sql_literal(SPACE)} AND base_model_family = {sql_literal(family)}"))

    reader = engine.connect()
    reader.execute(text("SELECT count(*) FROM embeddings"))  # a long read: its transaction stays open
    done = threading.Event()
    searches: list[float] = []

    def refresh() -> None:
        ensure_hnsw_indexes(engine, SPACE, 8, family_min_vectors=20)
        done.set()

    caplog.set_level(logging.WARNING, logger="db.vectors")
    worker = threading.Thread(target=refresh, daemon=True)
    try:
        worker.start()
        time.sleep(0.2)  # the DROP is waiting for its lock now
        with engine.connect() as search:  # a search meanwhile is not queued behind the DROP for long
            search.execute(text("SET statement_timeout = '5s'"))
            start = time.monotonic()
            search.execute(text("SELECT count(*) FROM embeddings WHERE space = :s"), {"s": SPACE})
            searches.append(time.monotonic() - start)
        assert done.wait(10), "the index refresh waited behind the long read"
    finally:
        reader.rollback()
        reader.close()
        worker.join(30)
    assert searches[0] < 2.0
    assert stale in _family_indexes(engine)  # left for a later run
    assert stale in caplog.text and "lock" in caplog.text
    ensure_hnsw_indexes(engine, SPACE, 8, family_min_vectors=20)  # nobody reading now: dropped
    assert stale not in _family_indexes(engine)
