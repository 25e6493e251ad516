"""What a version's card shows, read from the catalogue: the version and its model (names, licence, content level,
tags), its files with every hash kind, its SFW example images with their prompts, and its co-usage (the checkpoints
an adapter is used with, the adapters used with a checkpoint). Only served versions (served_model_versions) and
SFW images are ever read here; what the caller serves beyond that (content level, likeness) it decides."""

from __future__ import annotations

from sqlalchemy import Connection, text

_VERSION = """
    SELECT s.version_id, s.model_id, s.model_name, s.version_name, s.model_type, s.base_model, s.base_model_family,
           s.trained_words, s.tags, s.model_download_count, s.version_download_count, s.allow_commercial_use,
           s.primary_file_name, s.download_url, m.creator, m.allow_no_credit, m.allow_derivatives,
           m.allow_different_license, coalesce(m.content_level, 1) AS content_level, v.published_at, v.created_at
    FROM served_model_versions s JOIN models m ON m.id = s.model_id JOIN model_versions v ON v.id = s.version_id
    WHERE s.version_id = :version"""
_MODEL_VERSIONS = """
    SELECT s.version_id FROM served_model_versions s JOIN model_versions v ON v.id = s.version_id
    WHERE s.model_id = :model ORDER BY v.position, s.version_id DESC"""
_FILES = """
    SELECT id, name, type, is_primary, size_kb, format, fp, sha256, autov1, autov2, autov3, crc32, blake3,
           pickle_scan, virus_scan
    FROM model_files WHERE version_id = :version ORDER BY is_primary DESC, id"""
# SFW images only, and no further than the level the caller serves (unrated images of an SFW gallery are shown).
_SHOWN_IMAGE = "NOT nsfw AND coalesce(nsfw_level, 1) <= :max_level AND url IS NOT NULL"
_IMAGES = f"""
    SELECT id, url, width, height, coalesce(nsfw_level, 1) AS level, prompt, negative_prompt, sampler, steps,
           cfg_scale, seed
    FROM images WHERE version_id = :version AND {_SHOWN_IMAGE}
    ORDER BY position LIMIT :limit"""
_THUMBNAILS = f"""
    SELECT DISTINCT ON (version_id) version_id, id, url, width, height
    FROM images WHERE version_id = ANY(:versions) AND {_SHOWN_IMAGE}
    ORDER BY version_id, position, id"""
_USED_WITH = """
    SELECT l.{other}_version_id AS version_id, l.image_count, l.sfw_image_count, l.avg_weight
    FROM adapter_checkpoint_links l JOIN served_model_versions s ON s.version_id = l.{other}_version_id
    WHERE l.{own}_version_id = :version ORDER BY l.image_count DESC, l.sfw_image_count DESC, version_id LIMIT :limit"""


def version_row(conn: Connection, version_id: int) -> dict | None:
    """The served version with its model's fields (None when it is not served)."""
    row = conn.execute(text(_VERSION), {"version": version_id}).mappings().first()
    return dict(row) if row else None


def model_version_ids(conn: Connection, model_id: int) -> list[int]:
    """The model's served versions, newest first (Civitai's order)."""
    return [int(v) for v in conn.execute(text(_MODEL_VERSIONS), {"model": model_id}).scalars()]


def version_files(conn: Connection, version_id: int) -> list[dict]:
    return [dict(row) for row in conn.execute(text(_FILES), {"version": version_id}).mappings()]


def sfw_images(conn: Connection, version_id: int, max_level: int, limit: int = 12) -> list[dict]:
    """The version's SFW example images up to `max_level` (1 PG, 2 PG-13), gallery order."""
    return [dict(row) for row in conn.execute(text(_IMAGES), {"version": version_id, "max_level": max_level,
                                                               "limit": limit}).mappings()]


def first_sfw_images(conn: Connection, version_ids: list[int], max_level: int) -> dict[int, dict]:
    """Each version's first SFW example image up to `max_level` (the thumbnail of a search hit), by version id;
    one query for a whole result page."""
    rows = conn.execute(text(_THUMBNAILS), {"versions": [int(v) for v in version_ids], "max_level": max_level})
    return {int(row["version_id"]): dict(row) for row in rows.mappings()}


def used_with(conn: Connection, version_id: int, *, checkpoint: bool, limit: int = 50) -> list[dict]:
    """The served versions most used with this one: adapters for a checkpoint, checkpoints for an adapter."""
    own, other = ("checkpoint", "adapter") if checkpoint else ("adapter", "checkpoint")
    query = _USED_WITH.format(own=own, other=other)
    return [dict(row) for row in conn.execute(text(query), {"version": version_id, "limit": limit}).mappings()]
