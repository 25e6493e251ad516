"""A file to the zoo's versions: by any hash kind (AutoV1/AutoV2/AutoV3/SHA256/CRC32/BLAKE3, any case) or by its
name (with or without folder and extension). Only served versions are answered."""

from __future__ import annotations

import re

from config import Settings
from crawlers.normalise import MAX_STEM_LENGTH, file_name_stem
from db.lookup import FileMatch, versions_by_file_name, versions_by_hash
from serving.catalogue.served import served_row, summary

HASH = re.compile(r"[0-9A-Fa-f]{8,128}")  # CRC32 has 8 hex digits, AutoV1 8, AutoV2 10, AutoV3 12, SHA256 64


def is_hash(value: str) -> bool:
    """Whether a value reads as a hash (hex digits only, 8 to 128 of them) rather than a file name."""
    return bool(HASH.fullmatch(value.strip()))


def lookup_hash(retriever, settings: Settings, value: str) -> list[dict]:
    """The served versions holding a file of this hash, oldest first. ValueError when it is not a hash."""
    if not is_hash(value):
        raise ValueError("a hash is 8 to 128 hex digits (CRC32, AutoV1, AutoV2, AutoV3, SHA256 or BLAKE3)")
    with retriever.db.connect() as conn:
        matches = versions_by_hash(conn, value)
    return _served(retriever, settings, matches)


def lookup_file(retriever, settings: Settings, name: str) -> list[dict]:
    """The served versions holding a file of this name (its stem, any case), oldest first."""
    if "\x00" in name:
        raise ValueError("the file name holds a NUL character")
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    stem = file_name_stem(base)[:MAX_STEM_LENGTH] if base else ""
    if not stem:
        raise ValueError("a file name is needed, e.g. detail_tweaker.safetensors")
    with retriever.db.connect() as conn:
        matches = versions_by_file_name(conn, stem)
    return _served(retriever, settings, matches)


def _served(retriever, settings: Settings, matches: list[FileMatch]) -> list[dict]:
    """Each served match as a version summary with the file that matched (unserved versions are left out)."""
    index, found = retriever.search_engine.index, []
    for match in matches:
        row = served_row(index, match.version_id)
        if row is not None:
            found.append({**summary(index, row, settings.civitai_base_url), "file_id": match.file_id,
                          "file_name": match.file_name, "matched": match.matched})
    return found
