"""Stamps that let derived steps (reference resolution, links) skip when the catalogue has not changed."""

from __future__ import annotations

from sqlalchemy import Connection, text


def catalogue_stamp(conn: Connection) -> str:
    """Changes whenever a model is written, deleted or restored (every such write sets models.updated_at)."""
    return conn.execute(text("SELECT coalesce(max(updated_at)::text, '') || '/' || count(*) FROM models")).scalar_one()


def stamp_of(conn: Connection, name: str) -> str | None:
    return conn.execute(text("SELECT stamp FROM derived_stamps WHERE name = :name"), {"name": name}).scalar()


def set_stamp(conn: Connection, name: str, stamp: str) -> None:
    conn.execute(text(
        "INSERT INTO derived_stamps (name, stamp) VALUES (:name, :stamp) "
        "ON CONFLICT (name) DO UPDATE SET stamp = EXCLUDED.stamp, updated_at = now()"
    ), {"name": name, "stamp": stamp})
