"""Descriptions and [text || image] vectors: incremental writes, per-space HNSW indexes, stale-vector cleanup."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Sequence

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

from db.copy import driver_cursor, stage_rows
from db.lexicon import lexemes_sql, word_count_sql

HNSW_INDEX_PREFIX = "embeddings_hnsw_"  # migrations/env.py leaves indexes with this prefix alone
HNSW_MAX_DIMENSIONS = 2000  # pgvector 0.6 indexes up to 2,000 dimensions
log = logging.getLogger(__name__)


def stored_input_shas(conn: Connection, table: str, key_column: str, key: str, extra: str = "") -> dict[int, str]:
    """version_id -> input_sha of what is stored for one describer (table descriptions) or space (embeddings)."""
    rows = conn.execute(text(f"SELECT version_id, input_sha FROM {table} WHERE {key_column} = :key {extra}"),
                        {"key": key})
    return dict(rows.all())


def upsert_descriptions(conn: Connection, rows: Sequence[dict]) -> None:
    if not rows:
        return
    columns = ("version_id", "describer", "prompt_version", "input_sha", "text", "kind", "trigger_words",
               "recommended_weight")
    stage_rows(conn, "stage_descriptions", "descriptions", columns, ([row[c] for c in columns] for row in rows))
    conn.execute(text(
        f"""
        INSERT INTO descriptions ({', '.join(columns)}) SELECT {', '.join(columns)} FROM stage_descriptions
        ON CONFLICT (version_id, describer, prompt_version) DO UPDATE SET input_sha = EXCLUDED.input_sha,
            text = EXCLUDED.text, kind = EXCLUDED.kind, trigger_words = EXCLUDED.trigger_words,
            recommended_weight = EXCLUDED.recommended_weight, created_at = now()
        """
    ))


def upsert_embeddings(conn: Connection, space: str, rows: Sequence[dict]) -> None:
    """Rows: version_id, role, emb (numpy float32), text_dim, image_dim, images_embedded, input_sha, and text (what
    the text half encodes, whose words are stored beside the vector; None stores none)."""
    if not rows:
        return
    register_vector(conn.connection.driver_connection)
    columns = ("version_id", "space", "role", "emb", "text_dim", "image_dim", "images_embedded", "input_sha")
    stage_rows(conn, "stage_embeddings", "embeddings", (*columns, "body"),
               ([row["version_id"], space, row["role"], np.asarray(row["emb"], dtype=np.float32), row["text_dim"],
                 row["image_dim"], row["images_embedded"], row["input_sha"], row.get("text")] for row in rows),
               extra_columns="body text")
    lexemes = lexemes_sql("s.body")
    conn.execute(text(
        f"""
        INSERT INTO embeddings ({', '.join(columns)}, base_model_family, lexemes, lexical_length)
        SELECT {', '.join('s.' + c for c in columns)}, v.base_model_family, {lexemes},
               {word_count_sql(lexemes)}
        FROM stage_embeddings s JOIN model_versions v ON v.id = s.version_id
        ON CONFLICT (version_id, space) DO UPDATE SET role = EXCLUDED.role, emb = EXCLUDED.emb,
            base_model_family = EXCLUDED.base_model_family, lexemes = EXCLUDED.lexemes,
            lexical_length = EXCLUDED.lexical_length,
            text_dim = EXCLUDED.text_dim, image_dim = EXCLUDED.image_dim,
            images_embedded = EXCLUDED.images_embedded, input_sha = EXCLUDED.input_sha, created_at = now()
        """
    ))


def delete_unserved(conn: Connection, table: str) -> int:
    """Drop descriptions or vectors of versions serving may no longer return (turned NSFW, deleted, unlisted)."""
    return conn.execute(text(
        f"DELETE FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM served_model_versions s WHERE s.version_id = t.version_id)"
    )).rowcount


def sql_literal(value: str) -> str:
    """A string as an SQL literal: partial-index predicates must be spelled as constants, in the index and in the
    queries that want the planner to use it. The value (a base-model family comes from Civitai data) stays one
    literal whatever the session's standard_conforming_strings: with a backslash in it, the E'' form (which reads
    backslashes the same in both modes) with backslashes and quotes doubled; else the plain form."""
    if "\\" in value:
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    return _standard_literal(value)


def _standard_literal(value: str) -> str:
    """The plain form, as Postgres spells a constant back (pg_indexes) while standard_conforming_strings is on."""
    return "'" + value.replace("'", "''") + "'"


def sync_families(conn: Connection) -> int:
    """Copy each version's base-model family onto its vectors (a model's base model can be edited on Civitai);
    returns how many vectors moved family."""
    return conn.execute(text(
        "UPDATE embeddings e SET base_model_family = v.base_model_family FROM model_versions v "
        "WHERE v.id = e.version_id AND e.base_model_family IS DISTINCT FROM v.base_model_family"
    )).rowcount


_MAX_NAME = 63  # Postgres cuts longer identifiers, and a cut name no longer matches the one looked for


FAMILY = "family"  # the scope of a family's own index (its versions of every role; level 2 drops checkpoints)


def hnsw_index_name(space: str, role: str, family: str | None = None) -> str:
    """The partial index of a space and role (checkpoint, adapter), or of one base-model family in it (role FAMILY):
    readable slugs cut to fit Postgres's 63 characters, and a digest of the whole scope that keeps cut names apart."""
    scope = role if family is None else f"{role}/{family}"
    digest = hashlib.blake2b(f"{space}/{scope}".encode(), digest_size=4).hexdigest()
    family_slug = "" if family is None else "_" + (re.sub(r"[^a-z0-9]+", "_", family.lower()).strip("_")[:8] or "f")
    room = _MAX_NAME - len(HNSW_INDEX_PREFIX) - len(f"_{role}{family_slug}_{digest}")
    slug = re.sub(r"[^a-z0-9]+", "_", space.lower()).strip("_")[:min(30, room)]
    return f"{HNSW_INDEX_PREFIX}{slug}_{role}{family_slug}_{digest}"


