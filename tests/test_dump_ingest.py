"""A dump of the 2023 + 2024 fixtures through the whole catalogue path, on a real Postgres:

ingest_dump -> normalise_pending -> resolve_image_resources -> rebuild_links, asserted against the facts of
tests/fixtures/README.md (models, NSFW decisions, served versions, the exact links table, unresolvable references,
quarantined malformed lines), plus idempotency, parallel normalisation and damaged dumps.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, text

import crawlers.catalogue
from crawlers.catalogue import normalise_pending
from crawlers.dump import DumpError, ingest_dump
from crawlers.taxonomy import ADAPTER_TYPES, CHECKPOINT_TYPES, types_by_role
from db.links import rebuild_links, resolve_image_resources

try:
    from tests.helpers import FIXTURES, read_jsonl, truncate_all
except ImportError:  # tests/ not importable as a package: pytest put tests/ itself on sys.path
    from helpers import FIXTURES, read_jsonl, truncate_all

MODEL_IDS = [item["id"] for item in read_jsonl("civitai_2023.jsonl") + read_jsonl("civitai_2024.jsonl")]

# model id: (NSFW, reason kind) -- README "NSFW expected" and "reason" columns
NSFW = {
    100101: (False, "sfw"), 100102: (False, "sfw"), 100103: (False, "sfw"), 100201: (False, "sfw"),
    100202: (True, "flag"), 100203: (True, "images"), 100204: (False, "sfw"), 100301: (False, "sfw"),
    100401: (False, "sfw"),
    500101: (False, "sfw"), 500102: (True, "flag"), 500103: (False, "sfw"), 500104: (False, "sfw"),
    500105: (False, "sfw"), 500106: (True, "level"), 500107: (False, "sfw"),
}
# Versions of SFW models that have a primary file (500107 is Archived, without files).
SERVED_VERSIONS = {200101, 200102, 200103, 200104, 200201, 200204, 200301, 200401, 600101, 600104, 600105, 600106}
ALL_VERSIONS = SERVED_VERSIONS | {200202, 200203, 600102, 600103, 600107, 600108, 600109}

# README "Expected links (2023)": (adapter version, checkpoint version): (images, SFW images, avg weight or None)
EXPECTED_LINKS = {
    (200201, 200101): (1, 1, 0.8),
    (200201, 200102): (1, 1, 0.5),
    (200201, 200103): (2, 2, 0.65),
    (200202, 200101): (1, 1, 0.7),
    (200202, 200102): (3, 2, 0.8),
    (200203, 200101): (1, 0, 0.5),
    (200203, 200102): (1, 0, 0.7),
    (200203, 200103): (3, 2, 0.6333),
    (200204, 200104): (2, 2, 0.825),
    (200301, 200101): (1, 1, None),
    (200301, 200103): (1, 1, None),
}
SDXL_VERSIONS = {200104, 200204}

SNAPSHOT = Path(__file__).resolve().parent.parent / "crawlers" / "snapshot" / "sample_models.jsonl"
# README "Expected links in the snapshot" (35 pairs)
EXPECTED_SNAPSHOT_LINKS = {
    (920008, 920003): (1, 1, 0.7000), (920008, 920004): (2, 2, 0.6500), (920009, 920001): (1, 1, 0.7500),
    (920009, 920006): (1, 1, 0.9000), (920010, 920001): (1, 1, 0.7000), (920010, 920003): (1, 1, 0.6000),
    (920011, 920002): (1, 1, 0.6500), (920011, 920004): (1, 1, 0.8000), (920012, 920003): (2, 2, 0.9000),
    (920013, 920001): (1, 1, 0.7000), (920013, 920004): (1, 1, 0.6000), (920014, 920001): (1, 1, 0.7000),
    (920014, 920003): (1, 1, 0.8000), (920015, 920003): (1, 1, 0.8000), (920015, 920004): (1, 1, 0.9000),
    (920016, 920003): (2, 2, 0.7750), (920017, 920003): (1, 1, 0.7000), (920018, 920001): (1, 1, 0.8000),
    (920018, 920006): (1, 1, 0.7000), (920019, 920001): (1, 1, 0.7000), (920019, 920003): (2, 2, 0.6250),
    (920020, 920001): (1, 1, 0.6000), (920020, 920002): (1, 1, 0.8000), (920020, 920005): (1, 1, 0.7000),
    (920021, 920001): (1, 1, 0.9000), (920021, 920004): (1, 1, 0.7000), (920022, 920001): (1, 1, 0.7000),
    (920022, 920006): (1, 1, 0.8000), (920023, 920001): (1, 1, 1.5000), (920023, 920002): (1, 1, -1.0000),
    (920024, 920001): (1, 1, 0.6000), (920024, 920005): (1, 1, 0.5000), (920025, 920001): (1, 1, 0.8000),
    (920025, 920005): (1, 1, 0.6000), (920026, 920007): (2, 0, 0.7500),
}

CATALOGUE_TABLES = {
    "models_raw": "id",
    "models": "id",
    "model_versions": "id",
    "model_files": "id",
    "images": "id, version_id",
    "image_resources": "image_id, version_id, position",
    "adapter_checkpoint_links": "adapter_version_id, checkpoint_version_id",
    "quarantine": "payload_sha",
    "derived_stamps": "name",
}
TIMESTAMP_COLUMNS = {"updated_at", "fetched_at", "first_fetched_at", "created_at", "deleted_at", "removed_at"}


def _lines(*names: str) -> bytes:
    """The fixture files joined into one JSON Lines document (each file's last line newline-terminated)."""
    parts = []
    for name in names:
        path = FIXTURES / name if (FIXTURES / name).exists() else Path(name)
        data = path.read_bytes()
        parts.append(data if data.endswith(b"\n") else data + b"\n")
    return b"".join(parts)


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dumps")
    good = _lines("civitai_2023.jsonl", "civitai_2024.jsonl")
    paths = {
        "jsonl": folder / "fixtures.jsonl",
        "gz": folder / "fixtures.jsonl.gz",
        "malformed": folder / "with_malformed.jsonl",
    }
    paths["jsonl"].write_bytes(good)
    paths["gz"].write_bytes(gzip.compress(good, mtime=0))
    paths["malformed"].write_bytes(_lines("civitai_2023.jsonl", "malformed.jsonl", "civitai_2024.jsonl"))
    return paths


def _build(engine: Engine, path: Path, workers: int = 1):
    report = ingest_dump(engine, path)
    counts = normalise_pending(engine, workers=workers)
    resolved = resolve_image_resources(engine, types_by_role())
    links = rebuild_links(engine, ADAPTER_TYPES, CHECKPOINT_TYPES)
    return report, counts, resolved, links


@pytest.fixture
def built(engine: Engine, dumps: dict[str, Path]) -> Engine:
    """A clean database holding the 2023 + 2024 fixture dump, normalised, resolved and linked."""
    truncate_all(engine)
    _build(engine, dumps["jsonl"])
    return engine


def _snapshot(engine: Engine, with_timestamps: bool = True) -> dict[str, list[dict]]:
    """Every row of every catalogue table; without timestamps, what two builds at different times must share."""
    out: dict[str, list[dict]] = {}
    with engine.connect() as conn:
        for table, order in CATALOGUE_TABLES.items():
            if table == "derived_stamps" and not with_timestamps:
                continue  # the stamps are made of the catalogue's write times
            rows = conn.execute(text(f"SELECT * FROM {table} ORDER BY {order}")).mappings().all()
            out[table] = [{k: v for k, v in row.items() if with_timestamps or k not in TIMESTAMP_COLUMNS}
                          for row in rows]
    return out


def _links(engine: Engine) -> dict[tuple[int, int], tuple]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT adapter_version_id, checkpoint_version_id, image_count, sfw_image_count, avg_weight, "
            "weighted_image_count, adapter_family, checkpoint_family, family_compatible FROM adapter_checkpoint_links"
        )).all()
    return {(row[0], row[1]): tuple(row[2:]) for row in rows}


