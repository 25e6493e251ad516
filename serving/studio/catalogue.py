"""The catalogue as the studio reads it: served versions by id as search `Hit`s (a given checkpoint and adapters,
the textual inversions a negative prompt names), described by `db.descriptions`' rule, in one SQL round trip."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import Engine, text

from db.descriptions import DescriberKey, preferred_descriptions_sql
from embedding.describe_card import trigger_words_or_trained
from serving.search.results import Hit

LOADABLE_FAMILIES = ("SD1.x",)  # what serving.studio.pipelines loads (single-file SD 1.x checkpoints)
LORA_TYPES = ("LORA", "LoCon", "DoRA")

_VERSIONS = f"""
    SELECT s.version_id, s.model_id, s.model_name, s.version_name, s.model_type, s.base_model, s.base_model_family,
           s.version_download_count, s.download_url, s.trained_words, s.primary_file_sha256, s.primary_file_name,
           d.kind, d.trigger_words, d.recommended_weight, d.text
    FROM served_model_versions s
    LEFT JOIN ({preferred_descriptions_sql(only_ids=True)}) d ON d.version_id = s.version_id
    WHERE s.version_id = ANY(:ids)"""
# Textual inversions a negative prompt calls by name: A1111 names an embedding by its file's stem and matches it in
# any case. The most downloaded version wins when several files share a stem; only the checkpoint's family fits its
# encoder, and only .safetensors files are ever read.
_NAMED_EMBEDDINGS = """
    SELECT DISTINCT ON (stem) version_id FROM (
        SELECT version_id, version_download_count,
               lower(regexp_replace(primary_file_name, '[.][^.]*$', '')) AS stem
        FROM served_model_versions
        WHERE model_type = 'TextualInversion' AND base_model_family = :family
          AND primary_file_name ILIKE '%.safetensors') named
    WHERE stem = ANY(:words)
    ORDER BY stem, version_download_count DESC, version_id"""
_WORD = re.compile(r"[\w.\-]+")


class StudioError(RuntimeError):
    """A request the studio cannot serve as asked (unknown version id, wrong model type, empty zoo): bad input."""


class UnknownVersion(StudioError):
    """A version id that the zoo does not serve (missing, NSFW, deleted, or of the wrong type)."""


class Catalogue:
    """Served versions looked up by id, each a `Hit` with its primary file (name, sha256) and its description by
    the describer `key` (the retriever's, else the fallback's)."""

    def __init__(self, engine: Engine, key: DescriberKey) -> None:
        self.engine, self.key = engine, key

    def hits(self, version_ids: Sequence[int], why: str = "given") -> dict[int, Hit]:
        """The served versions among `version_ids` (unknown, NSFW or deleted ones are absent)."""
        ids = sorted({int(v) for v in version_ids})
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(text(_VERSIONS), {**self.key.params(), "ids": ids}).mappings().all()
        return {int(row["version_id"]): _hit(row, why) for row in rows}

    def given(self, checkpoint: int | None,
              adapters: Sequence[tuple[int, float]] | None) -> tuple[Hit | None, list[tuple[Hit, float]] | None]:
        """A request's given checkpoint and (adapter, weight) pairs as hits, in one lookup; UnknownVersion for an id
        the zoo does not serve, a checkpoint that is not one, or an adapter that is not of the LoRA family."""
        ids = ([checkpoint] if checkpoint is not None else []) + [version for version, _ in adapters or ()]
        found = self.hits(ids)
        hit = None
        if checkpoint is not None:
            hit = found.get(int(checkpoint))
            if hit is None:
                raise UnknownVersion(f"version {checkpoint} is not in the zoo (unknown, NSFW, deleted or unlisted)")
            if hit.type != "Checkpoint":
                raise UnknownVersion(f"version {checkpoint} ({hit.name}) is a {hit.type}, not a checkpoint")
            if hit.base_model_family not in LOADABLE_FAMILIES:
                raise StudioError(f"version {checkpoint} ({hit.name}) is a {hit.base_model} checkpoint; the studio "
                                  f"loads {', '.join(LOADABLE_FAMILIES)} checkpoints only")
        if adapters is None:
            return hit, None
        return hit, [(_given_adapter(found, version), float(weight)) for version, weight in adapters]

    def primary_file_bytes(self, version_id: int) -> int | None:
        """The catalogue's size of a version's primary file (Civitai's sizeKB, in KiB), in bytes; None if unknown."""
        with self.engine.connect() as conn:
            size_kb = conn.execute(text(
                "SELECT size_kb FROM model_files WHERE version_id = :v AND is_primary ORDER BY id LIMIT 1"),
                {"v": int(version_id)}).scalar()
        return int(size_kb * 1024) if size_kb and size_kb > 0 else None

    def named_embeddings(self, family: str, prompt: str) -> list[Hit]:
        """The served textual inversions of a checkpoint family that a prompt calls by name (e.g. `EasyNegative` in
        a negative prompt pasted from Civitai), by name."""
        words = sorted({word.lower().strip(".-") for word in _WORD.findall(prompt)} - {""})
        if not words:
            return []
        with self.engine.connect() as conn:
            ids = conn.execute(text(_NAMED_EMBEDDINGS), {"family": family, "words": words}).scalars().all()
        found = self.hits(ids, why="named in the prompt")
        return [found[version] for version in ids if version in found]


def _given_adapter(found: dict[int, Hit], version: int) -> Hit:
    hit = found.get(int(version))
    if hit is None:
        raise UnknownVersion(f"adapter version {version} is not in the zoo (unknown, NSFW, deleted or unlisted)")
    if hit.type not in LORA_TYPES:
        raise UnknownVersion(f"adapter version {version} ({hit.name}) is a {hit.type}; only LORA, LoCon and DoRA "
                             "adapters can be applied")
    return hit


def _hit(row, why: str) -> Hit:
    """A looked-up version as a hit: no retrieval scores, the kind its description gives ('checkpoint' for any
    checkpoint, 'other' when undescribed)."""
    checkpoint = row["model_type"] == "Checkpoint"
    return Hit(model_id=int(row["model_id"]), version_id=int(row["version_id"]), name=row["model_name"],
               version_name=row["version_name"], type=row["model_type"],
               kind="checkpoint" if checkpoint else (row["kind"] or "other"), base_model=row["base_model"],
               base_model_family=row["base_model_family"] or "", score=0.0, similarity=0.0,
               downloads=int(row["version_download_count"] or 0), co_usage_images=0,
               trigger_words=trigger_words_or_trained(row["trigger_words"], row["trained_words"]),
               recommended_weight=row["recommended_weight"], download_url=row["download_url"], why=why,
               file_name=row["primary_file_name"], sha256=row["primary_file_sha256"], description=row["text"] or "")
