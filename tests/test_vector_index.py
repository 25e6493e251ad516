"""Vectors on a synthetic clustered zoo: the in-memory engine's two levels against exact search (family
restriction, rare families, popular and co-used candidates whatever their similarity), and the partial HNSW
indexes kept in Postgres for SQL users."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from db.descriptions import DescriberKey
from db.vectors import FAMILY, ensure_hnsw_indexes, hnsw_index_name, sync_families
from embedding.search_index import build_search_index
from serving.search.engine import SearchEngine
from serving.search.scoring import Weights
from serving.search.results import Hit
from testkit.synthetic_zoo import create_synthetic_zoo

SPACE = "synthetic-test|none|64+0"
SIMILARITY_ONLY = Weights(checkpoint_popularity=0, adapter_popularity=0, co_usage=0)
NO_DESCRIBER = DescriberKey("card-text", "", "card-text", "")


def search_engine(engine, weights: Weights = SIMILARITY_ONLY) -> SearchEngine:
    """The engine over the zoo as it is now."""
    with engine.connect() as conn:
        return SearchEngine(build_search_index(conn, SPACE, 64, NO_DESCRIBER), weights)


@pytest.fixture(scope="module")
def synthetic(engine):
    made = create_synthetic_zoo(engine, SPACE, checkpoints=3000, adapters=6000, dimension=64, clusters=16, seed=3)
    ensure_hnsw_indexes(engine, SPACE, 64, family_min_vectors=1000)  # ~2,000 adapters in each of 3 families
    return made, search_engine(engine)


def test_adapters_come_from_the_chosen_checkpoints_family(synthetic) -> None:
    made, engine = synthetic
    q = made.centres[0]
    checkpoints = engine.checkpoints(q, top_k=1)
    adapters = engine.adapters(q, checkpoints[0], top_k=20)
    assert adapters and {hit.base_model_family for hit in adapters} == {checkpoints[0].base_model_family}
    mask = made.adapter_families == checkpoints[0].base_model_family
    exact = made.adapter_ids[mask][np.argsort(-(made.adapter_vectors[mask] @ q))[:20]]
    assert [hit.version_id for hit in adapters] == [int(i) for i in exact]
    assert checkpoints[0].version_id == int(made.checkpoint_ids[np.argmax(made.checkpoint_vectors @ q)])


def test_a_rare_family_is_searched_like_any_other(synthetic, engine) -> None:
    made, _ = synthetic
    rare = made.adapter_ids[:40]  # 40 of 6,000 adapters
    with engine.begin() as conn:
        conn.execute(text("UPDATE model_versions SET base_model_family = 'Rare' WHERE id = ANY(:ids)"),
                     {"ids": [int(i) for i in rare]})
        conn.execute(text("UPDATE model_versions SET base_model_family = 'Rare' WHERE id = :id"),
                     {"id": int(made.checkpoint_ids[0])})
        assert sync_families(conn) == 41  # the vectors follow their versions' family
    fresh = search_engine(engine)
    q = made.adapter_vectors[0]
    checkpoint = fresh.checkpoints(made.checkpoint_vectors[0], top_k=1)[0]
    assert checkpoint.base_model_family == "Rare"
    hits = fresh.adapters(q, checkpoint, top_k=10)
    exact = rare[np.argsort(-(made.adapter_vectors[:40] @ q))[:10]]
    assert [hit.version_id for hit in hits] == [int(i) for i in exact]


def test_popular_and_co_used_adapters_join_the_pool_whatever_their_similarity(synthetic, engine) -> None:
    made, similar = synthetic
    q = made.centres[4]
    checkpoint = similar.checkpoints(q, top_k=1)[0]
    family = checkpoint.base_model_family
    mask = made.adapter_families == family
    least_similar = made.adapter_ids[mask][np.argsort(made.adapter_vectors[mask] @ q)[:2]]
    popular_id, co_used_id = (int(i) for i in least_similar)
    with engine.begin() as conn:
        downloads = conn.execute(text("SELECT download_count FROM model_versions WHERE id = :id"),
                                 {"id": popular_id}).scalar_one()
        conn.execute(text("UPDATE model_versions SET download_count = 1000000000 WHERE id = :id"), {"id": popular_id})
        conn.execute(text(
            "INSERT INTO adapter_checkpoint_links VALUES (:a, :c, 500, 500, NULL, 0, :f, :f, true)"),
            {"a": co_used_id, "c": checkpoint.version_id, "f": family})
    try:
        fresh = search_engine(engine)

        def top(**weights: float) -> list[Hit]:
            chosen = Weights(**{"checkpoint_popularity": 0.0, "adapter_popularity": 0.0, "co_usage": 0.0, **weights})
            assert fresh.checkpoints(q, top_k=1, weights=chosen)[0].version_id == checkpoint.version_id
            return fresh.adapters(q, checkpoint, top_k=10, weights=chosen)

        assert {popular_id, co_used_id}.isdisjoint(hit.version_id for hit in top())  # similarity alone: last
        assert top(adapter_popularity=5.0)[0].version_id == popular_id
        by_co_usage = top(co_usage=5.0)[0]
        assert (by_co_usage.version_id, by_co_usage.co_usage_images) == (co_used_id, 500)
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE model_versions SET download_count = :d WHERE id = :id"),
                         {"d": downloads, "id": popular_id})
            conn.execute(text("DELETE FROM adapter_checkpoint_links WHERE adapter_version_id = :a"), {"a": co_used_id})


def test_index_names_fit_postgres_so_a_second_build_finds_them(engine) -> None:
    """A long space name (the full preset's) must not be cut by Postgres, or every refresh would build again."""
    space = "open-clip-vit-l-14-openai|open-clip-vit-l-14-openai|768+768"
    created = ensure_hnsw_indexes(engine, space, 64)
    assert created and all(len(name) <= 63 for name in created)
    assert ensure_hnsw_indexes(engine, space, 64) == []


def test_family_indexes_no_longer_wanted_are_dropped(synthetic, engine) -> None:
    made, _ = synthetic
    family = str(made.adapter_families[0])
    old_style = hnsw_index_name(SPACE, "adapter", family)  # role and family: built before family indexes held both
    with engine.begin() as conn:
        conn.execute(text(
            f"CREATE INDEX {old_style} ON embeddings USING hnsw ((emb::vector(64)) vector_ip_ops) "
            f"WHERE space = '{SPACE}' AND role = 'adapter' AND base_model_family = '{family}'"))
    try:
        ensure_hnsw_indexes(engine, SPACE, 64, family_min_vectors=1000)
        with engine.connect() as conn:
            names = set(conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'embeddings'")).scalars())
        assert old_style not in names
        assert hnsw_index_name(SPACE, FAMILY, family) in names and hnsw_index_name(SPACE, "adapter") in names
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP INDEX IF EXISTS {old_style}"))
