"""crawl_state and crawl_runs: where each listing's crawl stands, and what each run did."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import orjson
from sqlalchemy import Connection, Engine, text

from db import history


@dataclass
class CrawlPosition:
    key: str
    next_url: str | None
    pages_done: int
    models_seen: int = 0  # distinct models this crawl has listed (they are kept in crawl_seen_models, not here)
    stale_pages: int = 0  # pages in a row that listed no model new to this crawl
    resumed: bool = False


@dataclass(frozen=True)
class PageRecord:
    """What storing one page found: how many of its models were new to this crawl."""

    new_models: int
    stale_pages: int


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
        "SELECT next_url, pages_done, stale_pages FROM crawl_state WHERE key = :key AND finished_at IS NULL "
        "FOR UPDATE"
    ), {"key": key}).first()
    if row is not None and row.next_url:
        seen = conn.execute(text("SELECT count(*) FROM crawl_seen_models WHERE key = :key"),
                            {"key": key}).scalar_one()
        return CrawlPosition(key, row.next_url, row.pages_done, seen, row.stale_pages, resumed=True)
    conn.execute(text(
        """
        INSERT INTO crawl_state (key, params, next_url, pages_done, items_seen, stale_pages, started_at, updated_at)
        VALUES (:key, CAST(:params AS jsonb), :url, 0, 0, 0, now(), now())
        ON CONFLICT (key) DO UPDATE SET params = EXCLUDED.params, next_url = EXCLUDED.next_url, pages_done = 0,
            items_seen = 0, stale_pages = 0, started_at = now(), updated_at = now(), finished_at = NULL
        """
    ), {"key": key, "params": orjson.dumps(params).decode(), "url": first_url})
    _forget_seen(conn, key)
    return CrawlPosition(key, first_url, 0)


def page_fetched_before(conn: Connection, key: str, url: str) -> int | None:
    """The number of the page of this crawl that was fetched from `url`, if one was."""
    return conn.execute(text("SELECT page FROM crawl_seen_pages WHERE key = :key AND url_md5 = md5(:url)"),
                        {"key": key, "url": url}).scalar_one_or_none()


def record_page(conn: Connection, position: CrawlPosition, page_url: str, next_url: str | None,
                ids: list[int]) -> PageRecord:
    """Note the page and its models as seen and advance the cursor to `next_url`; called in the transaction that
    stored the page's items. Returns how many of its models were new to this crawl."""
    page = position.pages_done + 1
    new = conn.execute(text(
        "INSERT INTO crawl_seen_models (key, model_id) SELECT :key, unnest(CAST(:ids AS bigint[])) "
        "ON CONFLICT DO NOTHING"
    ), {"key": position.key, "ids": ids}).rowcount if ids else 0
    conn.execute(text(
        "INSERT INTO crawl_seen_pages (key, url_md5, page) VALUES (:key, md5(:url), :page) ON CONFLICT DO NOTHING"
    ), {"key": position.key, "url": page_url, "page": page})
    position.models_seen += new
    position.stale_pages = 0 if new else position.stale_pages + 1
    position.pages_done = page
    position.next_url = next_url
    conn.execute(text(
        """
        UPDATE crawl_state SET next_url = :url, pages_done = :pages, items_seen = items_seen + :n,
            stale_pages = :stale, updated_at = now()
        WHERE key = :key
        """
    ), {"url": next_url, "pages": page, "n": len(ids), "stale": position.stale_pages, "key": position.key})
    return PageRecord(new, position.stale_pages)


def hold_position(conn: Connection, position: CrawlPosition, url: str) -> None:
    """Keep (or put back) the saved cursor at `url`, the last page fetched, when the listing goes on into a loop;
    the pages fetched are forgotten so a resumed crawl follows the cursors from there afresh."""
    position.next_url = url
    position.stale_pages = 0
    conn.execute(text("UPDATE crawl_state SET next_url = :url, stale_pages = 0, updated_at = now() WHERE key = :key"),
                 {"url": url, "key": position.key})
    conn.execute(text("DELETE FROM crawl_seen_pages WHERE key = :key"), {"key": position.key})


def finish(conn: Connection, key: str) -> None:
    conn.execute(text("UPDATE crawl_state SET next_url = NULL, finished_at = now(), updated_at = now() WHERE key = :key"),
                 {"key": key})
    _forget_seen(conn, key)


def _forget_seen(conn: Connection, key: str) -> None:
    conn.execute(text("DELETE FROM crawl_seen_models WHERE key = :key"), {"key": key})
    conn.execute(text("DELETE FROM crawl_seen_pages WHERE key = :key"), {"key": key})


def unseen_listed_models(conn: Connection, key: str, types: list[str], base_models: list[str]) -> list[int]:
    """Known, not-deleted models that match the listing's filters but that a complete crawl did not return."""
    return conn.execute(text(
        """
        SELECT id FROM models_raw r
        WHERE deleted_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM crawl_seen_models s WHERE s.key = :key AND s.model_id = r.id)
          AND (cardinality(CAST(:types AS text[])) = 0 OR raw->>'type' = ANY(:types))
          AND (cardinality(CAST(:bases AS text[])) = 0 OR EXISTS (
                SELECT 1 FROM jsonb_array_elements(CASE jsonb_typeof(raw->'modelVersions')
                    WHEN 'array' THEN raw->'modelVersions' ELSE '[]'::jsonb END) v
                WHERE v->>'baseModel' = ANY(:bases)))
        ORDER BY id
        """
    ), {"key": key, "types": types, "bases": base_models}).scalars().all()


def mark_deleted(conn: Connection, model_id: int, run_id: int) -> None:
    """Mark the model deleted (a 404 of /models/{id}) and record it in the run's history, once."""
    if conn.execute(text("UPDATE models_raw SET deleted_at = now() WHERE id = :id AND deleted_at IS NULL"),
                    {"id": model_id}).rowcount:
        history.record_deleted(conn, run_id, [model_id])


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
