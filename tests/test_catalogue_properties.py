"""Property-based tests (hypothesis) of the normaliser and of the raw store -> catalogue path, over generated
Civitai-shaped items of both schema eras: fields missing, added, renamed or of the wrong type, huge strings, NUL
bytes, odd unicode, ids that are not ids, numbers no column holds.

Properties: nothing crashes; every item received is stored or quarantined with a reason; the counts add up (items
in = new + changed + unchanged + quarantined; pending = normalised + quarantined); a second run changes nothing.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import Engine, text

from crawlers.catalogue import normalise_pending
from crawlers.dump import ingest_dump
from crawlers.ingest import IngestReport, store_items
from crawlers.normalise import (
    MAX_BASE_MODEL_LENGTH,
    MAX_HASH_LENGTH,
    MAX_STEM_LENGTH,
    MAX_TYPE_LENGTH,
    NormaliseError,
    normalise_model,
)
from helpers import truncate_all
from testkit.civitai_items import civitai_item, incompressible_text

ODD_TEXT = ["", " ", "\x00", "a\x00b", "\ud800", "e\u0301", "\u202ename\u202c", "🦊 fox", "\ufeffbom", "Ａｎｉｍｅ",
            "\u0000\u0000", "ǅ", "名前", "\\u0000", "'; DROP TABLE models; --", "<p>html</p>", "\n\t"]
INT32 = 2**31 - 1

leaves = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(ODD_TEXT),
    st.builds(incompressible_text, st.sampled_from([3_000, 20_000]), st.integers(0, 5)),
)
json_values = st.recursive(
    leaves, lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6)
RENAMES = {"modelVersions": "versions", "files": "modelFiles", "images": "gallery", "id": "modelId",
           "baseModel": "base_model", "type": "modelType", "hashes": "hash", "meta": "metadata"}


def _dicts(node: object) -> list[dict]:
    """Every object in the item's tree (the item, versions, files, images, stats, meta, ...)."""
    if isinstance(node, dict):
        return [node] + [found for value in node.values() for found in _dicts(value)]
    if isinstance(node, list):
        return [found for value in node for found in _dicts(value)]
    return []


@st.composite
def civitai_items(draw, model_id: int) -> object:
    """A generated /models item of either era, then damaged in up to five places."""
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)  # not an object at all
    item = civitai_item(model_id, era=draw(st.sampled_from(["2023", "2024"])), versions=draw(st.integers(0, 3)),
                        images=draw(st.integers(0, 2)), seed=draw(st.integers(0, 10_000)))
    for _ in range(draw(st.integers(0, 5))):
        node = draw(st.sampled_from(_dicts(item)))
        if not node:
            continue
        key = draw(st.sampled_from(sorted(node)))
        change = draw(st.sampled_from(["delete", "rename", "retype", "add", "huge", "odd"]))
        if change == "delete":
            del node[key]
        elif change == "rename":
            node[RENAMES.get(key, key + "_v2")] = node.pop(key)
        elif change == "retype":
            node[key] = draw(json_values)
        elif change == "add":
            node[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
        elif change == "huge":
            node[key] = incompressible_text(20_000, seed=model_id)
        else:
            node[key] = draw(st.sampled_from(ODD_TEXT)) + (node[key] if isinstance(node[key], str) else "")
    return item


@st.composite
def item_lists(draw) -> list[object]:
    count = draw(st.integers(1, 12))
    items = [draw(civitai_items(700_000 + n)) for n in range(count)]
    if draw(st.booleans()) and isinstance(items[0], dict):
        items.append(copy.deepcopy(items[0]))  # a repeat, as cursor bugs give
    return items


# ---------------------------------------------------------------------------------------------------------------
# the normaliser alone
# ---------------------------------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(civitai_items(123_456))
def test_normalise_gives_storable_rows_or_a_normalise_error(item):
    try:
        rows = normalise_model(item)
    except NormaliseError as error:
        assert str(error)
        return
    assert len(rows.model["type"]) <= MAX_TYPE_LENGTH
    for version in rows.versions:
        assert version["base_model"] is None or len(version["base_model"]) <= MAX_BASE_MODEL_LENGTH
        assert -INT32 <= version["position"] <= INT32
    for file in rows.files:
        assert len(file["name_stem"]) <= MAX_STEM_LENGTH
        assert all(file[kind] is None or (len(file[kind]) <= MAX_HASH_LENGTH and file[kind].isalnum())
                   for kind in ("sha256", "autov1", "autov2", "autov3", "crc32", "blake3"))
    for image in rows.images:
        assert all(image[column] is None or -INT32 <= image[column] <= INT32
                   for column in ("width", "height", "steps", "nsfw_level"))
    for table in (rows.model, *rows.versions, *rows.files, *rows.images, *rows.image_resources):
        for value in table.values():
            texts = value if isinstance(value, list) else [value]
            assert not any(isinstance(text_, str) and "\x00" in text_ for text_ in texts)


# ---------------------------------------------------------------------------------------------------------------
# dump / crawl store -> catalogue, on the real Postgres
# ---------------------------------------------------------------------------------------------------------------


def _catalogue_accounts(engine: Engine) -> tuple[set[int], set[int], set[int], list[str]]:
    with engine.connect() as conn:
        raw = set(conn.execute(text("SELECT id FROM models_raw")).scalars())
        models = set(conn.execute(text("SELECT id FROM models")).scalars())
        refused = set(conn.execute(text(
            "SELECT model_id FROM quarantine WHERE stage IN ('normalise', 'load')")).scalars())
        reasons = conn.execute(text("SELECT error FROM quarantine")).scalars().all()
    return raw, models, refused, reasons


def _assert_everything_accounted_for(engine: Engine, report: IngestReport, counts) -> None:
    assert report.items_received == (report.models_new + report.models_changed + report.models_unchanged
                                     + report.quarantined)
    raw, models, refused, reasons = _catalogue_accounts(engine)
    assert counts.pending == len(raw) == counts.normalised + counts.quarantined
    assert models | refused == raw and not models & refused  # every stored item is a model or quarantined
    assert all(reason.strip() for reason in reasons)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(items=item_lists())
def test_every_dumped_item_is_stored_or_quarantined_and_the_counts_add_up(engine: Engine, tmp_path: Path, items):
    truncate_all(engine)
    dump = tmp_path / "generated.jsonl"
    # json, not orjson: it writes what orjson refuses (integers past 64 bits, NaN, lone surrogates as escapes),
    # as a damaged dump would hold them
    dump.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    report = ingest_dump(engine, dump)
    assert report.items_received == len(items)
    counts = normalise_pending(engine)
    _assert_everything_accounted_for(engine, report, counts)
    again = ingest_dump(engine, dump)
    assert (again.models_new, again.models_changed) == (0, 0)
    assert normalise_pending(engine).pending == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(items=item_lists())
def test_every_crawled_item_is_stored_or_quarantined_and_the_counts_add_up(engine: Engine, items):
    """The crawl's path: a page's items as parsed objects, through store_items."""
    truncate_all(engine)
    report = IngestReport()
    with engine.begin() as conn:
        store_items(conn, items, "api", report)
    assert report.items_received == len(items)
    _assert_everything_accounted_for(engine, report, normalise_pending(engine))


@pytest.mark.parametrize("era", ["2023", "2024"])
def test_the_generator_makes_items_the_normaliser_reads_whole(era):
    item = civitai_item(1, era=era, versions=2, images=2)
    rows = normalise_model(item)
    assert len(rows.versions) == 2 and len(rows.files) == 2 and len(rows.images) == 4
    assert rows.model["schema_era"] == ("2024+" if era == "2024" else "2023")
