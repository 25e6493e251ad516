"""Listings that never end: cursor cycles (A -> B -> A), a page that answers its own cursor, pages that bring no
new model; and the memory a crawl holds for the models it has seen (it must not grow with the listing).

Against the fake Civitai (tests/fake_civitai.py: the 'cursor-cycle' and 'repeated-cursor' faults) and the module's
real Postgres.
"""

from __future__ import annotations

import copy
import gc
import tracemalloc
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from crawlers.civitai_client import CivitaiClient
from crawlers.crawl import crawl_listing
from fake_civitai import FakeCivitai, Fault
from helpers import read_jsonl, truncate_all

MODELS_PATH = "/api/v1/models"


def fixture_items() -> list[dict]:
    return copy.deepcopy(read_jsonl("civitai_2023.jsonl") + read_jsonl("civitai_2024.jsonl"))


@pytest.fixture
def db(engine: Engine) -> Engine:
    truncate_all(engine)
    return engine


@pytest.fixture
def fake() -> Iterator[FakeCivitai]:
    with FakeCivitai(fixture_items(), page_size=3) as server:
        yield server


def crawl(engine: Engine, fake: FakeCivitai, **kwargs):
    client = CivitaiClient(fake.base_url, requests_per_second=1000, backoff_base=0.01, max_retries=2)
    try:
        return crawl_listing(engine, client, **kwargs)
    finally:
        client.close()


def last_run(engine: Engine):
    with engine.connect() as conn:
        return conn.execute(text("SELECT status, error, pages FROM crawl_runs ORDER BY id DESC LIMIT 1")).one()


def saved_next_url(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(text("SELECT next_url FROM crawl_state")).scalar_one()


def listing_requests(fake: FakeCivitai) -> list:
    return [r for r in fake.requests if r.path == MODELS_PATH]


def probes(fake: FakeCivitai) -> list:
    return [r for r in fake.requests if r.path.startswith(MODELS_PATH + "/")]


def test_a_cursor_cycle_fails_the_crawl_without_advancing_the_saved_cursor(db: Engine, fake: FakeCivitai) -> None:
    # Every listing page asked with a cursor points one page back: /models -> c3 -> c0 -> c3 -> c0 ... forever.
    fake.faults.extend(Fault("cursor-cycle") for _ in range(200))
    with pytest.raises(RuntimeError, match="cursor cycle") as caught:
        crawl(db, fake, max_pages=60)  # the cap only bounds the test if the cycle goes unnoticed
    assert "already fetched" in str(caught.value)
    asked = [r.query.get("cursor") for r in listing_requests(fake)]
    assert len(asked) == 3  # the first page, page c3, page c0 whose next (c3) was fetched before: stop
    run = last_run(db)
    assert run.status == "failed" and "cursor cycle" in run.error
    # The saved position is the last page fetched, not the page the loop leads back to.
    assert saved_next_url(db) == fake.base_url + listing_requests(fake)[-1].raw_path
    assert not probes(fake)  # an incomplete listing checks no deletions


def test_a_repeated_cursor_is_not_a_complete_listing(db: Engine, fake: FakeCivitai) -> None:
    crawl(db, fake)
    gone = 100101
    fake.deleted_ids.add(gone)  # a deletion sweep would find it now
    fake.requests.clear()
    # The first page has no cursor (the fault does nothing there); the second answers its own cursor as next.
    fake.faults.extend([Fault("repeated-cursor"), Fault("repeated-cursor")])
    with pytest.raises(RuntimeError, match="repeated cursor"):
        crawl(db, fake)
    assert len(listing_requests(fake)) == 2
    assert not probes(fake)  # before: the listing ended "complete" and every unseen model was asked about
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM models_raw WHERE deleted_at IS NOT NULL")).scalar_one() == 0
    run = last_run(db)
    assert run.status == "failed" and "repeated cursor" in run.error
    assert saved_next_url(db) == fake.base_url + listing_requests(fake)[-1].raw_path

    # The server mends: the crawl resumes from the saved page and completes, and only now checks deletions.
    fake.requests.clear()
    report = crawl(db, fake)
    assert report.models_deleted == 1
    assert [r.path for r in probes(fake)] == [f"{MODELS_PATH}/{gone}"]
    assert last_run(db).status == "succeeded"


def test_pages_that_bring_no_new_model_fail_the_crawl(db: Engine) -> None:
    items = fixture_items()
    # Fresh cursors, but after the first 16 models the listing only repeats them.
    with FakeCivitai(items + copy.deepcopy(items) * 6, page_size=4) as fake:
        with pytest.raises(RuntimeError, match="no new model") as caught:
            crawl(db, fake, stale_page_limit=3)
        pages = len(listing_requests(fake))
    assert pages == 4 + 3  # 16 new models in 4 pages, then 3 pages of models seen before
    assert "3 pages in a row" in str(caught.value)
    run = last_run(db)
    assert run.status == "failed" and "no new model" in run.error


def test_a_mended_cycle_resumes_from_the_saved_page(db: Engine, fake: FakeCivitai) -> None:
    fake.faults.extend([Fault("cursor-cycle")] * 3)  # /models, c3 -> c0, c0 -> c3 (fetched before): fail
    with pytest.raises(RuntimeError, match="cursor cycle"):
        crawl(db, fake)
    fake.faults.clear()
    report = crawl(db, fake)
    with db.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM models_raw")).scalar_one()
    assert stored == 16 and last_run(db).status == "succeeded"
    assert report.models_deleted == 0


def test_the_memory_a_crawl_holds_does_not_grow_with_the_models_it_has_seen(db: Engine) -> None:
    """Python memory (tracemalloc) held after page 10 and after page 30 of a listing of 100 models a page: the
    2,000 models seen in between must not show. urllib's URL caches are left out (bounded: 128 entries)."""
    items = [{"id": 10_000_000 + i, "name": f"m{i}", "type": "LORA", "nsfw": False, "modelVersions": []}
             for i in range(3000)]
    held: dict[int, int] = {}

    def measure(pages: int, seen: int) -> None:
        fake.requests.clear()
        if pages in (10, 30):
            gc.collect()
            snapshot = tracemalloc.take_snapshot().filter_traces([
                tracemalloc.Filter(False, "*urllib/parse.py"), tracemalloc.Filter(False, tracemalloc.__file__)])
            held[pages] = sum(stat.size for stat in snapshot.statistics("filename"))

    with FakeCivitai(items, page_size=100) as fake:
        client = CivitaiClient(fake.base_url, requests_per_second=1000, backoff_base=0.01)
        tracemalloc.start()
        try:
            crawl_listing(db, client, on_page=measure)
        finally:
            tracemalloc.stop()
            client.close()
    print(f"Python memory held: {held[10] / 1024:.0f} KiB after 1,000 models, {held[30] / 1024:.0f} KiB after 3,000")
    # A set of 2,000 more seen ids alone would hold ~100 KiB more (and a list of them as a query parameter).
    assert held[30] - held[10] < 32 * 1024
