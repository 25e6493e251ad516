"""Stored learned rankers (retrieval_rankers): written by the retrieval_ranker asset, read by every search engine
of the space. The newest few are kept, so a serving process loading one is never cut short."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson
from sqlalchemy import Connection, text

from db.search_index_store import CHANNEL

KEEP_RANKERS = 3


def insert_ranker(conn: Connection, space: str, generation: int, features: Sequence[str], models: Mapping[str, str],
                  metrics: Mapping) -> int:
    """Store a ranker (per-level model texts) and notify serving processes; the caller's transaction commits."""
    ranker_id = conn.execute(text(
        "INSERT INTO retrieval_rankers (space, generation, features, checkpoint_model, adapter_model, metrics) "
        "VALUES (:space, :generation, CAST(:features AS jsonb), :checkpoint, :adapter, CAST(:metrics AS jsonb)) "
        "RETURNING id"),
        {"space": space, "generation": generation, "features": orjson.dumps(list(features)).decode(),
         "checkpoint": models.get("checkpoint"), "adapter": models.get("adapter"),
         "metrics": orjson.dumps(dict(metrics), option=orjson.OPT_SERIALIZE_NUMPY).decode()}).scalar_one()
    conn.execute(text("DELETE FROM retrieval_rankers WHERE space = :space AND id NOT IN (SELECT id FROM "
                      "retrieval_rankers WHERE space = :space ORDER BY id DESC LIMIT :keep)"),
                 {"space": space, "keep": KEEP_RANKERS})
    conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": f"{space}:ranker"})
    return ranker_id


def newest_ranker(conn: Connection, space: str, features: Sequence[str]) -> dict | None:
    """The newest ranker of the space trained on exactly `features`: id, checkpoint_model, adapter_model, metrics."""
    row = conn.execute(text(
        "SELECT id, checkpoint_model, adapter_model, metrics FROM retrieval_rankers WHERE space = :space AND "
        "features = CAST(:features AS jsonb) ORDER BY id DESC LIMIT 1"),
        {"space": space, "features": orjson.dumps(list(features)).decode()}).mappings().first()
    return dict(row) if row else None


def newest_ranker_id(conn: Connection, space: str) -> int | None:
    return conn.execute(text("SELECT max(id) FROM retrieval_rankers WHERE space = :space"),
                        {"space": space}).scalar_one()