# ---------------------------------------------------------------------------------------------------------------
# the catalogue built from the dump
# ---------------------------------------------------------------------------------------------------------------


def test_every_fixture_model_is_in_models(built: Engine):
    with built.connect() as conn:
        raw = set(conn.execute(text("SELECT id FROM models_raw")).scalars())
        models = set(conn.execute(text("SELECT id FROM models")).scalars())
        errors = dict(conn.execute(text("SELECT id, normalise_error FROM models_raw WHERE normalise_error IS NOT NULL")).all())
    assert raw == set(MODEL_IDS)
    assert errors == {}
    assert models == set(MODEL_IDS)


def test_row_counts_match_the_readme(built: Engine):
    """README: 16 models, 19 versions, 19 files, 50 image entries (49 distinct images)."""
    with built.connect() as conn:
        count = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                 for t in ("models", "model_versions", "model_files", "images")}
        distinct_images = conn.execute(text("SELECT count(DISTINCT id) FROM images")).scalar_one()
    assert count == {"models": 16, "model_versions": 19, "model_files": 19, "images": 50}
    assert distinct_images == 49


def test_nsfw_decisions_and_reasons_match_the_readme(built: Engine):
    with built.connect() as conn:
        rows = {row[0]: (row[1], row[2]) for row in conn.execute(text("SELECT id, nsfw, nsfw_reason FROM models"))}
    for model_id, (nsfw, reason) in NSFW.items():
        if model_id not in rows:
            continue  # a missing model is reported by test_every_fixture_model_is_in_models
        assert rows[model_id][0] is nsfw, model_id
        assert rows[model_id][1].startswith(reason), (model_id, rows[model_id][1])
    assert {m for m, (n, _) in NSFW.items() if n} == {100202, 100203, 500102, 500106}


