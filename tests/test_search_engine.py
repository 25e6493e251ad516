"""The in-memory search engine on the shipped snapshot's zoo: its index holds what Postgres holds (word statistics,
BM25, vectors), generations are stored and loaded, and a long-lived retriever swaps to a new generation while
queries run, without a failed query."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sqlalchemy import text

from config import Settings
from crawlers.dump import snapshot_path
from db.search_index_store import current_generation
from embedding.search_index import build_search_index, load_search_index, store_search_index
from orchestration.run import refresh_zoo
from serving.search import open_retriever
from serving.search.engine import SearchEngine
from serving.search import lexical
from serving.search.lexical import BM25_B, BM25_K1
from serving.search.results import Filters

PROMPTS = ["pixel art castle on a hill", "a scientist wearing brass steampunk goggles", "linocut print of a fox",
           "(masterpiece:1.2), anime girl in a knitted winter sweater <lora:knit:0.7>"]


@pytest.fixture(scope="module")
def zoo_settings(settings: Settings) -> Settings:
    outcome = refresh_zoo(settings, dump_path=str(snapshot_path()), workers=1)
    assert outcome.success, outcome.failures()
    return settings


@pytest.fixture(scope="module")
def retriever(zoo_settings: Settings):
    return open_retriever(zoo_settings)


def test_the_refresh_stores_a_generation_that_loads_as_built(retriever, engine) -> None:
    with engine.connect() as conn:
        generation = current_generation(conn, retriever.space)
        built = build_search_index(conn, retriever.space, retriever.dimension, retriever.describer_key)
    loaded = load_search_index(engine, retriever.space)
    assert generation is not None and loaded.generation == generation
    assert len(loaded) == len(built) == conn_count(engine, retriever.space)
    for name, array in built.arrays.items():
        assert np.array_equal(loaded.arrays[name], array), name
    assert loaded.details == built.details and loaded.lexemes == built.lexemes


def test_word_statistics_equal_the_lexicon_postgres_rebuilds(retriever, engine) -> None:
    lexicon = retriever.search_engine.lexicon
    with engine.connect() as conn:
        terms = conn.execute(text("SELECT role, lexeme, documents FROM lexical_terms WHERE space = :s"),
                             {"s": retriever.space}).all()
        corpus = dict((role, (n, avg)) for role, n, avg in conn.execute(text(
            "SELECT role, documents, average_length FROM lexical_corpus WHERE space = :s"), {"s": retriever.space}))
    assert terms
    for role, lexeme, documents in terms:
        assert lexicon.documents[role][lexicon.index.term_of[lexeme]] == documents
    for role, (n, average) in corpus.items():
        assert lexicon.corpus[role][0] == n
        assert lexicon.corpus[role][1] == pytest.approx(average)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_bm25_in_memory_equals_bm25_computed_by_postgres(retriever, engine, prompt: str) -> None:
    """Every adapter's BM25 for the prompt, from Postgres' own parsing of the query and the stored tsvectors."""
    lexicon = retriever.search_engine.lexicon
    rows = np.arange(*lexicon.index.segment("adapter").indices(len(lexicon.index)))
    terms = lexicon.terms(lexicon.lexemes(prompt), "adapter")
    ours = dict(zip(lexicon.index.version_ids[rows].tolist(), lexicon.bm25(rows, terms, "adapter"), strict=True))
    with engine.connect() as conn:
        theirs = dict(conn.execute(text(f"""
            WITH words AS (SELECT l.lexeme, count(*) AS n
                           FROM regexp_split_to_table(:words, '[\\s,]+') w
                           CROSS JOIN LATERAL unnest(to_tsvector('english', w)) l GROUP BY l.lexeme),
                 terms AS (SELECT w.lexeme, w.n, ln(1 + (c.documents - t.documents + 0.5) / (t.documents + 0.5)) idf,
                                  c.average_length
                           FROM words w JOIN lexical_terms t ON t.lexeme = w.lexeme AND t.space = :s
                                AND t.role = 'adapter'
                           JOIN lexical_corpus c ON c.space = :s AND c.role = 'adapter')
            SELECT e.version_id, coalesce(sum(t.idf * t.n * array_length(u.positions, 1) * {BM25_K1 + 1}
                   / (array_length(u.positions, 1) + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * e.lexical_length
                   / greatest(t.average_length, 1.0)))), 0)
            FROM embeddings e LEFT JOIN LATERAL unnest(e.lexemes) u ON true LEFT JOIN terms t ON t.lexeme = u.lexeme
            WHERE e.space = :s AND e.role = 'adapter' GROUP BY e.version_id"""),
            {"s": retriever.space, "words": plain(prompt)}).all())
    assert set(ours) == set(theirs)
    assert any(value > 0 for value in theirs.values()) or not terms.ids.size
    for version_id, value in theirs.items():
        assert ours[version_id] == pytest.approx(float(value), rel=1e-9, abs=1e-12)


def test_hits_show_what_the_catalogue_says(retriever, engine) -> None:
    hit = retriever.search("pixel art castle on a hill", top_k=3).checkpoints[0]
    with engine.connect() as conn:
        row = conn.execute(text("SELECT model_name, version_name, primary_file_name, download_url, "
                                "version_download_count FROM served_model_versions WHERE version_id = :v"),
                           {"v": hit.version_id}).one()
    assert (hit.name, hit.version_name, hit.file_name, hit.download_url, hit.downloads) == tuple(row)


def test_without_a_stored_generation_the_index_is_built_from_the_tables(zoo_settings, retriever, engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM search_index_generations"))
    try:
        fresh = open_retriever(zoo_settings)
        assert fresh.search("pixel art castle on a hill").checkpoints[0].name == "Bitforge Pixel Art"
        assert fresh.live.generation is None
    finally:
        with engine.begin() as conn:
            store_search_index(conn, build_search_index(conn, retriever.space, retriever.dimension,
                                                        retriever.describer_key))


def test_a_new_generation_is_served_while_queries_run(zoo_settings, engine) -> None:
    """A changed card, refreshed through the real Dagster graph during a stream of queries: no query fails, the
    retriever moves to the new generation, and the answer shows the change."""
    retriever = open_retriever(zoo_settings)
    retriever.live.poll_seconds = 0.2
    retriever.search_engine  # the stored generation, loaded
    before = retriever.live.generation
    retriever.live.watch()
    errors: list[BaseException] = []
    answered = []
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            try:
                answered.append(retriever.search("pixel art castle on a hill", top_k=3).checkpoints[0].name)
            except BaseException as error:  # noqa: BLE001 - any failure is what the test looks for
                errors.append(error)

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE models SET name = 'Bitforge Pixel Art II' WHERE name = 'Bitforge Pixel Art'"))
        outcome = refresh_zoo(zoo_settings, dump_path=str(snapshot_path()), workers=1)
        assert outcome.success, outcome.failures()
        deadline = threading.Event()
        for _ in range(100):
            if retriever.live.generation != before:
                break
            deadline.wait(0.1)
        answered_before_check = len(answered)
        deadline.wait(0.5)
    finally:
        stop.set()
        worker.join()
        retriever.live.close()
    assert not errors
    assert retriever.live.generation > before
    assert len(answered) > answered_before_check > 0
    assert answered[-1] == "Bitforge Pixel Art II"


def conn_count(engine, space: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM embeddings e JOIN served_model_versions s "
                                 "ON s.version_id = e.version_id WHERE e.space = :s"), {"s": space}).scalar_one()


def plain(prompt: str) -> str:
    from crawlers.a1111 import plain_text

    return plain_text(prompt)


def test_serving_limits_keep_likenesses_and_mature_models_out_of_the_index(zoo_settings, retriever, engine) -> None:
    """A real person's likeness and an R-rated (but SFW by the NSFW rule) model are in the catalogue but not in
    the index a refresh stores, and the blocking check catches an index built past the limits."""
    from embedding.search_index import ServingLimits
    from orchestration.checks import nothing_beyond_the_serving_limits_indexed
    from orchestration.resources import zoo_resources

    with engine.begin() as conn:
        likeness, mature = conn.execute(text(
            "SELECT id FROM models WHERE type = 'LORA' AND NOT nsfw ORDER BY id LIMIT 2")).scalars().all()
        names = dict(conn.execute(text("SELECT id, name FROM models WHERE id IN (:a, :b)"),
                                  {"a": likeness, "b": mature}).all())
        conn.execute(text("UPDATE models SET poi = true WHERE id = :id"), {"id": likeness})
        conn.execute(text("UPDATE models SET tags = tags || '{ecchi}' WHERE id = :id"), {"id": mature})
    try:
        outcome = refresh_zoo(zoo_settings, dump_path=str(snapshot_path()), workers=1)
        assert outcome.success, outcome.failures()
        assert outcome.checks()["nothing_beyond_the_serving_limits_indexed"]
        with engine.connect() as conn:
            level = conn.execute(text("SELECT content_level_reason FROM models WHERE id = :id"), {"id": mature})
            assert level.scalar_one() == "tag 'ecchi'"
        index = load_search_index(engine, retriever.space)
        assert not {likeness, mature} & set(index.arrays["model_id"].tolist())
        assert index.settings["max_content_level"] == 2 and index.settings["likeness"] is False
        resources = zoo_resources(zoo_settings)
        with engine.begin() as conn:
            store_search_index(conn, build_search_index(conn, retriever.space, retriever.dimension,
                                                        retriever.describer_key, ServingLimits(16, True)))
        result = nothing_beyond_the_serving_limits_indexed(database=resources["database"],
                                                           models=resources["models"])
        offenders = result.metadata["offenders"].value
        assert not result.passed
        assert {row["name"] for row in offenders} == set(names.values())
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE models SET poi = false WHERE id = :id"), {"id": likeness})
            conn.execute(text("UPDATE models SET tags = array_remove(tags, 'ecchi') WHERE id = :id"), {"id": mature})
        assert refresh_zoo(zoo_settings, dump_path=str(snapshot_path()), workers=1).success



class _CharactersFirst:
    """A ranker that would put every character and likeness first: what a ranker learned from usage can do."""

    def serves(self, level: str) -> bool:
        return True

    def scores(self, level: str, features) -> np.ndarray:
        return features["needs_invitation"] + 0.1 * features["similarity"]


def test_characters_the_prompt_does_not_ask_for_come_after_every_invited_adapter(retriever) -> None:
    index = retriever.search_engine.index
    gated, ungated = (SearchEngine(index, ranker=_CharactersFirst(), gate_uninvited=gate) for gate in (True, False))
    words = "an old lighthouse keeper with a pipe, stormy sea"  # no character's name or trigger words
    query = gated.query(retriever.query_vector(words), words)
    pool = gated.pool("adapter", query, None, Filters(), top_k=50)
    uninvited = {int(index.version_ids[row]) for row, ok in zip(pool.rows, pool.features["invited"]) if not ok}
    assert uninvited, "the snapshot's characters are candidates the prompt does not invite"
    listed = [hit.version_id in uninvited for hit in gated.rank_adapters(query, None, top_k=len(pool.rows))]
    assert listed == sorted(listed), "an uninvited character is listed before an invited adapter"
    listed = [hit.version_id in uninvited for hit in ungated.rank_adapters(query, None, top_k=len(pool.rows))]
    assert listed != sorted(listed), "without the gate the ranker puts uninvited characters before invited adapters"
    words = "Old Tobiah the lighthouse keeper with a pipe, stormy sea"
    named = gated.rank_adapters(gated.query(retriever.query_vector(words), words), None, top_k=3)
    assert "Tobiah" in named[0].name


class _CharactersLast:
    """A ranker that would put every character and likeness last."""

    def serves(self, level: str) -> bool:
        return True

    def scores(self, level: str, features) -> np.ndarray:
        return features["similarity"] - features["needs_invitation"]


def test_a_character_the_prompt_names_is_listed_whatever_the_ranker_scores(retriever, monkeypatch) -> None:
    # The snapshot holds 18 adapters: at the product's 5% no word of theirs is rare; at 30% the name's words are.
    monkeypatch.setattr(lexical, "RARE_SHARE", 0.3)
    engine = SearchEngine(retriever.search_engine.index, ranker=_CharactersLast())
    words = "Old Tobiah the lighthouse keeper, stormy sea"
    hits = engine.rank_adapters(engine.query(retriever.query_vector(words), words), None, top_k=5)
    assert "Tobiah" in hits[-1].name and hits[-1].why.startswith("named in the prompt")
    words = "a sailor by a lighthouse, stormy sea"  # one word of its name invites it, does not name it
    hits = engine.rank_adapters(engine.query(retriever.query_vector(words), words), None, top_k=5)
    assert not any("Tobiah" in hit.name for hit in hits)
