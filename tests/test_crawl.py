"""crawl_listing (and the whole Dagster job) against the fake Civitai, into a real, migrated Postgres."""

from __future__ import annotations

import copy
import gc
import random
import tracemalloc
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from crawlers.catalogue import normalise_pending
from crawlers.civitai_client import CivitaiClient, CivitaiError, CivitaiNotFound
from crawlers.crawl import crawl_listing
from fake_civitai import TRANSPORT_FAULT_KINDS, Fault, FakeCivitai
from helpers import read_jsonl, truncate_all

MODELS_PATH = "/api/v1/models"
CATALOGUE_TABLES = {
    "models": "id",
    "model_versions": "id",
    "model_files": "id",
    "images": "id, version_id",
    "image_resources": "image_id, version_id, position",
}
# NSFW models of the fixtures (tests/fixtures/README.md): flag, image share, flag+bitmask, bitmask only.
NSFW_IDS = {100202, 100203, 500102, 500106}


def fixture_items() -> list[dict]:
    return copy.deepcopy(read_jsonl("civitai_2023.jsonl") + read_jsonl("civitai_2024.jsonl"))


FIXTURE_IDS = sorted(item["id"] for item in fixture_items())


@pytest.fixture
def db(engine: Engine) -> Engine:
    truncate_all(engine)
    return engine


@pytest.fixture
def fake() -> Iterator[FakeCivitai]:
    with FakeCivitai(fixture_items(), page_size=3) as server:
        yield server


def make_client(fake: FakeCivitai, **kwargs) -> CivitaiClient:
    return CivitaiClient(fake.base_url, requests_per_second=1000, backoff_base=0.01, max_retries=8, **kwargs)


def crawl(engine: Engine, fake: FakeCivitai, **kwargs):
    client = make_client(fake, timeout=kwargs.pop("timeout", 30.0))
    try:
        return crawl_listing(engine, client, **kwargs)
    finally:
        client.close()


def raw_rows(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT id, raw_sha, fetched_at, first_fetched_at, normalised_sha, deleted_at, source "
            "FROM models_raw ORDER BY id"))]


def raw_by_id(engine: Engine) -> dict[int, dict]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT id, raw FROM models_raw")).all())


def catalogue_snapshot(engine: Engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {table: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))]
                for table, order in CATALOGUE_TABLES.items()}


def runs(engine: Engine) -> list:
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM crawl_runs ORDER BY id")).all()


def served_model_ids(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT DISTINCT model_id FROM served_model_versions")).scalars())


# ------------------------------------------------------------------ a faulty, repeating listing

def test_crawl_under_faults_and_repeats_stores_exactly_the_fixture_set(db: Engine) -> None:
    items = fixture_items()
    faults = [Fault(kind, seconds=2.0 if kind == "slow" else 0.0)
              for kind in sorted(TRANSPORT_FAULT_KINDS) for _ in range(3)]
    random.Random(7).shuffle(faults)
    with FakeCivitai(items, page_size=3, repeat_item_across_pages=True) as fake:
        # Faults are fed a few per page so no single request exhausts max_retries (8 retries = 9 attempts).
        fake.faults.extend(faults[:4])
        pending = faults[4:]

        def feed(pages: int, seen: int) -> None:
            fake.faults.extend(pending[:4])
            del pending[:4]

        report = crawl(db, fake, timeout=1.0, on_page=feed)  # 1 s < the 2 s 'slow' fault: a timeout
        requests = list(fake.requests)
        assert not pending and not fake.faults  # 6 pages: every queued fault was served during the crawl

    assert Counter(r.fault for r in requests if r.fault) == Counter(f.kind for f in faults)
    assert len(requests) >= len(faults) + 6

    stored = raw_by_id(db)
    assert sorted(stored) == FIXTURE_IDS
    assert len(stored) == len(items)
    for item in items:
        assert stored[item["id"]] == item
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*), count(DISTINCT id) FROM models_raw")).one() == (16, 16)
        assert conn.execute(text("SELECT count(*) FROM quarantine")).scalar_one() == 0
        state = conn.execute(text("SELECT next_url, finished_at, pages_done FROM crawl_state")).all()
    assert report.models_new == len(items)
    assert report.models_changed == 0 and report.models_deleted == 0 and report.quarantined == 0
    assert report.pages == 6  # 16 items, 3 a page
    assert report.items_received > len(items)  # the repeated items came back on the next page
    assert len(state) == 1
    assert state[0].next_url is None and state[0].finished_at is not None
    all_runs = runs(db)
    assert all_runs and all(run.status == "succeeded" for run in all_runs)
    assert all_runs[0].models_new == 16 and all_runs[0].pages == 6 and all_runs[0].error is None


