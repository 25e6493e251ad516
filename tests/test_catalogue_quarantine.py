"""One bad item never stops the catalogue (issue 13, item 1): whatever the database refuses, the item is quarantined
with its reason and the good items of its batch are stored; a version id (or file id) that another model owns is
never taken from it.

Real Postgres; dump files written by the tests, the Dagster job as `zoo refresh --dump` runs it, and the fake
Civitai's item faults for the crawl.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import psycopg
import pytest
from sqlalchemy import Engine, text

import crawlers.catalogue
from crawlers.catalogue import normalise_pending
from crawlers.civitai_client import CivitaiClient
from crawlers.crawl import crawl_listing
from crawlers.dump import ingest_dump
from fake_civitai import Fault, FakeCivitai
from helpers import FIXTURES, read_jsonl, truncate_all
from orchestration.run import run_refresh
from testkit.civitai_items import civitai_item, incompressible_text

OWNER_TABLES = {
    "models": "SELECT * FROM models WHERE id = :id",
    "model_versions": "SELECT * FROM model_versions WHERE model_id = :id ORDER BY id",
    "model_files": "SELECT f.* FROM model_files f JOIN model_versions v ON v.id = f.version_id "
                   "WHERE v.model_id = :id ORDER BY f.id",
    "images": "SELECT * FROM images WHERE model_id = :id ORDER BY id, version_id",
}


def write_dump(path: Path, items: list) -> Path:
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in items))
    return path


def rows_of_model(engine: Engine, model_id: int) -> dict[str, list[dict]]:
    with engine.connect() as conn:
        return {table: [dict(row) for row in conn.execute(text(sql), {"id": model_id}).mappings()]
                for table, sql in OWNER_TABLES.items()}


def quarantined(engine: Engine) -> dict[int, tuple[str, str]]:
    with engine.connect() as conn:
        return {row.model_id: (row.stage, row.error)
                for row in conn.execute(text("SELECT model_id, stage, error FROM quarantine WHERE model_id IS NOT NULL"))}


def stored_ids(engine: Engine, table: str = "models") -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(text(f"SELECT id FROM {table}")).scalars())


def pending(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM models_raw WHERE normalised_sha IS DISTINCT FROM raw_sha")).scalar_one()


@pytest.fixture
def clean(engine: Engine) -> Engine:
    truncate_all(engine)
    return engine


# ---------------------------------------------------------------------------------------------------------------
# a value Postgres cannot index
# ---------------------------------------------------------------------------------------------------------------


def test_an_oversized_base_model_is_quarantined_and_the_200_good_items_are_stored(clean: Engine, tmp_path: Path):
    good = [civitai_item(300_000 + n, era="2024" if n % 2 else "2023") for n in range(200)]
    bad = civitai_item(300_500)
    bad["modelVersions"][0]["baseModel"] = incompressible_text(20_000)
    dump = write_dump(tmp_path / "202.jsonl", [*good[:100], bad, *good[100:], "not an object"])
    for _ in range(2):  # the second run must not fail either (the bad item must not stay pending)
        ingest_dump(clean, dump)
        normalise_pending(clean)
    assert stored_ids(clean) == {item["id"] for item in good}
    assert pending(clean) == 0
    stage, error = quarantined(clean)[300_500]
    assert "baseModel" in error and "20000" in error


def test_oversized_values_in_other_indexed_columns(clean: Engine, tmp_path: Path):
    """A model type is a short name: a huge one quarantines its model. A file name is kept whole but its indexed
    stem is cut to what a file system allows (255). A hash that long is not a hash: it is dropped, as a non-hex
    one is."""
    huge_type = civitai_item(310_001)
    huge_type["type"] = incompressible_text(20_000, seed=1)
    long_name = civitai_item(310_002)
    long_name["modelVersions"][0]["files"][0]["name"] = incompressible_text(20_000, seed=2) + ".safetensors"
    long_hash = civitai_item(310_003)
    long_hash["modelVersions"][0]["files"][0]["hashes"]["BLAKE3"] = incompressible_text(20_000, seed=3)
    ingest_dump(clean, write_dump(tmp_path / "three.jsonl", [huge_type, long_name, long_hash]))
    normalise_pending(clean)
    assert stored_ids(clean) == {310_002, 310_003}
    assert "type" in quarantined(clean)[310_001][1]
    with clean.connect() as conn:
        name, stem = conn.execute(text("SELECT name, name_stem FROM model_files WHERE id = 3100020")).one()
        blake3, sha256 = conn.execute(text("SELECT blake3, sha256 FROM model_files WHERE id = 3100030")).one()
    assert len(name) == 20_012 and len(stem) == 255 and name.lower().startswith(stem)
    assert blake3 is None and sha256 is not None


# ---------------------------------------------------------------------------------------------------------------
# version ids that belong to another model
# ---------------------------------------------------------------------------------------------------------------


def test_new_model_reusing_a_stored_version_id_through_refresh_dump(settings, clean: Engine, tmp_path: Path):
    assert run_refresh(settings, dump_path=str(FIXTURES / "civitai_2023.jsonl"), workers=1).success
    owner = rows_of_model(clean, 100101)
    assert 200101 in [v["id"] for v in owner["model_versions"]]
    newcomer = civitai_item(990_777)
    newcomer["modelVersions"][0]["id"] = 200101
    others = [civitai_item(990_800 + n) for n in range(3)]
    result = run_refresh(settings, dump_path=str(write_dump(tmp_path / "collide.jsonl", [newcomer, *others])),
                         workers=1)
    assert result.success
    assert rows_of_model(clean, 100101) == owner
    assert stored_ids(clean) >= {990_800, 990_801, 990_802} and 990_777 not in stored_ids(clean)
    stage, error = quarantined(clean)[990_777]
    assert "version id 200101 belongs to model 100101" in error


def test_changed_model_claiming_another_models_version_is_quarantined(settings, clean: Engine, tmp_path: Path):
    """The upsert path: a known model whose new listing holds another model's version id must not take it."""
    items = read_jsonl("civitai_2023.jsonl")
    assert run_refresh(settings, dump_path=str(write_dump(tmp_path / "first.jsonl", items)), workers=1).success
    owner, claimant_before = rows_of_model(clean, 100101), rows_of_model(clean, 100102)
    claimant = next(item for item in items if item["id"] == 100102)
    claimant["modelVersions"][0]["id"] = 200101
    assert run_refresh(settings, dump_path=str(write_dump(tmp_path / "second.jsonl", items)), workers=1).success
    assert rows_of_model(clean, 100101) == owner
    assert rows_of_model(clean, 100102) == claimant_before
    assert "version id 200101 belongs to model 100101" in quarantined(clean)[100102][1]


