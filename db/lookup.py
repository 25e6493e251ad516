"""Which model versions hold a file: by any hash kind Civitai gives (AutoV1, AutoV2, AutoV3, SHA256, CRC32, BLAKE3;
any case) or by the file's name. What a user with a file on disk and no idea where it came from asks
(`zoo lookup`, `GET /v1/lookup`). The rules are the resolver's (db/links.py): hashes are compared upper-cased over
every hash column, the empty file's hash names nothing, names by their lower-case stem (crawlers.normalise)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

from db.links import HASH_COLUMNS, EMPTY_FILE_HASH_PREFIX

MAX_MATCHES = 50

_BY_HASH = " UNION ".join(
    f"SELECT version_id, id AS file_id, '{column}' AS matched FROM model_files WHERE {column} = :hash"
    for column in HASH_COLUMNS)
_FILE_ROWS = """
    SELECT m.version_id, m.file_id, m.matched, f.name AS file_name, v.created_at
    FROM ({matches}) m JOIN model_files f ON f.id = m.file_id JOIN model_versions v ON v.id = m.version_id
    ORDER BY v.created_at NULLS LAST, m.version_id, m.file_id LIMIT :limit"""


@dataclass(frozen=True)
class FileMatch:
    """A version holding a matching file: the file's id and name, and what matched (a hash column, or 'name')."""

    version_id: int
    file_id: int
    file_name: str
    matched: str


def versions_by_hash(conn: Connection, value: str, limit: int = MAX_MATCHES) -> list[FileMatch]:
    """The versions with a file of this hash (any kind), oldest version first: Civitai resolves a shared hash to the
    oldest. The empty file's hash matches nothing."""
    wanted = value.strip().upper()
    if not wanted or wanted.startswith(EMPTY_FILE_HASH_PREFIX[:10]):
        return []
    rows = conn.execute(text(_FILE_ROWS.format(matches=_BY_HASH)), {"hash": wanted, "limit": limit}).mappings()
    return [FileMatch(row["version_id"], row["file_id"], row["file_name"], row["matched"]) for row in rows]


def versions_by_file_name(conn: Connection, stem: str, limit: int = MAX_MATCHES) -> list[FileMatch]:
    """The versions with a file of this stem (lower-case name without extension), oldest version first."""
    matches = "SELECT version_id, id AS file_id, 'name' AS matched FROM model_files WHERE name_stem = :stem"
    rows = conn.execute(text(_FILE_ROWS.format(matches=matches)), {"stem": stem, "limit": limit}).mappings()
    return [FileMatch(row["version_id"], row["file_id"], row["file_name"], row["matched"]) for row in rows]
