"""Crawl Civitai's /models listing into models_raw, page by page, resumable after a kill at any moment.

Each page's items and the cursor to the next page are committed in one transaction, so a restarted crawl
re-fetches at most the page it was on. A complete crawl then asks /models/{id} about every known model of the
listing that it did not see: a 404 marks the model deleted; an answer fills the gap (cursor bugs skip items).

A listing that cannot end is noticed and fails the crawl (ListingLoop) instead of looping or passing for complete: a
next page fetched before in this crawl (a cursor cycle A -> B -> A, or a page answering its own cursor), or
STALE_PAGE_LIMIT pages in a row with no model new to the crawl. The models and pages seen so far are kept in
Postgres (crawl_seen_models, crawl_seen_pages), so the crawler's memory does not grow with the listing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Engine

from crawlers.civitai_client import CivitaiClient, CivitaiError, CivitaiNotFound
from crawlers.ingest import IngestReport, store_items
from db import crawl_store

log = logging.getLogger(__name__)
API_SOURCE = "api"


def listing_key(client: CivitaiClient, types: Sequence[str], base_models: Sequence[str], sort: str) -> str:
    return f"{client.base_url}/models?types={','.join(sorted(types))}&baseModels={','.join(sorted(base_models))}&sort={sort}"


# Pages in a row that list no model new to this crawl before it is given up as stuck. Civitai's cursor bugs repeat an
# item or two across pages (API.md 1.8), never whole pages.
STALE_PAGE_LIMIT = 5


class ListingLoop(RuntimeError):
    """The listing's cursors go round in a circle or stop bringing new models: it cannot be crawled to its end.

    The crawl fails with this, its crawl_runs row says why, and no deletion is checked (the listing is incomplete).
    """


def crawl_listing(engine: Engine, client: CivitaiClient, *, types: Sequence[str] = (),
                  base_models: Sequence[str] = (), sort: str = "Newest", max_pages: int | None = None,
                  on_page: Callable[[int, int], None] | None = None,
                  stale_page_limit: int = STALE_PAGE_LIMIT) -> IngestReport:
    """Crawl one filtered listing to its end (or to `max_pages` pages counted from the crawl's start).

    Raises ListingLoop when a next page is one this crawl fetched before (a cursor cycle, or a page answering its
    own cursor) or `stale_page_limit` pages in a row list no model new to the crawl; the saved cursor stays at the
    last page fetched, so a later crawl resumes there."""
    if stale_page_limit < 1:
        raise ValueError(f"stale_page_limit must be at least 1, got {stale_page_limit}")
    types, base_models = list(types), list(base_models)
    key = listing_key(client, types, base_models, sort)
    params = {"key": key, "types": types, "baseModels": base_models, "sort": sort, "max_pages": max_pages}
    first_url = client.models_listing_url(types, base_models, sort)
    with crawl_store.listing_lock(engine, key):
        return _crawl(engine, client, key, params, first_url, types, base_models, max_pages, on_page,
                      stale_page_limit)


def _crawl(engine: Engine, client: CivitaiClient, key: str, params: dict, first_url: str, types: list[str],
           base_models: list[str], max_pages: int | None, on_page: Callable[[int, int], None] | None,
           stale_page_limit: int) -> IngestReport:
    report = IngestReport()
    with engine.begin() as conn:
        crawl_store.close_interrupted_runs(conn, key)
        run_id = crawl_store.open_run(conn, API_SOURCE, params)
        position = crawl_store.start_or_resume(conn, key, params, first_url)
    if position.resumed:
        log.info("resuming crawl of %s after %d pages", key, position.pages_done)
    try:
        while position.next_url and (max_pages is None or position.pages_done < max_pages):
            page_url = position.next_url
            try:
                items, next_url = client.models_page(page_url)
            except CivitaiError as error:
                if not (position.resumed and error.status == 400):
                    raise
                # The saved cursor is no longer accepted (cursors are opaque and may expire): start over.
                log.warning("saved cursor refused (%s); crawling %s from its first page again", error, key)
                with engine.begin() as conn:
                    position = crawl_store.start_or_resume(conn, key, params, first_url, restart=True)
                continue
            with engine.begin() as conn:
                loop = _loop_problem(conn, position, page_url, next_url)
                ids = store_items(conn, items, API_SOURCE, report, run_id=run_id)
                page = crawl_store.record_page(conn, position, page_url, next_url, ids)
                if loop is None and page.stale_pages >= stale_page_limit:
                    loop = (f"{page.stale_pages} pages in a row (pages {position.pages_done - page.stale_pages + 1}"
                            f"-{position.pages_done}) listed no new model, only models this crawl had already seen")
                if loop is not None:
                    crawl_store.hold_position(conn, position, page_url)
            report.pages += 1
            if loop is not None:
                raise ListingLoop(f"listing {key} cannot be crawled to its end: {loop}. The crawl stopped; no "
                                  "deletions were checked, and the next crawl resumes from the last page fetched.")
            if on_page:
                on_page(position.pages_done, position.models_seen)
        if position.next_url is None:
            report.models_deleted = _check_unseen(engine, client, key, types, base_models, report, run_id)
        with engine.begin() as conn:
            crawl_store.finish(conn, key)
            crawl_store.close_run(conn, run_id, "succeeded", report.as_dict())
    except Exception as error:
        with engine.begin() as conn:
            crawl_store.close_run(conn, run_id, "failed", report.as_dict(), f"{type(error).__name__}: {error}")
        raise
    return report


def _loop_problem(conn: Connection, position: crawl_store.CrawlPosition, page_url: str,
                  next_url: str | None) -> str | None:
    """Why following `next_url` would go round in a circle, or None (also at the listing's end)."""
    if next_url is None:
        return None
    if next_url == page_url:
        return f"page {position.pages_done + 1} answered a repeated cursor: its next cursor is the one it was asked with"
    earlier = crawl_store.page_fetched_before(conn, position.key, next_url)
    if earlier is not None:
        return (f"cursor cycle: the next cursor of page {position.pages_done + 1} leads back to page {earlier}, "
                "already fetched in this crawl")
    return None


def _check_unseen(engine: Engine, client: CivitaiClient, key: str, types: list[str], base_models: list[str],
                  report: IngestReport, run_id: int) -> int:
    with engine.connect() as conn:
        unseen = crawl_store.unseen_listed_models(conn, key, types, base_models)
    deleted = 0
    for model_id in unseen:
        try:
            item = client.model(model_id)
        except CivitaiNotFound:
            with engine.begin() as conn:
                crawl_store.mark_deleted(conn, model_id, run_id)
            deleted += 1
            continue
        with engine.begin() as conn:
            store_items(conn, [item], API_SOURCE, report, run_id=run_id)
    if unseen:
        log.info("%d known models were not listed: %d deleted, %d re-fetched", len(unseen), deleted,
                 len(unseen) - deleted)
    return deleted
