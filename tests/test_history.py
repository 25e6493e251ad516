"""The catalogue's history: each refresh run records, per model, what it added, changed (and which fields), deleted
and restored, keeps the raw item each change replaced, and the views recent_changes and catalogue_growth read it."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, text

from crawlers.dump import ingest_dump
from crawlers.ingest import IngestReport, store_items
from db import crawl_store
from db.history import changed_fields
from tests.helpers import read_jsonl, truncate_all

ITEMS = read_jsonl("civitai_2023.jsonl") + read_jsonl("civitai_2024.jsonl")


def write_dump(path: Path, items: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in items))
    return path


def changes(engine: Engine, run_id: int) -> dict[int, tuple[str, list[str]]]:
    with engine.connect() as conn:
        return {row.model_id: (row.change, row.fields) for row in conn.execute(
            text("SELECT model_id, change, fields FROM model_changes WHERE run_id = :run"), {"run": run_id})}


def last_run(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT max(id) FROM crawl_runs")).scalar_one()


@pytest.fixture()
def clean(engine: Engine) -> Engine:
    truncate_all(engine)
    return engine


def test_changed_fields_names_each_part_and_ignores_counts() -> None:
    item = copy.deepcopy(ITEMS[0])
    assert changed_fields(item, copy.deepcopy(item)) == []
    counted = copy.deepcopy(item)
    counted["stats"] = {"downloadCount": 10**9}
    counted["modelVersions"][0]["stats"] = {"downloadCount": 10**9}
    assert changed_fields(item, counted) == []
    edited = copy.deepcopy(item)
    edited["description"] = "<p>new card</p>"
    edited["nsfw"] = not item.get("nsfw")
    edited["allowCommercialUse"] = "None"
    edited["modelVersions"][0]["files"] = []
    edited["modelVersions"][0]["images"] = []
    edited["tags"] = ["something else"]
    assert changed_fields(item, edited) == ["description", "files", "images", "licence", "nsfw", "other"]
    more = copy.deepcopy(item)
    more["modelVersions"].insert(0, {**copy.deepcopy(item["modelVersions"][0]), "id": 999_999_001})
    assert changed_fields(item, more) == ["versions"]  # the new version's files are not "files changed"


def test_changed_fields_never_fails_on_odd_items() -> None:
    odd = [{}, {"modelVersions": "none"}, {"modelVersions": [1, None, {"id": [1]}, {"files": "x"}]},
           {"modelVersions": [{"id": 1, "images": [{"stats": 1}, 3]}]}]
    for old in odd:
        for new in odd:
            assert isinstance(changed_fields(old, new), list)


def test_two_dump_refreshes_record_what_changed(clean: Engine, tmp_path: Path) -> None:
    ingest_dump(clean, write_dump(tmp_path / "a.jsonl", ITEMS))
    first = last_run(clean)
    assert changes(clean, first) == {item["id"]: ("added", []) for item in ITEMS}

    changed = copy.deepcopy(ITEMS)
    changed[0]["description"] = "<p>rewritten</p>"
    changed[1]["stats"] = {"downloadCount": 123456789}  # counts alone: not history
    changed[2]["modelVersions"] = changed[2]["modelVersions"][1:] or [
        {**changed[2]["modelVersions"][0], "id": 999_999_002}]
    extra = {**copy.deepcopy(ITEMS[0]), "id": 999_999_000}
    report = ingest_dump(clean, write_dump(tmp_path / "b.jsonl", changed + [extra]))
    assert (report.models_new, report.models_changed) == (1, 3)
    second = last_run(clean)
    assert changes(clean, second) == {ITEMS[0]["id"]: ("changed", ["description"]),
                                      ITEMS[2]["id"]: ("changed", ["versions"]),
                                      extra["id"]: ("added", [])}
    with clean.connect() as conn:
        kept = dict(conn.execute(text("SELECT model_id, raw FROM models_raw_history WHERE run_id = :run"),
                                 {"run": second}).all())
        recent = conn.execute(text("SELECT model_id, change, fields, model_name FROM recent_changes "
                                   "WHERE run_id = :run ORDER BY model_id"), {"run": second}).all()
        growth = {row.model_type: row for row in conn.execute(
            text("SELECT * FROM catalogue_growth WHERE run_id = :run"), {"run": second})}
    assert set(kept) == {ITEMS[0]["id"], ITEMS[2]["id"]}
    assert kept[ITEMS[0]["id"]]["description"] == ITEMS[0]["description"]  # the card as it was before
    assert {(row.model_id, row.change) for row in recent} == {
        (ITEMS[0]["id"], "changed"), (ITEMS[2]["id"], "changed"), (extra["id"], "added")}
    assert all(row.model_name for row in recent)
    listed = sum(1 for item in ITEMS if item["type"] == ITEMS[0]["type"]) + 1
    assert growth[ITEMS[0]["type"]].models_listed == listed
    assert growth[ITEMS[0]["type"]].added == 1


def test_a_crawl_records_deletions_and_restorations(clean: Engine) -> None:
    item = copy.deepcopy(ITEMS[0])
    with clean.begin() as conn:
        run = crawl_store.open_run(conn, "api", {})
        store_items(conn, [item], "api", IngestReport(), run_id=run)
    with clean.begin() as conn:
        gone = crawl_store.open_run(conn, "api", {})
        crawl_store.mark_deleted(conn, item["id"], gone)
        crawl_store.mark_deleted(conn, item["id"], gone)  # a second 404 is not a second deletion
    with clean.begin() as conn:
        back = crawl_store.open_run(conn, "api", {})
        store_items(conn, [{**item, "name": "renamed on return"}], "api", IngestReport(), run_id=back)
    assert changes(clean, run) == {item["id"]: ("added", [])}
    assert changes(clean, gone) == {item["id"]: ("deleted", [])}
    assert changes(clean, back) == {item["id"]: ("restored", ["other"])}
    with clean.connect() as conn:
        assert conn.execute(text("SELECT raw->>'name' FROM models_raw_history WHERE run_id = :run"),
                            {"run": back}).scalar_one() == item["name"]
        growth = conn.execute(text("SELECT run_id, models_listed FROM catalogue_growth ORDER BY run_id")).all()
    assert [tuple(row) for row in growth] == [(run, 1), (gone, 0), (back, 1)]


def test_writes_outside_a_run_record_no_history(clean: Engine) -> None:
    with clean.begin() as conn:
        store_items(conn, [copy.deepcopy(ITEMS[0])], "api", IngestReport())
    with clean.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM model_changes")).scalar_one() == 0