def test_a_file_id_of_another_model_is_not_taken(clean: Engine, tmp_path: Path):
    first, second = civitai_item(320_001), civitai_item(320_002)
    second["modelVersions"][0]["files"][0]["id"] = first["modelVersions"][0]["files"][0]["id"]
    ingest_dump(clean, write_dump(tmp_path / "files.jsonl", [first]))
    normalise_pending(clean)
    before = rows_of_model(clean, 320_001)
    ingest_dump(clean, write_dump(tmp_path / "files2.jsonl", [first, second]))
    normalise_pending(clean)
    assert rows_of_model(clean, 320_001) == before
    assert f"file id {3200010} belongs to model 320001" in quarantined(clean)[320_002][1]


def test_two_new_models_of_one_batch_sharing_a_version_id(clean: Engine, tmp_path: Path):
    """Neither is stored yet: the first by id keeps the version, the second is quarantined."""
    first, second = civitai_item(330_001), civitai_item(330_002)
    second["modelVersions"][0]["id"] = first["modelVersions"][0]["id"]
    ingest_dump(clean, write_dump(tmp_path / "pair.jsonl", [second, first]))
    normalise_pending(clean)
    assert stored_ids(clean) == {330_001}
    with clean.connect() as conn:
        assert conn.execute(text("SELECT model_id FROM model_versions WHERE id = 3300010")).scalar_one() == 330_001
    assert "version id 3300010 belongs to model 330001" in quarantined(clean)[330_002][1]