# ------------------------------------------------------------------ idempotence

def test_second_crawl_and_normalise_change_nothing(db: Engine, fake: FakeCivitai) -> None:
    first = crawl(db, fake)
    assert first.models_new == 16
    normalise_pending(db)
    raw_before, catalogue_before = raw_rows(db), catalogue_snapshot(db)
    assert len(catalogue_before["models"]) >= 14 and len(catalogue_before["images"]) > 0

    second = crawl(db, fake)
    counts = normalise_pending(db)

    assert second.models_unchanged == 16
    assert second.models_new == 0 and second.models_changed == 0 and second.models_deleted == 0
    assert counts.pending == 0 and counts.normalised == 0 and counts.deletions_synced == 0
    assert raw_rows(db) == raw_before
    assert catalogue_snapshot(db) == catalogue_before
    last = runs(db)[-1]
    assert (last.status, last.models_unchanged, last.models_new, last.models_changed) == ("succeeded", 16, 0, 0)


def test_a_changed_item_changes_only_its_model(db: Engine, fake: FakeCivitai) -> None:
    crawl(db, fake)
    normalise_pending(db)
    raw_before, catalogue_before = raw_rows(db), catalogue_snapshot(db)

    k = 4
    changed_id = fake.items[k]["id"]
    fake.items[k]["name"] = "Renamed By The Author"
    report = crawl(db, fake)
    assert (report.models_changed, report.models_new, report.models_unchanged) == (1, 0, 15)

    raw_after = raw_rows(db)
    for before, after in zip(raw_before, raw_after):
        if before[0] == changed_id:
            assert after[1] != before[1]  # raw_sha
            assert after[2] > before[2]  # fetched_at
            assert after[3] == before[3]  # first_fetched_at
        else:
            assert after == before
    assert raw_by_id(db)[changed_id]["name"] == "Renamed By The Author"

    counts = normalise_pending(db)
    assert counts.pending == 1 and counts.normalised == 1
    catalogue_after = catalogue_snapshot(db)
    for table in CATALOGUE_TABLES:
        if table != "models":
            assert catalogue_after[table] == catalogue_before[table], table
    with db.connect() as conn:
        columns = list(conn.execute(text("SELECT * FROM models LIMIT 0")).keys())
    name_at, updated_at = columns.index("name"), columns.index("updated_at")
    assert len(catalogue_after["models"]) == len(catalogue_before["models"])
    for before, after in zip(catalogue_before["models"], catalogue_after["models"]):
        assert after[0] == before[0]
        if before[0] == changed_id:
            assert after[name_at] == "Renamed By The Author" != before[name_at]
            untouched = [i for i in range(len(columns)) if i not in (name_at, updated_at)]
            assert [after[i] for i in untouched] == [before[i] for i in untouched]
        else:
            assert after == before


# ------------------------------------------------------------------ deletions

def test_deleted_model_is_marked_not_removed_and_no_longer_served(db: Engine, fake: FakeCivitai) -> None:
    gone = 100101  # SFW checkpoint with a primary file: served before its deletion
    crawl(db, fake)
    normalise_pending(db)
    assert gone in served_model_ids(db)
    versions_before = catalogue_snapshot(db)["model_versions"]
    with db.connect() as conn:
        model_ids_before = conn.execute(text("SELECT id FROM models ORDER BY id")).scalars().all()

    fake.deleted_ids.add(gone)
    fake.requests.clear()
    report = crawl(db, fake)
    assert report.models_deleted == 1
    assert report.models_unchanged == 15
    probes = [r for r in fake.requests if r.path.startswith(MODELS_PATH + "/")]
    assert [r.path for r in probes] == [f"{MODELS_PATH}/{gone}"]  # only the unseen model is asked about

    with db.connect() as conn:
        raw = conn.execute(text("SELECT id, deleted_at, raw FROM models_raw WHERE deleted_at IS NOT NULL")).all()
    assert [r.id for r in raw] == [gone]
    assert raw[0].raw["id"] == gone  # the row and its payload are kept
    assert len(raw_by_id(db)) == 16

    counts = normalise_pending(db)
    assert counts.deletions_synced == 1
    with db.connect() as conn:
        models = conn.execute(text("SELECT id, deleted_at FROM models ORDER BY id")).all()
    assert [m.id for m in models] == model_ids_before  # not removed
    assert {m.id for m in models if m.deleted_at is not None} == {gone}
    assert gone not in served_model_ids(db)
    assert catalogue_snapshot(db)["model_versions"] == versions_before  # its versions stay too

    # A later complete crawl does not ask about an already-deleted model again.
    fake.requests.clear()
    again = crawl(db, fake)
    assert again.models_deleted == 0
    assert not [r for r in fake.requests if r.path.startswith(MODELS_PATH + "/")]

    # The model comes back: listed again, it is undeleted everywhere.
    fake.deleted_ids.discard(gone)
    back = crawl(db, fake)
    assert back.models_changed == 1
    normalise_pending(db)
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM models_raw WHERE deleted_at IS NOT NULL")).scalar_one() == 0
        assert conn.execute(text("SELECT deleted_at FROM models WHERE id = :id"), {"id": gone}).scalar_one() is None
    assert gone in served_model_ids(db)