def test_non_ascii_name_round_trips_through_storage(built: Engine):
    with built.connect() as conn:
        name, creator = conn.execute(text("SELECT name, creator FROM models WHERE id = 100201")).one()
        found = conn.execute(text("SELECT id FROM models WHERE name LIKE '%水彩の夢%🎨'")).scalars().all()
    assert (name, creator) == ("水彩の夢 Watercolor Dream 🎨", "みずいろ工房")
    assert found == [100201]


def test_no_nsfw_model_is_served(built: Engine):
    with built.connect() as conn:
        served_nsfw = conn.execute(text(
            "SELECT s.version_id FROM served_model_versions s JOIN models m ON m.id = s.model_id "
            "WHERE m.nsfw OR m.nsfw_flag OR coalesce(m.nsfw_level, 0) & 60 <> 0"
        )).scalars().all()
    assert served_nsfw == []


def test_every_sfw_version_with_a_primary_file_is_served(built: Engine):
    with built.connect() as conn:
        served = conn.execute(text("SELECT version_id, primary_file_id FROM served_model_versions")).all()
    assert {version for version, _ in served} == SERVED_VERSIONS
    # version 200102 has a primary and a non-primary file: the primary one is served
    assert dict(served).get(200102) == 300102


def test_archived_model_is_stored_but_not_served(built: Engine):
    with built.connect() as conn:
        mode = conn.execute(text("SELECT mode FROM models WHERE id = 500107")).scalar_one()
        versions = conn.execute(text("SELECT id FROM model_versions WHERE model_id = 500107 ORDER BY id")).scalars().all()
        files = conn.execute(text(
            "SELECT count(*) FROM model_files f JOIN model_versions v ON v.id = f.version_id WHERE v.model_id = 500107"
        )).scalar_one()
    assert (mode, versions, files) == ("Archived", [600108, 600109], 0)


def test_links_table_equals_the_readme_exactly(built: Engine):
    links = _links(built)
    assert set(links) == set(EXPECTED_LINKS)
    for pair, (images, sfw, weight) in EXPECTED_LINKS.items():
        image_count, sfw_count, avg_weight, weighted, adapter_family, checkpoint_family, compatible = links[pair]
        assert (image_count, sfw_count) == (images, sfw), pair
        if weight is None:
            assert avg_weight is None and weighted == 0, pair
        else:
            assert avg_weight == pytest.approx(weight, abs=1e-4), pair
            assert weighted == images, pair
        family = "SDXL" if pair[0] in SDXL_VERSIONS else "SD1.x"
        assert (adapter_family, checkpoint_family, compatible) == (family, family, True), pair


