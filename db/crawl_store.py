"""crawl_state and crawl_runs: where each listing's crawl stands, and what each run did."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import orjson
from sqlalchemy import Connection, Engine, text


@dataclass
class CrawlPosition:
    key: str
    next_url: str | None
    pages_done: int
    seen_ids: set[int] = field(default_factory=set)
    resumed: bool = False


class CrawlBusy(RuntimeError):
    """Another process is crawling the same listing right now."""


@contextmanager
def listing_lock(engine: Engine, key: str) -> Iterator[None]:
    """Hold a session advisory lock on the listing for the whole crawl: two crawls of one listing would fight
    over its cursor. The lock dies with its connection, so a killed crawl never leaves it held."""
    with engine.connect() as conn:
        if not conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:key))"), {"key": key}).scalar_one():
            raise CrawlBusy(f"another crawl of {key} is running")
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": key})
            conn.commit()


def close_interrupted_runs(conn: Connection, key: str) -> None:
    """Runs of this listing still marked running belong to crawls that died (we hold the listing's lock)."""
    conn.execute(text(
        "UPDATE crawl_runs SET status = 'interrupted', finished_at = now(), "
        "error = 'the crawling process ended without closing its run' "
        "WHERE status = 'running' AND params->>'key' = :key"
    ), {"key": key})


def start_or_resume(conn: Connection, key: str, params: dict, first_url: str, restart: bool = False) -> CrawlPosition:
    """Resume an unfinished crawl of this listing, or start it afresh (a finished one is crawled again)."""
    row = None if restart else conn.execute(text(
        "SELECT next_url, pages_done, seen_ids FROM crawl_state WHERE key = :key AND finished_at IS NULL FOR UPDATE"
    ), {"key": key}).first()
    if row is not None and row.next_url:
        return CrawlPosition(key, row.next_url, row.pages_done, set(row.seen_ids), resumed=True)
    conn.execute(text(
        """
        INSERT INTO crawl_state (key, params, next_url, pages_done, items_seen, seen_ids, started_at, updated_at)
        VALUES (:key, CAST(:params AS jsonb), :url, 0, 0, '{}', now(), now())
        ON CONFLICT (key) DO UPDATE SET params = EXCLUDED.params, next_url = EXCLUDED.next_url, pages_done = 0,
            items_seen = 0, seen_ids = '{}', started_at = now(), updated_at = now(), finished_at = NULL
        """
    ), {"key": key, "params": orjson.dumps(params).decode(), "url": first_url})
    return CrawlPosition(key, first_url, 0)


def record_page(conn: Connection, position: CrawlPosition, next_url: str | None, ids: list[int]) -> None:
    """Advance the cursor; called in the transaction that stored the page's items."""
    position.seen_ids.update(ids)
    position.pages_done += 1
    position.next_url = next_url
    conn.execute(text(
        """
        UPDATE crawl_state SET next_url = :url, pages_done = :pages, items_seen = items_seen + :n,
            seen_ids = seen_ids || CAST(:ids AS bigint[]), updated_at = now()
        WHERE key = :key
        """
    ), {"url": next_url, "pages": position.pages_done, "n": len(ids), "ids": ids, "key": position.key})


def finish(conn: Connection, key: str) -> None:
    conn.execute(text("UPDATE crawl_state SET next_url = NULL, finished_at = now(), updated_at = now() WHERE key = :key"),
                 {"key": key})


def unseen_listed_models(conn: Connection, seen_ids: set[int], types: list[str], base_models: list[str]) -> list[int]:
    """Known, not-deleted models that match the listing's filters but that a complete crawl did not return."""
    return conn.execute(text(
        """
        SELECT id FROM models_raw
        WHERE deleted_at IS NULL AND NOT (id = ANY(:seen))
          AND (cardinality(CAST(:types AS text[])) = 0 OR raw->>'type' = ANY(:types))
          AND (cardinality(CAST(:bases AS text[])) = 0 OR EXISTS (
                SELECT 1 FROM jsonb_array_elements(CASE jsonb_typeof(raw->'modelVersions')
                    WHEN 'array' THEN raw->'modelVersions' ELSE '[]'::jsonb END) v
                WHERE v->>'baseModel' = ANY(:bases)))
        ORDER BY id
        """
    ), {"seen": list(seen_ids), "types": types, "bases": base_models}).scalars().all()


def mark_deleted(conn: Connection, model_id: int) -> None:
    conn.execute(text("UPDATE models_raw SET deleted_at = now() WHERE id = :id AND deleted_at IS NULL"), {"id": model_id})


def open_run(conn: Connection, source: str, params: dict) -> int:
    return conn.execute(text(
        "INSERT INTO crawl_runs (source, params, status) VALUES (:source, CAST(:params AS jsonb), 'running') RETURNING id"
    ), {"source": source, "params": orjson.dumps(params).decode()}).scalar_one()


def close_run(conn: Connection, run_id: int, status: str, counts: dict, error: str | None = None) -> None:
    conn.execute(text(
        """
        UPDATE crawl_runs SET status = :status, finished_at = now(), error = :error, pages = :pages,
            items_received = :items_received, models_new = :models_new, models_changed = :models_changed,
            models_unchanged = :models_unchanged, models_deleted = :models_deleted, quarantined = :quarantined
        WHERE id = :id
        """
    ), {"id": run_id, "status": status, "error": error, **counts})
