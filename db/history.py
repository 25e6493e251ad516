"""The catalogue's history: what each refresh run changed, per model, and the raw JSON each change replaced.

Recorded where models_raw is written (db/raw_store.py, and the crawl's deletion mark in db/crawl_store.py), in the
same transaction as that write, so history and models_raw cannot disagree. A refresh run is its crawl_runs row.

`models_raw_history` keeps the item as it was *before* a run changed it; models_raw holds the current one, so the
two together give the item at any moment since history began, and a model that never changes costs nothing.

Changes of counts alone (downloads, ratings, favourites, reactions: the `stats` objects) are not history: a daily
crawl of the live API changes them for most models, so keeping them would copy the raw catalogue every day. The
current counts are in models_raw and models; zoo_stats' Dagster metadata plots the totals over time.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import orjson
from sqlalchemy import Connection, text

ADDED, CHANGED, DELETED, RESTORED = "added", "changed", "deleted", "restored"

# The parts of a /models item (either schema era, see civitai/API.md) a change is reported by. `versions` is the
# version list and each version's own fields; `files` and `images` are those of versions present before and after.
_NSFW = ("nsfw", "nsfwLevel")
_LICENCE = ("allowCommercialUse", "allowNoCredit", "allowDerivatives", "allowDifferentLicense")
_STATUS = ("mode", "availability", "status")
_COUNTS = "stats"
_VERSION_PARTS = ("files", "images")
_SORTED_APART = {"description", "modelVersions", _COUNTS, *_NSFW, *_LICENCE, *_STATUS}
FIELDS = ("description", "files", "images", "licence", "nsfw", "other", "status", "versions")


def changed_fields(old: Mapping, new: Mapping) -> list[str]:
    """The parts (FIELDS, alphabetical) in which two raw items of one model differ; empty when only counts did."""
    before, after = _versions(old), _versions(new)
    both = before.keys() & after.keys()
    differs = {
        "description": old.get("description") != new.get("description"),
        "nsfw": _pick(old, _NSFW) != _pick(new, _NSFW),
        "licence": _pick(old, _LICENCE) != _pick(new, _LICENCE),
        "status": _pick(old, _STATUS) != _pick(new, _STATUS),
        "versions": [(key, _own(version)) for key, version in before.items()]
                    != [(key, _own(version)) for key, version in after.items()],
        "files": any(_part(before[key], "files") != _part(after[key], "files") for key in both),
        "images": any(_part(before[key], "images") != _part(after[key], "images") for key in both),
        "other": _without(old, _SORTED_APART) != _without(new, _SORTED_APART),
    }
    return sorted(name for name, differ in differs.items() if differ)


def _pick(item: Mapping, keys: Sequence[str]) -> list:
    return [item.get(key) for key in keys]


def _without(item: Mapping, keys: Collection[str]) -> dict:
    return {key: value for key, value in item.items() if key not in keys}


def _versions(item: Mapping) -> dict[str, object]:
    """The item's versions in listed order, keyed by their id (as JSON, whatever its type) or, lacking one, by
    position: raw items are stored before they are validated, so anything may be here."""
    versions = item.get("modelVersions")
    if not isinstance(versions, list):
        return {}
    return {(orjson.dumps(version.get("id")).decode() if isinstance(version, dict) and "id" in version
             else f"#{position}"): version for position, version in enumerate(versions)}


def _own(version: object) -> object:
    """A version's own fields: without its files, images and counts."""
    return _without(version, {*_VERSION_PARTS, _COUNTS}) if isinstance(version, dict) else version


def _part(version: object, key: str) -> object:
    """A version's files or images, each without its counts."""
    part = version.get(key) if isinstance(version, dict) else None
    if not isinstance(part, list):
        return part
    return [_without(entry, {_COUNTS}) if isinstance(entry, dict) else entry for entry in part]


def record_added(conn: Connection, run_id: int, model_ids: Sequence[int]) -> None:
    _insert_changes(conn, run_id, [(model_id, ADDED, []) for model_id in model_ids])


def record_replaced(conn: Connection, run_id: int, new_json: Mapping[int, str], restored: Collection[int]) -> None:
    """Before models_raw rows are replaced by `new_json` (model id -> canonical JSON): note what changed and keep
    the rows being replaced. `restored` are models marked deleted that came back. Call in the write's transaction."""
    if not new_json:
        return
    changes: list[tuple[int, str, list[str]]] = []
    for model_id, old_json in conn.execute(text("SELECT id, raw::text FROM models_raw WHERE id = ANY(:ids)"),
                                           {"ids": list(new_json)}):
        fields = changed_fields(orjson.loads(old_json), orjson.loads(new_json[model_id]))
        if model_id in restored or fields:
            changes.append((model_id, RESTORED if model_id in restored else CHANGED, fields))
    _insert_changes(conn, run_id, changes)
    kept = [model_id for model_id, _, fields in changes if fields]
    if kept:
        conn.execute(text(
            """
            INSERT INTO models_raw_history (model_id, run_id, raw, raw_sha, source, fetched_at)
            SELECT id, :run_id, raw, raw_sha, source, fetched_at FROM models_raw WHERE id = ANY(:ids)
            ON CONFLICT (run_id, model_id) DO NOTHING
            """
        ), {"run_id": run_id, "ids": kept})


def record_deleted(conn: Connection, run_id: int, model_ids: Sequence[int]) -> None:
    _insert_changes(conn, run_id, [(model_id, DELETED, []) for model_id in model_ids])


def _insert_changes(conn: Connection, run_id: int, changes: Sequence[tuple[int, str, list[str]]]) -> None:
    """One row per (run, model). A model met twice in one run (a listing repeats items across pages) keeps its first
    change and the union of the fields."""
    if not changes:
        return
    conn.execute(text(
        """
        INSERT INTO model_changes (run_id, model_id, change, fields)
        SELECT :run_id, c.model_id, c.change, ARRAY(SELECT jsonb_array_elements_text(c.fields))
        FROM jsonb_to_recordset(CAST(:changes AS jsonb)) AS c(model_id bigint, change text, fields jsonb)
        ON CONFLICT (run_id, model_id) DO UPDATE SET fields = ARRAY(
            SELECT DISTINCT f FROM unnest(model_changes.fields || EXCLUDED.fields) AS f ORDER BY f)
        """
    ), {"run_id": run_id, "changes": orjson.dumps(
        [{"model_id": model_id, "change": change, "fields": fields} for model_id, change, fields in changes]).decode()})
