"""Stored generations of the in-memory search index: named arrays and blobs as chunked bytea rows.

The retrieval_index asset builds a space's index from the catalogue and writes it here as one new generation, in
one transaction, then NOTIFYs `zoo_search_index`; a serving process on any host loads the newest generation with
nothing but DATABASE_URL, and reloads when a newer one appears. Older generations are kept for a while, so a
process still loading one is never cut short.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Connection, Engine, text

from db.copy import driver_cursor

CHANNEL = "zoo_search_index"
CHUNK_BYTES = 64 << 20  # a bytea value holds at most 1 GB; smaller chunks keep the load's peak memory down
KEEP_GENERATIONS = 3


@dataclass(frozen=True)
class StoredIndex:
    """One generation as loaded: its arrays (read-only views on the loaded bytes), blobs and manifest."""

    space: str
    generation: int
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]
    blobs: dict[str, bytes]


def current_generation(conn: Connection, space: str) -> int | None:
    return conn.execute(text("SELECT max(generation) FROM search_index_generations WHERE space = :space"),
                        {"space": space}).scalar_one()


def save_index(conn: Connection, space: str, arrays: Mapping[str, np.ndarray], blobs: Mapping[str, bytes],
               settings: Mapping[str, Any], versions: int) -> int:
    """Write a new generation of `space` (the caller commits: parts, generation row and notification land
    together) and drop generations older than the last KEEP_GENERATIONS; returns the generation."""
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('search_index:' || :space))"), {"space": space})
    generation = (current_generation(conn, space) or 0) + 1
    manifest = {"arrays": {name: {"dtype": array.dtype.str, "shape": list(array.shape)}
                           for name, array in arrays.items()},
                "blobs": sorted(blobs), "settings": dict(settings)}
    parts = {**{name: np.ascontiguousarray(array).tobytes() for name, array in arrays.items()}, **blobs}
    total = sum(len(data) for data in parts.values())
    conn.execute(text(
        "INSERT INTO search_index_generations (space, generation, versions, bytes, manifest) "
        "VALUES (:space, :generation, :versions, :bytes, CAST(:manifest AS jsonb))"),
        {"space": space, "generation": generation, "versions": versions, "bytes": total,
         "manifest": orjson.dumps(manifest).decode()})
    with driver_cursor(conn).copy(
            "COPY search_index_parts (space, generation, part, chunk, data) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["text", "int8", "text", "int4", "bytea"])
        for name, data in parts.items():
            for chunk, start in enumerate(range(0, max(len(data), 1), CHUNK_BYTES)):
                copy.write_row((space, generation, name, chunk, data[start:start + CHUNK_BYTES]))
    conn.execute(text("DELETE FROM search_index_generations WHERE space = :space AND generation <= :old"),
                 {"space": space, "old": generation - KEEP_GENERATIONS})
    conn.execute(text("SELECT pg_notify(:channel, :payload)"),
                 {"channel": CHANNEL, "payload": f"{space}:{generation}"})
    return generation


def load_index(engine: Engine, space: str, generation: int | None = None) -> StoredIndex | None:
    """The newest (or the given) generation of `space`, or None when none was built yet."""
    with engine.connect() as conn:
        if generation is None:
            generation = current_generation(conn, space)
        if generation is None:
            return None
        manifest = conn.execute(text(
            "SELECT manifest FROM search_index_generations WHERE space = :space AND generation = :generation"),
            {"space": space, "generation": generation}).scalar_one_or_none()
        if manifest is None:
            return None
        parts = dict(_parts(conn, space, generation))
    arrays = {name: np.frombuffer(parts.pop(name), dtype=np.dtype(spec["dtype"])).reshape(spec["shape"])
              for name, spec in manifest["arrays"].items()}
    return StoredIndex(space, generation, manifest, arrays, {name: parts[name] for name in manifest["blobs"]})


def load_array(engine: Engine, space: str, name: str) -> np.ndarray | None:
    """One array of the newest generation of `space` (None when there is none), without loading the rest."""
    with engine.connect() as conn:
        generation = current_generation(conn, space)
        if generation is None:
            return None
        spec = conn.execute(text("SELECT manifest -> 'arrays' -> :name FROM search_index_generations "
                                 "WHERE space = :space AND generation = :generation"),
                            {"name": name, "space": space, "generation": generation}).scalar_one()
        data = b"".join(conn.execute(text("SELECT data FROM search_index_parts WHERE space = :space AND "
                                          "generation = :generation AND part = :name ORDER BY chunk"),
                                     {"space": space, "generation": generation, "name": name}).scalars())
    return np.frombuffer(data, dtype=np.dtype(spec["dtype"])).reshape(spec["shape"]) if spec else None


def _parts(conn: Connection, space: str, generation: int) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every part, its chunks joined; read in binary so bytea is not hex-encoded on the way."""
    cursor = driver_cursor(conn)
    cursor.execute("SELECT part, chunk, data FROM search_index_parts WHERE space = %s AND generation = %s "
                   "ORDER BY part, chunk", (space, generation), binary=True)
    current, chunks = None, []
    for part, _, data in cursor:
        if part != current and current is not None:
            yield current, b"".join(chunks)
            chunks = []
        current = part
        chunks.append(bytes(data))
    if current is not None:
        yield current, b"".join(chunks)
