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
