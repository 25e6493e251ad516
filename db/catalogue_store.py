"""Write normalised models (models, versions, files, images, image references) in bulk, replacing what changed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from sqlalchemy import Connection, Engine, Table, text

from db.copy import copy_rows, stage_rows
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


def _rows_of(batch: Sequence[CatalogueRows], attribute: str) -> list[dict]:
    if attribute == "model":
        return [rows.model for rows in batch]
    return [row for rows in batch for row in getattr(rows, attribute)]


def _unique(rows: Iterable[dict], key: tuple[str, ...]) -> list[dict]:
    """Last row wins per key: feeds can list one image twice in a gallery, or one file in two versions."""
    return list({tuple(row[k] for k in key): row for row in rows}.values())


def _columns(table: Table, row: dict) -> list[str]:
    return [column.name for column in table.columns if column.name in row]


def replace_models(conn: Connection, batch: Sequence[CatalogueRows]) -> None:
    """Store a batch of normalised models: models never seen are COPied straight in; known ones are replaced.

    Versions of known models are upserted (other tables point at them); a version missing from its model's new
    listing is marked removed, never deleted. Files, images and image references are replaced wholesale.
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
        conn.execute(text(
            f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {stage} "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}{extra}"
        ))
    conn.execute(text(
        "UPDATE model_versions SET removed_at = now() "
        "WHERE model_id = ANY(:ids) AND removed_at IS NULL AND NOT (id = ANY(:versions))"
    ), {**ids, "versions": version_ids})


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