def test_links_arrive_when_the_checkpoints_are_ingested_after_the_adapters(engine: Engine, tmp_path: Path):
    """A checkpoint ingested later resolves the references images made before it was known (links.py)."""
    truncate_all(engine)
    items = read_jsonl("civitai_2023.jsonl")
    adapters_only = tmp_path / "adapters.jsonl"
    adapters_only.write_bytes(b"".join(orjson.dumps(i) + b"\n" for i in items if i["type"] != "Checkpoint"))
    _, _, resolved, links = _build(engine, adapters_only)
    assert resolved is not None and resolved.unresolved > 0
    assert _links(engine) == {}
    everything = tmp_path / "everything.jsonl"
    everything.write_bytes(b"".join(orjson.dumps(i) + b"\n" for i in items))
    _, _, resolved, links = _build(engine, everything)
    assert resolved is not None and links is not None
    got = _links(engine)
    assert set(got) == set(EXPECTED_LINKS)
    for pair, (images, sfw, weight) in EXPECTED_LINKS.items():
        assert got[pair][:2] == (images, sfw), pair
        assert got[pair][2] == (None if weight is None else pytest.approx(weight, abs=1e-4)), pair


def test_snapshot_links_equal_the_readme_exactly(engine: Engine):
    truncate_all(engine)
    report, counts, _, _ = _build(engine, SNAPSHOT)
    assert report.items_received == 24 and counts.normalised == 24 and counts.quarantined == 0
    got = _links(engine)
    assert set(got) == set(EXPECTED_SNAPSHOT_LINKS)
    for pair, (images, sfw, weight) in EXPECTED_SNAPSHOT_LINKS.items():
        assert got[pair][:2] == (images, sfw), pair
        assert got[pair][2] == pytest.approx(weight, abs=1e-4), pair
        assert got[pair][6] is True, pair  # all SD 1.5
    with engine.connect() as conn:
        nsfw = conn.execute(text("SELECT id FROM models WHERE nsfw ORDER BY id")).scalars().all()
        unresolved = conn.execute(text(
            "SELECT count(*) FROM image_resources WHERE resolved_version_id IS NULL AND role <> 'vae'")).scalar_one()
    assert nsfw == [910006, 910024]
    assert unresolved == 0  # README: the snapshot has no unresolvable references


def test_unresolvable_references_stay_unresolved(built: Engine):
    with built.connect() as conn:
        rows = conn.execute(text(
            "SELECT image_id, role, upper(hash), resolved_version_id FROM image_resources "
            "WHERE upper(hash) IN ('E153531A4F', 'DB6E35E3F8', '848803B19F') ORDER BY image_id"
        )).all()
        unresolved_checkpoints = conn.execute(text(
            "SELECT DISTINCT image_id FROM image_resources WHERE role = 'checkpoint' AND resolved_version_id IS NULL "
            "ORDER BY image_id"
        )).scalars().all()
        glimmer = conn.execute(text(
            "SELECT resolved_version_id FROM image_resources WHERE image_id = 400208 AND lower(name) = 'glimmerdust_v3'"
        )).scalars().all()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (400204, "checkpoint", "E153531A4F"), (400208, "lora", "848803B19F"), (400215, "checkpoint", "DB6E35E3F8")]
    assert all(r[3] is None for r in rows)
    assert unresolved_checkpoints == [400204, 400215]
    assert glimmer == [None]
    # the images with an unknown checkpoint give no link; 400208 still links its known LoRA to 200101
    assert (200201, 200101) in _links(built) and (200204, 200104) in _links(built)


def test_file_name_only_reference_resolves_by_file_name(built: Engine):
    """Image 400206 names velvetHour_v1 only with a <lora:> tag: it resolves through the file stem."""
    with built.connect() as conn:
        rows = conn.execute(text(
            "SELECT sources, resolved_version_id, resolved_by FROM image_resources "
            "WHERE image_id = 400206 AND role = 'lora' AND position > 0"
        )).all()
    assert rows == [(["prompt_tag"], 200202, "file_name")]


def test_checkpoint_named_by_a_non_primary_file_hash_resolves_to_its_version(built: Engine):
    """Image 400207 names the AutoV2 of the fp32 (non-primary) file 300103 of version 200102."""
    with built.connect() as conn:
        rows = conn.execute(text(
            "SELECT upper(hash), resolved_version_id, resolved_by FROM image_resources "
            "WHERE image_id = 400207 AND role = 'checkpoint'"
        )).all()
    assert rows == [("8251A9FE5E", 200102, "hash")]