def test_unlisted_model_that_still_answers_is_refetched_not_deleted(db: Engine, fake: FakeCivitai) -> None:
    crawl(db, fake, types=["LORA"])
    moved = 100201
    assert moved in raw_by_id(db)
    # The model left the LORA listing (its type changed) but /models/{id} still answers.
    next(item for item in fake.items if item["id"] == moved)["type"] = "LoCon"
    report = crawl(db, fake, types=["LORA"])
    assert report.models_deleted == 0
    assert report.models_changed == 1
    with db.connect() as conn:
        row = conn.execute(text("SELECT deleted_at, raw->>'type' FROM models_raw WHERE id = :id"),
                           {"id": moved}).one()
    assert row == (None, "LoCon")


# ------------------------------------------------------------------ bad items, bad cursors

def test_items_without_usable_ids_are_quarantined_and_the_rest_stored(db: Engine, fake: FakeCivitai) -> None:
    bad = [{"name": "x"}, {"id": "abc"}]
    fake.items[3:3] = [bad[0]]
    fake.items[10:10] = [bad[1]]
    report = crawl(db, fake)
    assert report.quarantined == 2
    assert report.models_new == 16
    assert sorted(raw_by_id(db)) == FIXTURE_IDS
    with db.connect() as conn:
        rows = conn.execute(text("SELECT stage, source, model_id, payload, error FROM quarantine ORDER BY id")).all()
    assert [(r.stage, r.source, r.model_id) for r in rows] == [("crawl", "api", None)] * 2
    assert sorted((r.payload for r in rows), key=str) == sorted(bad, key=str)
    assert all("id" in r.error for r in rows)
    assert runs(db)[-1].status == "succeeded" and runs(db)[-1].quarantined == 2

    again = crawl(db, fake)  # the same bad payloads are kept once
    assert again.quarantined == 0
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM quarantine")).scalar_one() == 2


