"""The vector index on a synthetic clustered zoo: the two-level family restriction against exact search, and both
levels' queries walking their partial HNSW index."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from db.synthetic import SyntheticSpace, create_synthetic_zoo
from db.vectors import ensure_hnsw_indexes, hnsw_index_name
from serving.retrieval import Retriever, Weights

SPACE = "synthetic-test|none|64+0"


@pytest.fixture(scope="module")
def synthetic(engine):
    space = SyntheticSpace("synthetic-test", 64)
    made = create_synthetic_zoo(engine, SPACE, checkpoints=3000, adapters=6000, dimension=64, clusters=16, seed=3)
    ensure_hnsw_indexes(engine, SPACE, 64)
    retriever = Retriever(engine, space, weights=Weights(checkpoint_popularity=0, adapter_popularity=0, co_usage=0),
                          candidate_pool=400)
    return made, retriever


def test_adapters_come_from_the_chosen_checkpoints_family(synthetic) -> None:
    made, retriever = synthetic
    q = made.centres[0]
    checkpoints = retriever.checkpoints(q, top_k=1)
    adapters = retriever.adapters(q, checkpoints[0], top_k=20)
    assert adapters and {hit.base_model_family for hit in adapters} == {checkpoints[0].base_model_family}
    mask = made.adapter_families == checkpoints[0].base_model_family
    exact = made.adapter_ids[mask][np.argsort(-(made.adapter_vectors[mask] @ q))[:20]]
    assert len(set(exact) & {hit.version_id for hit in adapters}) >= 18  # HNSW is approximate


def test_both_levels_walk_their_hnsw_index(synthetic) -> None:
    made, retriever = synthetic
    q = made.centres[1]
    checkpoint = retriever.checkpoints(q, top_k=1)[0]
    for role, (sql, params) in (("checkpoint", retriever.checkpoint_query(q, 5)),
                                ("adapter", retriever.adapter_query(q, checkpoint, 10))):
        with retriever.engine.begin() as conn:
            plan = "\n".join(conn.execute(text("EXPLAIN " + sql), params).scalars())
        assert hnsw_index_name(SPACE, role) in plan, plan


def test_a_rare_family_is_searched_exactly_not_starved_by_the_post_filter(synthetic, engine) -> None:
    made, retriever = synthetic
    rare = made.adapter_ids[:40]  # 40 of 6,000 adapters: a post-filtered walk of any allowed pool finds few
    with engine.begin() as conn:
        conn.execute(text("UPDATE model_versions SET base_model_family = 'Rare' WHERE id = ANY(:ids)"),
                     {"ids": [int(i) for i in rare]})
        conn.execute(text("UPDATE model_versions SET base_model_family = 'Rare' WHERE id = :id"),
                     {"id": int(made.checkpoint_ids[0])})
    fresh = Retriever(engine, retriever.text_encoder, weights=retriever.weights)
    q = made.adapter_vectors[0]
    checkpoint = next(hit for hit in fresh.checkpoints(made.checkpoint_vectors[0], top_k=1))
    assert checkpoint.base_model_family == "Rare"
    assert fresh.adapter_plan(checkpoint, 10)[1] is True
    hits = fresh.adapters(q, checkpoint, top_k=10)
    exact = rare[np.argsort(-(made.adapter_vectors[:40] @ q))[:10]]
    assert [hit.version_id for hit in hits] == [int(i) for i in exact]
    common = Retriever(engine, retriever.text_encoder, weights=retriever.weights)
    assert common.adapter_plan(retriever.checkpoints(made.centres[2], top_k=1)[0], 10)[1] is False
