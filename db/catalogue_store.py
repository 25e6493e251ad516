"""Write normalised models (models, versions, files, images, image references) in bulk, replacing what changed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from sqlalchemy import Connection, Engine, Table, text

from db.copy import copy_rows, stage_rows
from db.errors import RowsRefused
from db.schema import Image, ImageResource, Model, ModelFile, ModelVersion


class CatalogueRows(Protocol):
    model: dict
    versions: list[dict]
    files: list[dict]
    images: list[dict]
    image_resources: list[dict]


# Each table with the key its rows are unique by, in the order foreign keys need.
_TABLES: tuple[tuple[Table, tuple[str, ...], str], ...] = (
    (Model.__table__, ("id",), "model"),
    (ModelVersion.__table__, ("id",), "versions"),
    (ModelFile.__table__, ("id",), "files"),
    (Image.__table__, ("id", "version_id"), "images"),
    (ImageResource.__table__, ("image_id", "version_id", "position"), "image_resources"),
)


# An upsert may replace a row only when it belongs to the model being written (ON CONFLICT ... WHERE): a version
# of another model, or a file of another model's version, is left alone and the write counts it as refused.
_OWNED = {
    "model_versions": " WHERE model_versions.model_id = EXCLUDED.model_id",
    "model_files": " WHERE (SELECT model_id FROM model_versions WHERE id = model_files.version_id) = "
                   "(SELECT model_id FROM model_versions WHERE id = EXCLUDED.version_id)",
}


def _rows_of(batch: Sequence[CatalogueRows], attribute: str) -> list[dict]:
    if attribute == "model":
        return [rows.model for rows in batch]
    return [row for rows in batch for row in getattr(rows, attribute)]


def _unique(rows: Iterable[dict], key: tuple[str, ...]) -> list[dict]:
    """Last row wins per key: feeds can list one image twice in a gallery, or one file in two versions."""
    return list({tuple(row[k] for k in key): row for row in rows}.values())


def _columns(table: Table, row: dict) -> list[str]:
    return [column.name for column in table.columns if column.name in row]


def ownership_conflicts(conn: Connection, batch: Sequence[CatalogueRows]) -> dict[int, str]:
    """Models of the batch that list a version id or file id another model owns, with the reason.

    The owner is the model whose row holds the id in the catalogue, else the first model of the batch (in order)
    that lists it. Civitai's ids are global, so a second claimant is bad data: storing it would take the version
    (and what was derived from it) away from its owner.
    """
    version_ids = [row["id"] for rows in batch for row in rows.versions]
    file_ids = [row["id"] for rows in batch for row in rows.files]
    owners = {"version": dict(conn.execute(text("SELECT id, model_id FROM model_versions WHERE id = ANY(:ids)"),
                                           {"ids": version_ids}).all()),
              "file": dict(conn.execute(text(
                  "SELECT f.id, v.model_id FROM model_files f JOIN model_versions v ON v.id = f.version_id "
                  "WHERE f.id = ANY(:ids)"), {"ids": file_ids}).all())}
    conflicts: dict[int, str] = {}
    for rows in batch:
        model_id = rows.model["id"]
        claims = [("version", row["id"]) for row in rows.versions] + [("file", row["id"]) for row in rows.files]
        taken = next(((kind, key, owners[kind][key]) for kind, key in claims
                      if owners[kind].get(key, model_id) != model_id), None)
        if taken is not None:
            conflicts[model_id] = f"{taken[0]} id {taken[1]} belongs to model {taken[2]}"
            continue
        for kind, key in claims:
            owners[kind].setdefault(key, model_id)
    return conflicts


def served_versions(conn: Connection, model_ids: Sequence[int]) -> set[int]:
    """The versions of these models that serving may return now."""
    if not model_ids:
        return set()
    return set(conn.execute(text("SELECT version_id FROM served_model_versions WHERE model_id = ANY(:ids)"),
                            {"ids": list(model_ids)}).scalars())


def served_version_count(conn: Connection) -> int:
    return conn.execute(text("SELECT count(*) FROM served_model_versions")).scalar_one()


def replace_models(conn: Connection, batch: Sequence[CatalogueRows]) -> None:
    """Store a batch of normalised models: models never seen are COPied straight in; known ones are replaced.

    Versions of known models are upserted (other tables point at them); a version missing from its model's new
    listing is marked removed, never deleted. Files, images and image references are replaced wholesale. A version
    or file id that another model holds is never taken from it: the write raises RowsRefused (call
    ownership_conflicts first to leave such models out; this catches a claim committed meanwhile).
    """
    if not batch:
        return
    ids = [rows.model["id"] for rows in batch]
    known = set(conn.execute(text("SELECT id FROM models WHERE id = ANY(:ids)"), {"ids": ids}).scalars())
    fresh = [rows for rows in batch if rows.model["id"] not in known]
    existing = [rows for rows in batch if rows.model["id"] in known]
    if fresh:
        for table, key, attribute in _TABLES:
            rows = _unique(_rows_of(fresh, attribute), key)
            if rows:
                columns = _columns(table, rows[0])
                copy_rows(conn, table.name, columns, ([row[c] for c in columns] for row in rows))
    if existing:
        _replace_known(conn, existing)


def _replace_known(conn: Connection, batch: Sequence[CatalogueRows]) -> None:
    ids = {"ids": [rows.model["id"] for rows in batch]}
    conn.execute(text("DELETE FROM images WHERE model_id = ANY(:ids)"), ids)
    conn.execute(text(
        "DELETE FROM model_files f USING model_versions v WHERE f.version_id = v.id AND v.model_id = ANY(:ids)"
    ), ids)
    version_ids: list[int] = []
    for table, key, attribute in _TABLES:
        rows = _unique(_rows_of(batch, attribute), key)
        if attribute == "versions":
            version_ids = [row["id"] for row in rows]
        if not rows:
            continue
        columns = _columns(table, rows[0])
        stage = f"stage_{table.name}"
        stage_rows(conn, stage, table.name, columns, ([row[c] for c in columns] for row in rows))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
        extra = {"models": ", updated_at = now()", "model_versions": ", removed_at = NULL"}.get(table.name, "")
        written = conn.execute(text(
            f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {stage} "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}{extra}{_OWNED.get(table.name, '')}"
        )).rowcount
        if written != len(rows):
            raise RowsRefused(f"{len(rows) - written} of the {table.name} rows belong to another model")
    conn.execute(text(
        "UPDATE model_versions SET removed_at = now() "
        "WHERE model_id = ANY(:ids) AND removed_at IS NULL AND NOT (id = ANY(:versions))"
    ), {**ids, "versions": version_ids})


def deletions_to_sync(conn: Connection) -> list[int]:
    """Models whose deletion mark (set by the crawl on a 404 of /models/{id}) the catalogue does not carry yet."""
    return conn.execute(text(
        "SELECT m.id FROM models m JOIN models_raw r ON r.id = m.id WHERE r.deleted_at IS DISTINCT FROM m.deleted_at"
    )).scalars().all()


def sync_deletions(conn: Connection) -> int:
    """Carry deletions seen by the crawl (404 on /models/{id}) onto the catalogue; returns models changed."""
    return conn.execute(text(
        """
        UPDATE models m SET deleted_at = r.deleted_at, updated_at = now()
        FROM models_raw r WHERE r.id = m.id AND r.deleted_at IS DISTINCT FROM m.deleted_at
        """
    )).rowcount


def refresh_statistics(engine: Engine) -> None:
    """ANALYZE after bulk changes: without fresh statistics the planner picks nested loops over 10^5 rows."""
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("ANALYZE models, model_versions, model_files, images, image_resources"))