def test_gallery_rows_resolve_to_their_own_version(built: Engine):
    with built.connect() as conn:
        bad = conn.execute(text(
            "SELECT count(*) FROM image_resources WHERE position = 0 "
            "AND (resolved_version_id IS DISTINCT FROM version_id OR resolved_by <> 'gallery')"
        )).scalar_one()
        galleries = conn.execute(text("SELECT count(*) FROM image_resources WHERE position = 0")).scalar_one()
        images = conn.execute(text("SELECT count(*) FROM images")).scalar_one()
    assert bad == 0
    assert galleries == images  # one per image entry


def test_gzip_dump_gives_the_same_catalogue(engine: Engine, dumps: dict[str, Path]):
    truncate_all(engine)
    _build(engine, dumps["jsonl"])
    plain = _snapshot(engine, with_timestamps=False)
    truncate_all(engine)
    report, *_ = _build(engine, dumps["gz"])
    assert report.items_received == 16 and report.models_new == 16 and report.quarantined == 0
    gz = _snapshot(engine, with_timestamps=False)
    # only the raw rows' source differs (the dump's file name)
    assert {row.pop("source") for row in gz["models_raw"]} == {"dump:fixtures.jsonl.gz"}
    assert {row.pop("source") for row in plain["models_raw"]} == {"dump:fixtures.jsonl"}
    for rows in (gz["quarantine"], plain["quarantine"]):
        for row in rows:
            del row["id"], row["source"]
    assert gz == plain


# ---------------------------------------------------------------------------------------------------------------
# malformed lines
# ---------------------------------------------------------------------------------------------------------------


def test_malformed_lines_are_quarantined_and_good_items_load(engine: Engine, dumps: dict[str, Path]):
    truncate_all(engine)
    report, counts, _, _ = _build(engine, dumps["malformed"])
    assert report.items_received == 16 + 5
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT stage, model_id, error, payload->>'name', payload_text, source FROM quarantine ORDER BY id")).all()
        models = set(conn.execute(text("SELECT id FROM models")).scalars())
        versions = set(conn.execute(text("SELECT id FROM model_versions")).scalars())
        files = set(conn.execute(text("SELECT id FROM model_files")).scalars())
        raw_errors = dict(conn.execute(text(
            "SELECT id, normalise_error FROM models_raw WHERE normalise_error IS NOT NULL")).all())

    by_name = {row[3]: row for row in rows if row[3] is not None}
    # line 1: no id, line 2: id "abc" -- nothing to key a raw row by: stage crawl
    assert by_name["Nameless Model"][0] == "crawl"
    assert "no positive integer id" in by_name["Nameless Model"][2] and "None" in by_name["Nameless Model"][2]
    assert by_name["String Id Model"][0] == "crawl"
    assert "'abc'" in by_name["String Id Model"][2]
    # lines 3 and 4 are stored raw, then fail to normalise
    assert by_name["Versions As String"][:2] == ("normalise", 990003)
    assert "modelVersions is str" in by_name["Versions As String"][2]
    assert by_name["Version Without Id"][:2] == ("normalise", 990004)
    assert "version #0 has no positive integer id" in by_name["Version Without Id"][2]
    # line 5: not JSON, kept raw as text
    not_json = [row for row in rows if row[4] is not None]
    assert len(not_json) == 1
    assert not_json[0][0] == "crawl" and "not JSON" in not_json[0][2]
    assert not_json[0][4].startswith('{"id": 9, "name": "cut')
    assert all(row[5] == "dump:with_malformed.jsonl" for row in rows)

    # no row of any malformed line anywhere in the catalogue
    assert not {9, 990003, 990004} & models
    assert not {990101, 990102} & versions
    assert not {990201, 990202, 990204} & files
    assert set(raw_errors) >= {990003, 990004}
    # every good item loads, and the five malformed lines are the only quarantined ones
    assert models == set(MODEL_IDS)
    assert len(rows) == 5
    assert report.quarantined == 3 and counts.quarantined == 2


def _dump_of(tmp_path: Path, item: dict) -> Path:
    path = tmp_path / "one.jsonl"
    path.write_bytes(orjson.dumps(item) + b"\n")
    return path