def indexed_families(conn: Connection, space: str, min_vectors: int) -> list[str]:
    """Families with at least `min_vectors` adapter vectors in a space: each gets an index of its own (a smaller
    one is scanned exactly faster than a post-filtered walk finds its members)."""
    return list(conn.execute(text(
        "SELECT base_model_family FROM embeddings WHERE space = :space AND role = 'adapter' "
        "GROUP BY 1 HAVING count(*) >= :n ORDER BY 1"), {"space": space, "n": min_vectors}).scalars())


FAMILY_INDEX_MIN_VECTORS = 2000
# A DROP INDEX waits for every open read of the table, and every search that comes after queues behind it: it waits
# this long for its lock, a few times, then leaves the index for a later run.
DROP_LOCK_TIMEOUT_SECONDS, DROP_ATTEMPTS, DROP_PAUSE_SECONDS = 0.5, 3, 1.0


def ensure_hnsw_indexes(engine: Engine, space: str, dimension: int, roles: Sequence[str] = ("checkpoint", "adapter"),
                        m: int = 16, ef_construction: int = 64,
                        family_min_vectors: int = FAMILY_INDEX_MIN_VECTORS,
                        drop_lock_timeout: float = DROP_LOCK_TIMEOUT_SECONDS) -> list[str]:
    """Partial HNSW indexes (inner product) per space and role, and per base-model family with many adapters;
    built with maintenance_work_mem raised (a build is several times slower with the 64 MB default). A family's
    index is defined by space and family alone, so the shared adapter index can never stand in for it (when both
    could serve, the planner sometimes took the shared one and post-filtered); family indexes no longer wanted
    (a family that shrank, or built under older rules) are dropped, each waiting at most `drop_lock_timeout`
    seconds (a few times) for its lock, else left for a later run with a warning. The DDL runs with
    standard_conforming_strings on, so the family names spelled into it stay literals whatever the server's
    default. Returns the indexes created now."""
    if not 0 < dimension <= HNSW_MAX_DIMENSIONS:
        raise ValueError(f"pgvector 0.6 indexes 1..{HNSW_MAX_DIMENSIONS} dimensions, space {space!r} has {dimension}")
    created = []
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL standard_conforming_strings = on"))  # as pg_indexes spells constants back
        existing = dict(conn.execute(text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'embeddings'")).all())
        wanted = [(role, None, f"role = {sql_literal(role)}") for role in roles]
        stale = []
        if "adapter" in roles:
            wanted += [(FAMILY, family, f"base_model_family = {sql_literal(family)}")
                       for family in indexed_families(conn, space, family_min_vectors)]
            wanted_names = {hnsw_index_name(space, role, family) for role, family, _ in wanted}
            stale = [name for name, definition in existing.items()
                     if name.startswith(HNSW_INDEX_PREFIX) and name not in wanted_names
                     and "base_model_family" in definition
                     and f"space = {_standard_literal(space)}::text" in definition]
    # Each drop in a short transaction of its own: a DROP locks the table against every search, and must not hold
    # that lock through the builds below, nor wait long behind a read.
    for name in stale:
        _drop_index(engine, name, drop_lock_timeout)
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL standard_conforming_strings = on"))
        conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
        for role, family, predicate in wanted:
            name = hnsw_index_name(space, role, family)
            if name in existing:
                continue
            driver_cursor(conn).execute(
                f"CREATE INDEX {name} ON embeddings USING hnsw ((emb::vector({dimension})) vector_ip_ops) "
                f"WITH (m = {m}, ef_construction = {ef_construction}) WHERE space = {sql_literal(space)} AND {predicate}")
            created.append(name)
        conn.execute(text("ANALYZE embeddings"))
    return created


def _drop_index(engine: Engine, name: str, lock_timeout: float) -> bool:
    """DROP INDEX with a lock_timeout, tried DROP_ATTEMPTS times (searches queued behind a waiting DROP get through
    in the pauses); False, with a warning, when a long read kept it from its lock every time."""
    for attempt in range(1, DROP_ATTEMPTS + 1):
        try:
            with engine.begin() as conn:
                conn.execute(text(f"SET LOCAL lock_timeout = '{max(1, round(lock_timeout * 1000))}ms'"))
                driver_cursor(conn).execute(f"DROP INDEX IF EXISTS {name}")
            return True
        except (OperationalError, psycopg.errors.LockNotAvailable) as error:  # the driver's cursor raises it raw
            if not isinstance(getattr(error, "orig", error), psycopg.errors.LockNotAvailable):
                raise
            if attempt < DROP_ATTEMPTS:
                time.sleep(DROP_PAUSE_SECONDS)
    log.warning("index %s is no longer wanted but was not dropped: a long read of embeddings held its lock through "
                "%d tries of %.1f s; the next index refresh drops it", name, DROP_ATTEMPTS, lock_timeout)
    return False
