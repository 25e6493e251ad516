"""models_raw and quarantine: items as received, with the content hash that tells a changed model from an unchanged one."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from sqlalchemy import Connection, text

from db import history
from db.copy import copy_rows, stage_rows


class RawItemError(ValueError):
    """The item cannot even be stored raw (not an object, no usable id, unencodable text)."""


@dataclass(frozen=True)
class RawItem:
    id: int
    json: str  # canonical JSON (sorted keys), what models_raw.raw holds
    sha: str
    source_sha: str  # hash of the bytes as received; equals sha when the item came inside a larger body


_ESCAPED_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def canonical_json(payload: object) -> bytes:
    """Sorted-key JSON; NUL characters (which Postgres text and JSONB refuse) become U+FFFD.

    Only a real NUL's escape is replaced, not the six characters '\\u0000' written literally in a text.
    """
    data = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    return _ESCAPED_NUL.sub(rb"\1\\ufffd", data) if b"\\u0000" in data else data


def payload_sha(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def to_raw_item(item: object, source_sha: str | None = None) -> RawItem:
    if not isinstance(item, dict):
        raise RawItemError(f"item is {type(item).__name__}, expected an object")
    model_id = item.get("id")
    if isinstance(model_id, bool) or not isinstance(model_id, int) or not 0 < model_id < 2**63:
        raise RawItemError(f"item has no positive integer id (got {model_id!r})")
    try:
        data = canonical_json(item)
    except (TypeError, orjson.JSONEncodeError) as error:
        raise RawItemError(f"model {model_id} cannot be encoded as JSON: {error}") from None
    sha = payload_sha(data)
    return RawItem(id=model_id, json=data.decode(), sha=sha, source_sha=source_sha or sha)


@dataclass
class UpsertCounts:
    new: int = 0
    changed: int = 0
    unchanged: int = 0

    def add(self, other: UpsertCounts) -> None:
        self.new += other.new
        self.changed += other.changed
        self.unchanged += other.unchanged


def upsert_raw_items(conn: Connection, items: Sequence[RawItem], source: str,
                     run_id: int | None = None) -> UpsertCounts:
    """Insert new items, replace changed ones (by content hash), leave unchanged rows untouched.

    Hashes are compared before anything is sent, so an unchanged re-crawl writes nothing and new items are
    COPied straight into place. A model repeated in one batch (cursor bugs repeat items) is stored once. With the
    refresh run's `run_id`, what changed is recorded in the catalogue's history (db/history.py) in this transaction.
    """
    unique = {item.id: item for item in items}
    if not unique:
        return UpsertCounts()
    known = dict(conn.execute(text(
        "SELECT id, raw_sha || CASE WHEN deleted_at IS NULL THEN '' ELSE ' deleted' END FROM models_raw "
        "WHERE id = ANY(:ids)"
    ), {"ids": list(unique)}).all())
    new = [item for item in unique.values() if item.id not in known]
    changed = [item for item in unique.values() if item.id in known and known[item.id] != item.sha]
    if run_id is not None:
        history.record_added(conn, run_id, [item.id for item in new])
        history.record_replaced(conn, run_id, {item.id: item.json for item in changed},
                                restored={item.id for item in changed if known[item.id].endswith(" deleted")})
    if new:
        copy_rows(conn, "models_raw", ("id", "raw", "raw_sha", "source_sha", "source"),
                  ((item.id, item.json, item.sha, item.source_sha, source) for item in new))
    if changed:
        stage_rows(conn, "stage_raw", "models_raw", ("id", "raw", "raw_sha", "source_sha", "source"),
                   ((item.id, item.json, item.sha, item.source_sha, source) for item in changed))
        conn.execute(text(
            """
            UPDATE models_raw r SET raw = s.raw, raw_sha = s.raw_sha, source_sha = s.source_sha, source = s.source,
                fetched_at = now(), deleted_at = NULL
            FROM stage_raw s WHERE s.id = r.id
            """
        ))
    # an item repeated in the batch is stored once: its other copies count as unchanged, so the counts add up to
    # the items received
    return UpsertCounts(new=len(new), changed=len(changed), unchanged=len(items) - len(new) - len(changed))


def quarantine(conn: Connection, *, stage: str, source: str, error: str, payload: object = None,
               payload_text: str | None = None, model_id: int | None = None) -> bool:
    """Keep an item that failed, with its error; the same payload is kept once. True when it was new."""
    if payload_text is None:
        data = canonical_json(payload)
        payload_json: str | None = data.decode()
    else:
        data = payload_text.replace("\x00", "\ufffd").encode("utf-8", "replace")
        payload_json = None
    row = conn.execute(text(
        """
        INSERT INTO quarantine (payload_sha, stage, source, model_id, error, payload, payload_text)
        VALUES (:sha, :stage, :source, :model_id, :error, CAST(:payload AS jsonb), :payload_text)
        ON CONFLICT (payload_sha) DO NOTHING RETURNING id
        """
    ), {"sha": payload_sha(stage.encode() + data), "stage": stage, "source": source, "model_id": model_id,
        "error": error[:2000], "payload": payload_json,
        "payload_text": None if payload_text is None else data.decode("utf-8", "replace")}).first()
    return row is not None


def known_source_shas(conn: Connection) -> set[str]:
    """Hashes of every stored item's bytes as received: a dump line whose hash is here is unchanged."""
    return set(conn.execute(text("SELECT source_sha FROM models_raw")).scalars())