def test_nul_characters_in_an_item_do_not_stop_it_loading(engine: Engine, tmp_path: Path):
    truncate_all(engine)
    item = next(i for i in read_jsonl("civitai_2023.jsonl") if i["id"] == 100201)
    item["name"] = "Water\x00color"
    item["description"] = "<p>soft\x00 washes</p>"
    item["modelVersions"][0]["images"][0]["meta"]["prompt"] += " \x00"
    _build(engine, _dump_of(tmp_path, item))
    with engine.connect() as conn:
        name, description = conn.execute(text("SELECT name, description_text FROM models WHERE id = 100201")).one()
        prompts = conn.execute(text("SELECT prompt FROM images WHERE model_id = 100201")).scalars().all()
    assert "\x00" not in name and name.startswith("Water") and name.endswith("color")
    assert "soft" in description and "washes" in description and "\x00" not in description
    assert len(prompts) == 4 and all(p is None or "\x00" not in p for p in prompts)


def test_raw_item_keeps_a_literal_backslash_u0000_text(engine: Engine, tmp_path: Path):
    """models_raw holds items as received; only real NUL characters (which Postgres refuses) may be replaced.

    canonical_json replaces the bytes `\\u0000` in the encoded JSON, which also rewrites the six literal characters
    backslash-u-0-0-0-0 of a text (written as "\\\\u0000" in JSON) into backslash-u-f-f-f-d.
    """
    truncate_all(engine)
    item = next(i for i in read_jsonl("civitai_2023.jsonl") if i["id"] == 100102)
    literal = "escape it as \\u0000 in C strings"
    item["description"] = f"<p>{literal}</p>"
    _build(engine, _dump_of(tmp_path, item))
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT raw->>'description' FROM models_raw WHERE id = 100102")).scalar_one()
        description = conn.execute(text("SELECT description_text FROM models WHERE id = 100102")).scalar_one()
    assert raw == f"<p>{literal}</p>"
    assert description == literal


# ---------------------------------------------------------------------------------------------------------------
# idempotency and parallel normalisation
# ---------------------------------------------------------------------------------------------------------------


def test_second_run_changes_nothing(engine: Engine, dumps: dict[str, Path]):
    truncate_all(engine)
    first = _build(engine, dumps["malformed"])
    assert first[2] is not None and first[3] is not None
    before = _snapshot(engine)
    report, counts, resolved, links = _build(engine, dumps["malformed"])
    assert _snapshot(engine) == before
    assert (report.models_new, report.models_changed) == (0, 0)
    # 16 fixture models + the two malformed lines that have an id + the three lines already in quarantine
    assert report.models_unchanged == 21 and report.quarantined == 0
    assert counts.pending == 0 and counts.normalised == 0
    assert resolved is None
    assert links is None


