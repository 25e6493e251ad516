"""Crawl Civitai's /models listing into models_raw, page by page, resumable after a kill at any moment.

Each page's items and the cursor to the next page are committed in one transaction, so a restarted crawl
re-fetches at most the page it was on. A complete crawl then asks /models/{id} about every known model of the
listing that it did not see: a 404 marks the model deleted; an answer fills the gap (cursor bugs skip items).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlalchemy import Engine

from crawlers.civitai_client import CivitaiClient, CivitaiError, CivitaiNotFound
from crawlers.ingest import IngestReport, store_items
from db import crawl_store

log = logging.getLogger(__name__)
API_SOURCE = "api"


def listing_key(client: CivitaiClient, types: Sequence[str], base_models: Sequence[str], sort: str) -> str:
    return f"{client.base_url}/models?types={','.join(sorted(types))}&baseModels={','.join(sorted(base_models))}&sort={sort}"


def crawl_listing(engine: Engine, client: CivitaiClient, *, types: Sequence[str] = (),
                  base_models: Sequence[str] = (), sort: str = "Newest", max_pages: int | None = None,
                  on_page: Callable[[int, int], None] | None = None) -> IngestReport:
    """Crawl one filtered listing to its end (or to `max_pages` pages counted from the crawl's start)."""
    types, base_models = list(types), list(base_models)
    key = listing_key(client, types, base_models, sort)
    params = {"key": key, "types": types, "baseModels": base_models, "sort": sort, "max_pages": max_pages}
    first_url = client.models_listing_url(types, base_models, sort)
    with crawl_store.listing_lock(engine, key):
        return _crawl(engine, client, key, params, first_url, types, base_models, max_pages, on_page)


def _crawl(engine: Engine, client: CivitaiClient, key: str, params: dict, first_url: str, types: list[str],
           base_models: list[str], max_pages: int | None, on_page: Callable[[int, int], None] | None) -> IngestReport:
    report = IngestReport()
    with engine.begin() as conn:
        crawl_store.close_interrupted_runs(conn, key)
        run_id = crawl_store.open_run(conn, API_SOURCE, params)
        position = crawl_store.start_or_resume(conn, key, params, first_url)
    if position.resumed:
        log.info("resuming crawl of %s after %d pages", key, position.pages_done)
    try:
        while position.next_url and (max_pages is None or position.pages_done < max_pages):
            try:
                items, next_url = client.models_page(position.next_url)
            except CivitaiError as error:
                if not (position.resumed and error.status == 400):
                    raise
                # The saved cursor is no longer accepted (cursors are opaque and may expire): start over.
                log.warning("saved cursor refused (%s); crawling %s from its first page again", error, key)
                with engine.begin() as conn:
                    position = crawl_store.start_or_resume(conn, key, params, first_url, restart=True)
                continue
            if next_url == position.next_url:
                next_url = None  # a cursor that points at itself would loop forever
            with engine.begin() as conn:
                ids = store_items(conn, items, API_SOURCE, report)
                crawl_store.record_page(conn, position, next_url, ids)
            report.pages += 1
            if on_page:
                on_page(position.pages_done, len(position.seen_ids))
        if position.next_url is None:
            report.models_deleted = _check_unseen(engine, client, position.seen_ids, types, base_models, report)
        with engine.begin() as conn:
            crawl_store.finish(conn, key)
            crawl_store.close_run(conn, run_id, "succeeded", report.as_dict())
    except Exception as error:
        with engine.begin() as conn:
            crawl_store.close_run(conn, run_id, "failed", report.as_dict(), f"{type(error).__name__}: {error}")
        raise
    return report


def _check_unseen(engine: Engine, client: CivitaiClient, seen: set[int], types: list[str], base_models: list[str],
                  report: IngestReport) -> int:
    with engine.connect() as conn:
        unseen = crawl_store.unseen_listed_models(conn, seen, types, base_models)
    deleted = 0
    for model_id in unseen:
        try:
            item = client.model(model_id)
        except CivitaiNotFound:
            with engine.begin() as conn:
                crawl_store.mark_deleted(conn, model_id)
            deleted += 1
            continue
        with engine.begin() as conn:
            store_items(conn, [item], API_SOURCE, report)
    if unseen:
        log.info("%d known models were not listed: %d deleted, %d re-fetched", len(unseen), deleted,
                 len(unseen) - deleted)
    return deleted
