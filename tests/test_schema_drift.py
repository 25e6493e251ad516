"""Schema drift never deletes derived data (issue 13, item 4).

An item without its `modelVersions` list (renamed, retyped) is quarantined as schema drift, not read as "this model
has no versions now"; and whatever the cause, one refresh may stop serving only a small share of the served
versions (ZOO_MAX_REMOVED_SHARE, at least ZOO_MAX_REMOVED_FLOOR): beyond that the run fails, says what to do, and
withdraws nothing, so the index step never deletes the descriptions and vectors of versions still on Civitai.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, text

from crawlers.catalogue import TooManyWithdrawals, WithdrawalLimit, normalise_pending
from crawlers.civitai_client import CivitaiClient
from crawlers.crawl import crawl_listing
from crawlers.dump import ingest_dump, snapshot_path
from crawlers.normalise import NormaliseError, normalise_model
from fake_civitai import Fault, FakeCivitai
from helpers import read_jsonl, truncate_all
from orchestration.run import refresh_zoo, run_refresh

FIXTURE_ITEMS = read_jsonl("civitai_2023.jsonl") + read_jsonl("civitai_2024.jsonl")


def write_dump(path: Path, items: list) -> Path:
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in items))
    return path


def renamed(items: list[dict]) -> list[dict]:
    return [{("versions" if key == "modelVersions" else key): value for key, value in item.items()} for item in items]


def derived_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {name: conn.execute(text(sql)).scalar_one() for name, sql in {
            "live_versions": "SELECT count(*) FROM model_versions WHERE removed_at IS NULL",
            "served": "SELECT count(*) FROM served_model_versions",
            "files": "SELECT count(*) FROM model_files",
            "images": "SELECT count(*) FROM images",
            "descriptions": "SELECT count(*) FROM descriptions",
            "vectors": "SELECT count(*) FROM embeddings",
        }.items()}


def drift_quarantined(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(text(
            "SELECT model_id FROM quarantine WHERE error LIKE '%schema drift%'")).scalars())


@pytest.fixture
def clean(engine: Engine) -> Engine:
    truncate_all(engine)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE descriptions, embeddings"))
    return engine


# ---------------------------------------------------------------------------------------------------------------
# the normaliser
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change", [
    lambda item: item.pop("modelVersions"),
    lambda item: item.update(modelVersions=None),
    lambda item: item.update(modelVersions={"items": []}),
    lambda item: item.update(modelVersions=[600101]),
])
def test_an_item_without_a_list_of_version_objects_is_schema_drift(change):
    item = copy.deepcopy(FIXTURE_ITEMS[0])
    change(item)
    with pytest.raises(NormaliseError, match="schema drift"):
        normalise_model(item)


def test_an_empty_version_list_is_a_model_without_versions():
    item = copy.deepcopy(FIXTURE_ITEMS[0])
    item["modelVersions"] = []
    assert normalise_model(item).versions == []


# ---------------------------------------------------------------------------------------------------------------
# the whole graph, twice
# ---------------------------------------------------------------------------------------------------------------


def test_a_renamed_versions_field_keeps_versions_descriptions_and_vectors(settings, clean: Engine, tmp_path: Path):
    first = refresh_zoo(settings, dump_path=str(write_dump(tmp_path / "first.jsonl", FIXTURE_ITEMS)), workers=1)
    assert first.success, first.failures()
    before = derived_counts(clean)
    assert before["descriptions"] > 0 and before["vectors"] > 0
    drifted = refresh_zoo(settings, dump_path=str(write_dump(tmp_path / "drift.jsonl", renamed(FIXTURE_ITEMS))),
                          workers=1)
    assert derived_counts(clean) == before
    assert drift_quarantined(clean) == {item["id"] for item in FIXTURE_ITEMS}
    assert drifted.success, drifted.failures()


def test_a_renamed_field_in_crawled_pages_is_quarantined(settings, clean: Engine):
    items = copy.deepcopy(FIXTURE_ITEMS)
    with FakeCivitai(items, page_size=4) as fake:
        client = CivitaiClient(fake.base_url, requests_per_second=1000, backoff_base=0.01)
        try:
            crawl_listing(clean, client)
            normalise_pending(clean)
            before = derived_counts(clean)
            fake.faults = [Fault("renamed-field") for _ in range(20)]  # every page comes back with it renamed
            crawl_listing(clean, client)
        finally:
            client.close()
    normalise_pending(clean)
    assert derived_counts(clean) == before
    assert drift_quarantined(clean) == {item["id"] for item in items}


# ---------------------------------------------------------------------------------------------------------------
# the withdrawal guard
# ---------------------------------------------------------------------------------------------------------------


def served_by_model(engine: Engine) -> dict[int, int]:
    with engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT model_id, count(*) FROM served_model_versions GROUP BY model_id ORDER BY model_id")).all())


def without_versions(items: list[dict], ids: set[int]) -> list[dict]:
    """The items as Civitai would list them had every version of the models `ids` been unpublished."""
    changed = copy.deepcopy(items)
    for item in changed:
        if item["id"] in ids:
            item["modelVersions"] = []
    return changed


def test_a_refresh_that_would_withdraw_too_much_fails_and_withdraws_nothing(settings, clean: Engine, tmp_path: Path):
    strict = replace(settings, max_removed_floor=2)
    assert run_refresh(strict, dump_path=str(write_dump(tmp_path / "a.jsonl", FIXTURE_ITEMS)), workers=1).success
    before = derived_counts(clean)
    sfw_models = set(list(served_by_model(clean))[:3])  # 3 or more served versions: more than the floor of 2
    gone = without_versions(FIXTURE_ITEMS, sfw_models)
    assert gone[-1]["id"] not in sfw_models
    gone[-1]["name"] += " (renamed)"  # a change that withdraws nothing is still stored
    dump = str(write_dump(tmp_path / "b.jsonl", gone))
    for _ in range(2):  # refused every time, not just once
        refused = refresh_zoo(strict, dump_path=dump, workers=1)
        assert not refused.success
        (failure,) = refused.failures()
        assert failure.startswith("zoo_catalogue: ")
        assert "would stop serving" in failure and "ZOO_MAX_REMOVED_SHARE=1" in failure
        assert derived_counts(clean) == before
    with clean.connect() as conn:
        assert conn.execute(text("SELECT name FROM models WHERE id = :id"), {"id": gone[-1]["id"]}).scalar_one() \
            == gone[-1]["name"]
        pending = set(conn.execute(text(
            "SELECT id FROM models_raw WHERE normalised_sha IS DISTINCT FROM raw_sha")).scalars())
    assert pending == sfw_models
    allowed = run_refresh(replace(strict, max_removed_share=1.0), dump_path=dump, workers=1)
    assert allowed.success
    after = derived_counts(clean)
    assert after["served"] < before["served"] and after["live_versions"] < before["live_versions"]


def test_one_deletion_in_the_24_model_snapshot_zoo_passes_with_the_default_limit(settings, clean: Engine,
                                                                                  tmp_path: Path):
    items = read_jsonl(str(snapshot_path()))
    assert len(items) == 24
    assert run_refresh(settings, dump_path=str(snapshot_path()), workers=1).success
    before = derived_counts(clean)
    model_id, served = next(iter(served_by_model(clean).items()))
    result = run_refresh(settings, dump_path=str(write_dump(tmp_path / "one.jsonl",
                                                            without_versions(items, {model_id}))), workers=1)
    assert result.success
    (catalogue,) = [event for event in result.get_asset_materialization_events()
                    if event.asset_key.to_user_string() == "zoo_catalogue"]
    assert catalogue.materialization.metadata["withdrawn"].value == served
    assert derived_counts(clean)["served"] == before["served"] - served


def test_deletions_seen_by_the_crawl_count_against_the_limit(clean: Engine, tmp_path: Path):
    ingest_dump(clean, write_dump(tmp_path / "a.jsonl", FIXTURE_ITEMS))
    normalise_pending(clean)
    with clean.begin() as conn:  # as if /models/{id} had answered 404 for every model
        conn.execute(text("UPDATE models_raw SET deleted_at = now()"))
    served = derived_counts(clean)["served"]
    with pytest.raises(TooManyWithdrawals) as refused:
        normalise_pending(clean, limit=WithdrawalLimit(share=0.05, floor=2))
    assert refused.value.withdrawn == served and derived_counts(clean)["served"] == served
    counts = normalise_pending(clean, limit=WithdrawalLimit(share=1.0, floor=0))
    assert counts.withdrawn == served and counts.deletions_synced == len(FIXTURE_ITEMS)
    assert derived_counts(clean)["served"] == 0


def test_the_limit_and_the_lock_wait_come_from_the_settings_through_the_database_resource(tmp_path: Path):
    from config import Settings, SettingsError
    from orchestration.resources import zoo_resources

    settings = Settings.from_env({"ZOO_HOME": str(tmp_path), "ZOO_MAX_REMOVED_SHARE": "0.2",
                                  "ZOO_MAX_REMOVED_FLOOR": "5", "ZOO_LOCK_WAIT_SECONDS": "3"})
    database = zoo_resources(settings)["database"]
    assert database.withdrawal_limit() == WithdrawalLimit(share=0.2, floor=5)
    assert database.lock_wait_seconds == 3
    defaults = zoo_resources(Settings.from_env({"ZOO_HOME": str(tmp_path)}))["database"]
    assert defaults.withdrawal_limit() == WithdrawalLimit(share=0.05, floor=20) and defaults.lock_wait_seconds == 600
    for variable, value in (("ZOO_MAX_REMOVED_SHARE", "2"), ("ZOO_MAX_REMOVED_SHARE", "lots"),
                            ("ZOO_MAX_REMOVED_FLOOR", "-1"), ("ZOO_LOCK_WAIT_SECONDS", "-5")):
        with pytest.raises(SettingsError, match=variable):
            Settings.from_env({"ZOO_HOME": str(tmp_path), variable: value})