def test_workers_2_gives_the_same_catalogue(engine: Engine, dumps: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    truncate_all(engine)
    _build(engine, dumps["malformed"], workers=1)
    sequential = _snapshot(engine, with_timestamps=False)
    truncate_all(engine)
    # Small batches, so two worker processes really share the 18 stored items (one batch would run in-process).
    monkeypatch.setattr(crawlers.catalogue, "BATCH_SIZE", 4)
    report, counts, resolved, links = _build(engine, dumps["malformed"], workers=2)
    assert counts.pending == 18
    assert counts.normalised + counts.quarantined == 18
    parallel = _snapshot(engine, with_timestamps=False)
    # quarantine ids are serial: compare its rows without the id
    for rows in (parallel["quarantine"], sequential["quarantine"]):
        for row in rows:
            del row["id"]
    assert parallel == sequential
    assert resolved is not None and links is not None
    # and a second parallel run finds nothing to do
    before = _snapshot(engine)
    _, again, resolved, links = _build(engine, dumps["malformed"], workers=2)
    assert again.pending == 0 and resolved is None and links is None
    assert _snapshot(engine) == before


# ---------------------------------------------------------------------------------------------------------------
# damaged dumps
# ---------------------------------------------------------------------------------------------------------------


def test_missing_dump_raises_dump_error(engine: Engine, tmp_path: Path):
    with pytest.raises(DumpError, match="not found"):
        ingest_dump(engine, tmp_path / "nowhere.jsonl")
    with pytest.raises(DumpError):
        ingest_dump(engine, tmp_path)  # a folder is not a dump either


def test_truncated_gzip_keeps_items_read_before_the_damage(engine: Engine, dumps: dict[str, Path], tmp_path: Path):
    truncate_all(engine)
    whole = dumps["gz"].read_bytes()
    damaged = tmp_path / "damaged.jsonl.gz"
    damaged.write_bytes(whole[: len(whole) * 2 // 3])
    # what a reader can still get out of the damaged file: the complete lines before the cut
    readable = zlib.decompressobj(wbits=31).decompress(damaged.read_bytes())
    complete = readable[: readable.rfind(b"\n") + 1].splitlines()
    expected_ids = [orjson.loads(line)["id"] for line in complete]
    assert 0 < len(expected_ids) < 16

    with pytest.raises(DumpError, match="damaged.jsonl.gz"):
        ingest_dump(engine, damaged)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT id FROM models_raw ORDER BY id")).scalars().all()
        run = conn.execute(text(
            "SELECT status, error, items_received FROM crawl_runs ORDER BY id DESC LIMIT 1")).one()
    assert stored == sorted(expected_ids)
    assert run[0] == "failed" and run[1]
    assert run[2] == len(expected_ids)


def test_file_that_is_not_gzip_but_says_so_raises_dump_error(engine: Engine, tmp_path: Path):
    fake = tmp_path / "plain.jsonl.gz"
    fake.write_bytes(_lines("civitai_2023.jsonl"))
    with pytest.raises(DumpError):
        ingest_dump(engine, fake)


def _model(model_id: int, model_type: str, version_id: int, autov2: str, images: list[dict] = ()) -> dict:
    return {"id": model_id, "name": f"model {model_id}", "type": model_type, "nsfw": False, "tags": [],
            "modelVersions": [{"id": version_id, "name": "v1", "baseModel": "SD 1.5", "trainedWords": [],
                               "files": [{"id": version_id + 1000, "name": f"m{model_id}.safetensors",
                                          "type": "Model", "primary": True, "hashes": {"AutoV2": autov2}}],
                               "images": list(images)}]}


def test_references_resolve_only_to_models_that_can_play_their_role(engine: Engine, tmp_path: Path):
    """Mislabelled uploads (a "Checkpoint" whose file is an embedding, a "LORA" whose file is a checkpoint) must not
    become an image's checkpoint or adapter through a hash the image gave another role."""
    truncate_all(engine)
    meta = {"prompt": "a castle", "hashes": {"model": "AAAAAAAAAA", "embed:bad_prompt": "BBBBBBBBBB",
                                             "lora:castle": "CCCCCCCCCC"}}
    lora_as_checkpoint = {"prompt": "a tower", "Model hash": "DDDDDDDDDD"}
    items = [
        _model(1, "Checkpoint", 11, "AAAAAAAAAA"),
        _model(2, "Checkpoint", 12, "BBBBBBBBBB"),  # its file is the bad_prompt embedding
        _model(3, "LORA", 13, "CCCCCCCCCC", [{"id": 31, "url": "https://i.invalid/31.png", "meta": meta},
                                              {"id": 32, "url": "https://i.invalid/32.png", "meta": lora_as_checkpoint}]),
        _model(4, "LORA", 14, "DDDDDDDDDD"),  # its file is a merged checkpoint
        _model(5, "TextualInversion", 15, "EEEEEEEEEE"),
    ]
    dump = tmp_path / "mislabelled.jsonl"
    dump.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in items))
    _build(engine, dump)
    with engine.connect() as conn:
        resolved = dict(conn.execute(text(
            "SELECT role || ':' || image_id, resolved_version_id FROM image_resources WHERE position > 0")).all())
    assert resolved == {"checkpoint:31": 11, "embedding:31": None, "lora:31": 13, "checkpoint:32": None}
    assert set(_links(engine)) == {(13, 11)}


def test_a_catalogue_resolved_under_older_rules_is_resolved_again(built: Engine):
    with built.begin() as conn:
        expected = dict(conn.execute(text(
            "SELECT (image_id, version_id, position)::text, resolved_version_id FROM image_resources")).all())
        conn.execute(text("UPDATE image_resources SET resolved_version_id = 200101, resolved_by = 'hash' "
                          "WHERE role = 'lora' AND position > 0"))
        conn.execute(text("UPDATE derived_stamps SET stamp = split_part(stamp, '|', 1) || '|rules-1' "
                          "WHERE name = 'image_resources'"))
    assert resolve_image_resources(built, types_by_role()) is not None
    assert resolve_image_resources(built, types_by_role()) is None  # the new rules' stamp is kept
    with built.connect() as conn:
        again = dict(conn.execute(text(
            "SELECT (image_id, version_id, position)::text, resolved_version_id FROM image_resources")).all())
    assert again == expected