def test_a_refused_saved_cursor_restarts_the_listing(db: Engine, fake: FakeCivitai) -> None:
    class Interrupted(Exception):
        pass

    def stop_after_first_page(pages: int, seen: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        crawl(db, fake, on_page=stop_after_first_page)
    with db.begin() as conn:
        next_url = conn.execute(text("SELECT next_url FROM crawl_state WHERE finished_at IS NULL")).scalar_one()
        assert "cursor=" in next_url
        bad_url = next_url.split("cursor=")[0] + "cursor=%21%21stale%21%21"
        conn.execute(text("UPDATE crawl_state SET next_url = :u"), {"u": bad_url})

    fake.requests.clear()
    crawl(db, fake)
    assert fake.requests[0].query["cursor"] == ["!!stale!!"] and fake.requests[0].status == 400
    assert "cursor" not in fake.requests[1].query  # started over from the first page, not retried
    assert runs(db)[-1].status == "succeeded"
    assert sorted(raw_by_id(db)) == sorted(i["id"] for i in fake.items)


def test_a_400_on_a_fresh_listing_fails_the_crawl(db: Engine, fake: FakeCivitai) -> None:
    client = make_client(fake)
    bad = client.models_listing_url().replace("limit=100", "limit=500")
    fake.requests.clear()
    with pytest.raises(CivitaiError) as caught:
        client.models_page(bad)
    assert not isinstance(caught.value, CivitaiNotFound)
    assert caught.value.status == 400
    assert len(fake.requests) == 1  # not retried


def test_a_second_crawl_of_a_listing_being_crawled_is_refused(db: Engine, fake: FakeCivitai) -> None:
    from crawlers.crawl import listing_key
    from db.crawl_store import CrawlBusy, listing_lock

    with listing_lock(db, listing_key(make_client(fake), [], [], "Newest")):
        with pytest.raises(CrawlBusy):
            crawl(db, fake)


# ------------------------------------------------------------------ the whole Dagster job

def test_dagster_job_against_the_fake(db: Engine, database_url: str, fake: FakeCivitai) -> None:
    from config import Settings
    from orchestration.resources import CivitaiResource
    from orchestration.run import run_refresh

    fake.faults.extend([Fault("500"), Fault("reset"), Fault("429")])
    types = sorted({item["type"] for item in fake.items})
    settings = Settings.from_env()
    result = run_refresh(
        settings, database_url=database_url,
        civitai=CivitaiResource.from_settings(settings, base_url=fake.base_url, requests_per_second=1000,
                                              backoff_base_seconds=0.01),
        types=types, workers=1,
    )
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == {
        "nothing_nsfw_served", "no_served_model_without_a_version", "links_point_at_existing_versions"}
    assert all(e.passed for e in evaluations), [(e.check_name, e.metadata) for e in evaluations if not e.passed]
    assert not fake.faults  # the faults were served and survived

    with db.connect() as conn:
        models = dict(conn.execute(text("SELECT id, nsfw FROM models")).all())
        run = conn.execute(text("SELECT status, models_new FROM crawl_runs")).one()
    assert NSFW_IDS <= set(models)  # present in the catalogue ...
    assert {i for i, nsfw in models.items() if nsfw} == NSFW_IDS
    served = served_model_ids(db)
    assert served and not served & NSFW_IDS  # ... but never served
    assert 100101 in served and 500101 in served
    assert run == ("succeeded", 16)


# ------------------------------------------------------------------ every crawled fixture model reaches the catalogue

def test_every_crawled_fixture_model_is_normalised_into_the_catalogue(db: Engine, fake: FakeCivitai) -> None:
    """The fixtures are all valid models (tests/fixtures/README.md: 16 models, 19 versions, 19 files); the 2024
    images of 500103 and 500105 have no `id` (the 2025 /models shape) and must be "counted as distinct by URL",
    not make their whole model unusable."""
    crawl(db, fake)
    counts = normalise_pending(db)
    with db.connect() as conn:
        models = conn.execute(text("SELECT id FROM models ORDER BY id")).scalars().all()
        versions = conn.execute(text("SELECT count(*) FROM model_versions")).scalar_one()
        files = conn.execute(text("SELECT count(*) FROM model_files")).scalar_one()
        quarantined = conn.execute(text("SELECT model_id, error FROM quarantine ORDER BY model_id")).all()
    assert quarantined == []
    assert counts.quarantined == 0
    assert models == FIXTURE_IDS
    assert (versions, files) == (19, 19)
    assert {500103, 500105} <= served_model_ids(db)  # SFW models with a primary file


# ------------------------------------------------------------------ listings that never end (issue 13, item 3)
# Cursor cycles (A -> B -> A), a page answering its own cursor, pages that bring no new model (the fake's
# 'cursor-cycle' and 'repeated-cursor' faults); and the memory a crawl holds for the models it has seen.

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
    run = runs(db)[-1]
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
    run = runs(db)[-1]
    assert run.status == "failed" and "repeated cursor" in run.error
    assert saved_next_url(db) == fake.base_url + listing_requests(fake)[-1].raw_path

    # The server mends: the crawl resumes from the saved page and completes, and only now checks deletions.
    fake.requests.clear()
    report = crawl(db, fake)
    assert report.models_deleted == 1
    assert [r.path for r in probes(fake)] == [f"{MODELS_PATH}/{gone}"]
    assert runs(db)[-1].status == "succeeded"


def test_pages_that_bring_no_new_model_fail_the_crawl(db: Engine) -> None:
    items = fixture_items()
    # Fresh cursors, but after the first 16 models the listing only repeats them.
    with FakeCivitai(items + copy.deepcopy(items) * 6, page_size=4) as fake:
        with pytest.raises(RuntimeError, match="no new model") as caught:
            crawl(db, fake, stale_page_limit=3)
        pages = len(listing_requests(fake))
    assert pages == 4 + 3  # 16 new models in 4 pages, then 3 pages of models seen before
    assert "3 pages in a row" in str(caught.value)
    run = runs(db)[-1]
    assert run.status == "failed" and "no new model" in run.error


def test_a_mended_cycle_resumes_from_the_saved_page(db: Engine, fake: FakeCivitai) -> None:
    fake.faults.extend([Fault("cursor-cycle")] * 3)  # /models, c3 -> c0, c0 -> c3 (fetched before): fail
    with pytest.raises(RuntimeError, match="cursor cycle"):
        crawl(db, fake)
    fake.faults.clear()
    report = crawl(db, fake)
    with db.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM models_raw")).scalar_one()
    assert stored == 16 and runs(db)[-1].status == "succeeded"
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
