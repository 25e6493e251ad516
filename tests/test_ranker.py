"""The ranker learned from usage, on the shipped snapshot's zoo: training queries are the example images' prompts
without the answer in them and without leaks, a trained ranker is stored, a long-lived retriever picks it up
without reloading the index, and its scores are what the engine ranks by."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sqlalchemy import text

from config import Settings
from crawlers.dump import snapshot_path
from embedding.search_index import build_search_index, store_search_index
from orchestration.run import refresh_zoo
from serving.search import open_retriever
from serving.search.ranker import LearnedRanker, store_ranker
from serving.search.results import Filters
from serving.search.scoring import FEATURES, Weights, hand_scores
from serving.search.training import train, training_queries

lightgbm = pytest.importorskip("lightgbm")


@pytest.fixture(scope="module")
def retriever(settings: Settings, engine):
    """The snapshot's zoo plus usage it lacks: images posted to checkpoints' galleries that used LoRAs (the
    snapshot's LoRA-using images all sit in their own LoRA's gallery, which training may not learn from)."""
    outcome = refresh_zoo(settings, dump_path=str(snapshot_path()), workers=1)
    assert outcome.success, outcome.failures()
    retriever = open_retriever(settings)
    add_usage(engine, retriever.search_engine.index)
    with engine.begin() as conn:
        store_search_index(conn, build_search_index(conn, retriever.space, retriever.dimension,
                                                    retriever.describer_key))
    retriever.live.refresh()
    return retriever


def add_usage(engine, index) -> None:
    """Three images per LoRA of the index, in the gallery of a checkpoint of its family, prompted with the LoRA's
    name (as people describe what they want) and trigger words (which training must strip)."""
    roles, families = index.arrays["role"], index.details["base_model_family"]
    checkpoints = {families[r]: r for r in range(len(index)) if roles[r] == 0}
    image_id = 9_000_000
    with engine.begin() as conn:
        for row in range(len(index)):
            if index.details["type"][row] != "LORA" or families[row] not in checkpoints:
                continue
            gallery = int(index.version_ids[checkpoints[families[row]]])
            model = conn.execute(text("SELECT model_id FROM model_versions WHERE id = :v"), {"v": gallery}).scalar()
            for k in range(3):
                image_id += 1
                prompt = (f"{index.details['name'][row]}, scene {k} in soft light, "
                          f"{' '.join(index.details['trigger_words'][row][:1])} <lora:x{row}:0.8>")
                conn.execute(text("INSERT INTO images (id, version_id, model_id, position, nsfw, has_meta, prompt) "
                                  "VALUES (:i, :v, :m, :p, false, true, :prompt)"),
                             {"i": image_id, "v": gallery, "m": model, "p": 100 + image_id % 1000, "prompt": prompt})
                for position, (role, version) in enumerate((("checkpoint", gallery),
                                                            ("lora", int(index.version_ids[row])))):
                    conn.execute(text(
                        "INSERT INTO image_resources (image_id, version_id, position, role, sources, "
                        "resolved_version_id, resolved_by) VALUES (:i, :g, :p, :r, '{meta}', :v, 'version_id')"),
                        {"i": image_id, "g": gallery, "p": position + (role == "lora"), "r": role, "v": version})


@pytest.fixture(scope="module")
def queries(retriever, engine):
    with engine.connect() as conn:
        return training_queries(conn, retriever.search_engine)


def test_training_queries_hold_no_answer_and_no_leak(retriever, engine, queries) -> None:
    index = retriever.search_engine.index
    assert queries
    with engine.connect() as conn:
        for query in queries:
            used = [int(index.version_ids[row]) for row in query.adapters]
            assert not query.galleries & set(used), "an image in its own LoRA's gallery is not a query"
            assert "<lora:" not in query.text and "<" not in query.text
            for row in query.adapters:
                for word in index.details["trigger_words"][row]:
                    if len(word) >= 2:  # as a whole phrase: "oilpaper umbrella" may stay in "oilpaper umbrellas"
                        whole = rf"(?<!\w){re.escape(' '.join(word.split()))}(?!\w)"
                        assert not re.search(whole, query.text, re.IGNORECASE), (word, query.text)
            galleries = conn.execute(text("SELECT array_agg(DISTINCT version_id) FROM images WHERE id = :i"),
                                     {"i": query.image_id}).scalar_one()
            assert query.galleries == frozenset(galleries)


def test_a_hold_out_list_keeps_its_images_and_their_prompts_out(retriever, engine, queries) -> None:
    held = queries[0].image_id
    with engine.connect() as conn:
        again = training_queries(conn, retriever.search_engine, hold_out=[held])
        same_prompt = set(conn.execute(text(
            "SELECT id FROM images WHERE prompt = (SELECT prompt FROM images WHERE id = :i)"), {"i": held}).scalars())
    assert held not in {q.image_id for q in again}
    assert not same_prompt & {q.image_id for q in again}
    assert len(again) == len(queries) - 1


def test_an_images_own_gallery_prompts_do_not_vote_for_it(retriever, queries) -> None:
    engine = retriever.search_engine
    query = queries[0]
    own = engine.neighbours.prompts_of_galleries(set(query.galleries))
    assert own.any()
    zero = np.zeros(engine.index.vectors.shape[1], dtype=np.float32)
    assert engine.query(zero, query.text).votes.neighbours.size, "the query's own prompt is its nearest"
    voting = engine.query(zero, query.text, own)
    assert not own[voting.votes.neighbours].any()


def test_a_stored_ranker_is_served_without_reloading_the_index(retriever, engine, queries) -> None:
    """Train on the snapshot (small: the threshold lowered), store it, and the live engine scores by it."""
    encoder = retriever.text_encoder
    dimension = retriever.search_engine.index.vectors.shape[1]
    for query, vector in zip(queries, encoder.encode_text([q.text for q in queries]), strict=True):
        query.vector = np.zeros(dimension, dtype=np.float32)
        query.vector[: len(vector)] = vector
    ranker = train(retriever.search_engine, queries, min_queries=3)
    assert ranker.boosters, ranker.metrics
    for booster in ranker.boosters.values():
        assert tuple(booster.feature_name()) == FEATURES
    index_before = retriever.search_engine.index
    with engine.begin() as conn:
        ranker_id = store_ranker(conn, retriever.space, index_before.generation, ranker)
    assert retriever.live.refresh()
    served = retriever.search_engine
    assert served.index is index_before and served.ranker.id == ranker_id
    level = next(iter(ranker.boosters))
    query = served.query(queries[0].vector, queries[0].text)
    checkpoint = served.rank_checkpoints(query, 1, weights=Weights())[0] if level == "adapter" else None
    pool = served.pool(level, query, checkpoint, Filters())
    expected = ranker.boosters[level].predict(pool.features.matrix(), num_threads=1)
    assert np.allclose(served.scores(level, pool, None), expected)
    assert np.allclose(served.scores(level, pool, Weights()), hand_scores(level, pool.features, Weights()))
    hits = retriever.search(queries[0].text, top_k=5)
    assert hits.adapters or hits.checkpoints


def test_a_ranker_trained_on_other_features_is_not_loaded(retriever, engine) -> None:
    rows = np.random.default_rng(0).random((40, 2))
    booster = lightgbm.train({"objective": "lambdarank", "verbose": -1, "min_data_in_leaf": 1},
                             lightgbm.Dataset(rows, (rows[:, 0] > 0.5).astype(float), group=[20, 20]), 2)
    with engine.begin() as conn:
        other = conn.execute(text(
            "INSERT INTO retrieval_rankers (space, generation, features, adapter_model, metrics) "
            "VALUES (:s, 0, '[\"a\", \"b\"]', :m, '{}') RETURNING id"),
            {"s": retriever.space, "m": booster.model_to_string()}).scalar_one()
    retriever.live.refresh()
    ranker = retriever.search_engine.ranker
    assert ranker is None or (ranker.id != other and isinstance(ranker, LearnedRanker))
