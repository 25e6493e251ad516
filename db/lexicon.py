"""The words of the embedded texts, for retrieval's lexical (BM25) signal: per-vector lexemes, written with the
vector, and per-space document frequencies, rebuilt by the retrieval_index asset.

MiniLM similarity misses what a prompt names literally (a character, an object, a style's name); BM25 over the same
text the vectors encode finds it (bench/retrieval_quality.py). Postgres's English text search parses and stems the
words, so documents and queries are tokenised the same way inside the database.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, text

TEXT_SEARCH_CONFIG = "english"


def lexemes_sql(text_sql: str) -> str:
    """The tsvector of a text expression."""
    return f"to_tsvector('{TEXT_SEARCH_CONFIG}', {text_sql})"


def word_count_sql(lexemes: str) -> str:
    """How many words (positions) a tsvector holds: BM25's document length."""
    return f"(SELECT coalesce(sum(array_length(w.positions, 1)), 0) FROM unnest({lexemes}) w)"


def fill_lexemes(conn: Connection, space: str, texts: Mapping[int, str]) -> int:
    """Set the words of vectors stored before they had any (their text is unchanged, so nothing is re-encoded);
    returns how many rows changed."""
    if not texts:
        return 0
    lexemes = lexemes_sql("t.body")
    return conn.execute(text(
        f"UPDATE embeddings e SET lexemes = {lexemes}, lexical_length = {word_count_sql(lexemes)} "
        "FROM unnest(CAST(:ids AS bigint[]), CAST(:bodies AS text[])) AS t(version_id, body) "
        "WHERE e.space = :space AND e.version_id = t.version_id"),
        {"space": space, "ids": list(texts), "bodies": list(texts.values())}).rowcount


def versions_without_lexemes(conn: Connection, space: str) -> set[int]:
    return set(conn.execute(text("SELECT version_id FROM embeddings WHERE space = :space AND lexemes IS NULL"),
                            {"space": space}).scalars())


def rebuild_lexicon(conn: Connection, space: str) -> int:
    """Document frequency of every word, and the corpus size and mean length, per role of a space (a full rebuild:
    one pass of ts_stat over the space's vectors, about a second for 75,000). Returns how many words it holds."""
    conn.execute(text("DELETE FROM lexical_terms WHERE space = :space"), {"space": space})
    conn.execute(text("DELETE FROM lexical_corpus WHERE space = :space"), {"space": space})
    roles = conn.execute(text("SELECT DISTINCT role FROM embeddings WHERE space = :space ORDER BY role"),
                         {"space": space}).scalars().all()
    terms = 0
    for role in roles:
        terms += conn.execute(text(
            "INSERT INTO lexical_terms (space, role, lexeme, documents) "
            "SELECT :space, :role, word, ndoc FROM ts_stat(format("
            "'SELECT lexemes FROM embeddings WHERE space = %L AND role = %L AND lexemes IS NOT NULL', "
            "CAST(:space AS text), CAST(:role AS text)))"), {"space": space, "role": role}).rowcount
        conn.execute(text(
            "INSERT INTO lexical_corpus (space, role, documents, average_length) "
            "SELECT :space, :role, count(*), coalesce(avg(lexical_length), 0) FROM embeddings "
            "WHERE space = :space AND role = :role AND lexemes IS NOT NULL"), {"space": space, "role": role})
    return terms