def test_parallel_batches_racing_for_one_version_id_store_it_once(clean: Engine, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    """Two worker processes each see the version id free; whichever commits second is refused by the database
    (COPY: UniqueViolation, a psycopg error) and its model, retried alone, is quarantined; the rest is stored."""
    monkeypatch.setattr(crawlers.catalogue, "BATCH_SIZE", 5)
    items = [civitai_item(340_000 + n) for n in range(20)]
    items[15]["modelVersions"][0]["id"] = items[2]["modelVersions"][0]["id"]
    ingest_dump(clean, write_dump(tmp_path / "race.jsonl", items))
    normalise_pending(clean, workers=2)
    with clean.connect() as conn:
        owners = conn.execute(text("SELECT model_id FROM model_versions WHERE id = 3400020")).scalars().all()
    assert len(owners) == 1
    loser = ({340_002, 340_015} - set(owners)).pop()
    assert set(quarantined(clean)) == {loser}
    assert stored_ids(clean) == {item["id"] for item in items} - {loser}


# ---------------------------------------------------------------------------------------------------------------
# whatever the error class
# ---------------------------------------------------------------------------------------------------------------


def _poison(monkeypatch: pytest.MonkeyPatch, model_id: int) -> None:
    """Make the normaliser hand the database a value it refuses (an integer out of its column's range)."""
    real = crawlers.catalogue.normalise_model

    def normalise(item):
        rows = real(item)
        if item["id"] == model_id:
            rows.versions[0]["nsfw_level"] = 2**40
        return rows

    monkeypatch.setattr(crawlers.catalogue, "normalise_model", normalise)


def test_a_refusal_while_copying_new_models_quarantines_only_that_model(clean: Engine, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    _poison(monkeypatch, 350_007)
    items = [civitai_item(350_000 + n) for n in range(12)]
    ingest_dump(clean, write_dump(tmp_path / "new.jsonl", items))
    normalise_pending(clean)
    assert stored_ids(clean) == {item["id"] for item in items} - {350_007}
    stage, error = quarantined(clean)[350_007]
    assert stage == "load" and "out of range" in error
    assert pending(clean) == 0


def test_a_refusal_while_replacing_known_models_quarantines_only_that_model(clean: Engine, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    items = [civitai_item(360_000 + n) for n in range(12)]
    ingest_dump(clean, write_dump(tmp_path / "known.jsonl", items))
    normalise_pending(clean)
    for item in items:
        item["name"] += " (renamed)"
    _poison(monkeypatch, 360_003)
    ingest_dump(clean, write_dump(tmp_path / "known2.jsonl", items))
    normalise_pending(clean)
    with clean.connect() as conn:
        names = dict(conn.execute(text("SELECT id, name FROM models")).all())
    assert all(name.endswith("(renamed)") for model_id, name in names.items() if model_id != 360_003)
    assert not names[360_003].endswith("(renamed)")
    assert set(quarantined(clean)) == {360_003}


def test_a_lost_connection_quarantines_nothing_and_leaves_the_batch_pending(clean: Engine, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    """A connection the server ended is no fault of the items: the run fails, the next one stores them."""
    items = [civitai_item(370_000 + n) for n in range(6)]
    ingest_dump(clean, write_dump(tmp_path / "cut.jsonl", items))
    real = crawlers.catalogue.replace_models

    def cut(conn, batch):
        conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")

    monkeypatch.setattr(crawlers.catalogue, "replace_models", cut)
    with pytest.raises(Exception) as raised:
        normalise_pending(clean)
    assert isinstance(raised.value, psycopg.OperationalError) or "terminat" in str(raised.value)
    assert quarantined(clean) == {} and pending(clean) == 6
    monkeypatch.setattr(crawlers.catalogue, "replace_models", real)
    normalise_pending(clean)
    assert stored_ids(clean) == {item["id"] for item in items}


# ---------------------------------------------------------------------------------------------------------------
# the same faults through a crawl of the fake Civitai
# ---------------------------------------------------------------------------------------------------------------


def test_crawled_items_with_an_oversized_value_and_a_colliding_version_id(clean: Engine):
    items = [civitai_item(380_000 + n) for n in range(9)]
    with FakeCivitai(items, page_size=3) as fake:
        fake.fault_on_request[2] = Fault("oversized-value")  # the second page's first item
        fake.fault_on_request[3] = Fault("colliding-version-id")  # the third page's first item takes item 0's version
        client = CivitaiClient(fake.base_url, requests_per_second=1000, backoff_base=0.01)
        try:
            crawl_listing(clean, client)
        finally:
            client.close()
    normalise_pending(clean)
    bad = quarantined(clean)
    assert set(bad) == {380_003, 380_006}
    assert "baseModel" in bad[380_003][1]
    assert "version id 3800000 belongs to model 380000" in bad[380_006][1]
    assert stored_ids(clean) == {item["id"] for item in items} - {380_003, 380_006}


def test_a_full_disk_in_a_worker_fails_the_run_as_itself_and_quarantines_nothing(clean: Engine, tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch):
    """Postgres refusing writes for want of disk (SQLSTATE 53100) is no fault of the rows; the error a worker
    process met is the one raised (not the pool's '_RemoteTraceback'), so the run's failure names it."""
    monkeypatch.setattr(crawlers.catalogue, "BATCH_SIZE", 3)
    items = [civitai_item(390_000 + n) for n in range(9)]
    ingest_dump(clean, write_dump(tmp_path / "full.jsonl", items))
    with clean.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION "
            "'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$; "
            "CREATE TRIGGER disk_full BEFORE INSERT ON model_versions FOR EACH STATEMENT EXECUTE FUNCTION disk_full()")
    try:
        with pytest.raises(Exception, match="No space left on device") as raised:
            normalise_pending(clean, workers=2)
        assert raised.value.__cause__ is None
    finally:
        with clean.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER disk_full ON model_versions; DROP FUNCTION disk_full()")
    assert quarantined(clean) == {} and pending(clean) == 9
    normalise_pending(clean, workers=2)
    assert stored_ids(clean) == {item["id"] for item in items}
