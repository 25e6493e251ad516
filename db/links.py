"""Resolve what example images name into model versions, and aggregate adapter -> checkpoint co-usage.

Both steps are set-based SQL over the whole catalogue (as Civitai's own get_image_resources: any hash kind,
case-insensitive), so a checkpoint crawled today also resolves references made by images crawled earlier.
Which model types play which role is the caller's knowledge (crawlers.taxonomy), passed in.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from db.derived import catalogue_stamp, set_stamp, stamp_of

HASH_COLUMNS = ("sha256", "autov1", "autov2", "autov3", "crc32", "blake3")
# Bump when the resolution rules change: a catalogue resolved under other rules is then resolved again from scratch.
RESOLUTION_RULES = "rules-2"
EMPTY_FILE_HASH_PREFIX = "E3B0C44298FC"  # sha256 of an empty file: Civitai ignores it, so do we


@dataclass
class ResolveCounts:
    by_version_id: int = 0
    by_hash: int = 0
    by_file_name: int = 0
    unresolved: int = 0


def resolve_image_resources(engine: Engine, types_by_role: Mapping[str, Collection[str]],
                            force: bool = False) -> ResolveCounts | None:
    """Resolve in one transaction, then refresh the planner's statistics for the aggregation that follows.

    Returns None (and does nothing) when neither the catalogue nor the rules changed since the last resolution;
    `force`, or new rules, resolve every reference again.
    """
    with engine.begin() as conn:
        stamp = f"{catalogue_stamp(conn)}|{RESOLUTION_RULES}"
        previous = stamp_of(conn, "image_resources")
        if not force and previous == stamp:
            return None
        conn.execute(text("SET LOCAL work_mem = '256MB'"))
        if force or not (previous or "").endswith(f"|{RESOLUTION_RULES}"):
            conn.execute(text("UPDATE image_resources SET resolved_version_id = NULL, resolved_by = NULL "
                              "WHERE resolved_version_id IS NOT NULL"))
        counts = _resolve(conn, types_by_role)
        set_stamp(conn, "image_resources", stamp)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE image_resources"))
    return counts


def _resolve(conn: Connection, types_by_role: Mapping[str, Collection[str]],
             table: str = "image_resources") -> ResolveCounts:
    """Fill resolved_version_id for references not yet resolved: by version id, then hash, then file name.

    A reference only resolves to a model whose type can play the role the image gave it: Civitai holds mislabelled
    uploads (a "Checkpoint" whose file is the bad_prompt embedding, "LoRAs" whose files are merged checkpoints), and
    letting an embedding's hash make such a model the image's checkpoint would link every LoRA of the image to it.
    Gallery rows resolve to their own version whatever its type. A hash shared by several fitting versions resolves
    to the oldest, as Civitai does. File names are weak evidence: they resolve only when one version matches or the
    image's own gallery version is among the matches. `table` holds the references (image_resources' columns).
    """
    roles = [(role, list(types)) for role, types in types_by_role.items()]
    role_values = ", ".join(f"(:role{i}, CAST(:types{i} AS text[]))" for i in range(len(roles))) or \
        "(NULL::text, NULL::text[])"
    params: dict = {f"role{i}": role for i, (role, _) in enumerate(roles)}
    params.update({f"types{i}": types for i, (_, types) in enumerate(roles)})
    params["empty"] = EMPTY_FILE_HASH_PREFIX
    role_types = f"role_types(role, types) AS (VALUES {role_values})"
    counts = ResolveCounts()
    counts.by_version_id = conn.execute(text(
        f"""
        WITH {role_types}
        UPDATE {table} r
        SET resolved_version_id = r.ref_version_id,
            resolved_by = CASE WHEN 'gallery' = ANY(r.sources) THEN 'gallery' ELSE 'version_id' END
        FROM model_versions v JOIN models m ON m.id = v.model_id
        WHERE r.resolved_version_id IS NULL AND r.ref_version_id = v.id
          AND ('gallery' = ANY(r.sources)
               OR EXISTS (SELECT 1 FROM role_types rt WHERE rt.role = r.role AND m.type = ANY(rt.types)))
        """
    ), params).rowcount
    hash_union = " UNION ALL ".join(
        f"SELECT {column} AS hash, version_id FROM model_files WHERE {column} IS NOT NULL" for column in HASH_COLUMNS
    )
    counts.by_hash = _resolve_candidates(conn, table, "hash", f"""
        WITH {role_types},
        candidates AS (
            SELECT r.image_id, r.version_id AS gallery_version_id, r.position, min(h.version_id) AS version_id
            FROM {table} r
            JOIN role_types rt ON rt.role = r.role
            JOIN ({hash_union}) h ON h.hash = upper(r.hash) AND NOT starts_with(h.hash, :empty)
            JOIN model_versions v ON v.id = h.version_id
            JOIN models m ON m.id = v.model_id AND m.type = ANY(rt.types)
            WHERE r.resolved_version_id IS NULL AND r.hash IS NOT NULL
            GROUP BY r.image_id, r.version_id, r.position
        )""", params)
    counts.by_file_name = _resolve_candidates(conn, table, "file_name", f"""
        WITH {role_types},
        candidates AS (
            SELECT r.image_id, r.version_id AS gallery_version_id, r.position,
                   CASE WHEN count(DISTINCT f.version_id) = 1 THEN min(f.version_id)
                        ELSE max(f.version_id) FILTER (WHERE f.version_id = r.version_id) END AS version_id
            FROM {table} r
            JOIN role_types rt ON rt.role = r.role
            JOIN model_files f
              ON f.name_stem = lower(regexp_replace(r.name, '\\.(safetensors|ckpt|pt|pth|bin)$', '', 'i'))
            JOIN model_versions v ON v.id = f.version_id
            JOIN models m ON m.id = v.model_id AND m.type = ANY(rt.types)
            WHERE r.resolved_version_id IS NULL AND r.name IS NOT NULL
            GROUP BY r.image_id, r.version_id, r.position
        )""", params)
    counts.unresolved = conn.execute(
        text(f"SELECT count(*) FROM {table} WHERE resolved_version_id IS NULL")
    ).scalar_one()
    return counts


def _resolve_candidates(conn: Connection, table: str, resolved_by: str, candidates_sql: str, params: dict) -> int:
    """Resolve each reference in `candidates` (image_id, gallery_version_id, position -> version_id, NULL for an
    ambiguous one) and say how."""
    return conn.execute(text(
        f"""{candidates_sql}
        UPDATE {table} r SET resolved_version_id = c.version_id, resolved_by = :resolved_by
        FROM candidates c
        WHERE c.version_id IS NOT NULL AND r.image_id = c.image_id AND r.version_id = c.gallery_version_id
          AND r.position = c.position
        """
    ), {**params, "resolved_by": resolved_by}).rowcount


_LOOSE_REFERENCES = "pg_temp.loose_references"
_REFERENCE_COLUMNS = ("role", "sources", "name", "hash", "ref_version_id", "weight")


def resolve_references(conn: Connection, references: Sequence[Mapping[str, object]],
                       types_by_role: Mapping[str, Collection[str]]) -> list[tuple[int | None, str | None]]:
    """(resolved version id, how) for each reference one image makes outside the catalogue (an uploaded PNG's
    parameters), by the very rules the catalogue's references are resolved by: they are staged as the rows of one
    image posted to no gallery, in a temporary table, and resolved there. Each reference is a mapping of
    image_resources' columns (role, sources, name, hash, ref_version_id, weight)."""
    if not references:
        return []
    conn.execute(text(f"CREATE TEMP TABLE IF NOT EXISTS {_LOOSE_REFERENCES.split('.')[1]} "
                      "(LIKE image_resources INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"))
    conn.execute(text(f"TRUNCATE {_LOOSE_REFERENCES}"))
    rows = [{"position": position, **{column: ref.get(column) for column in _REFERENCE_COLUMNS}}
            for position, ref in enumerate(references, start=1)]
    conn.execute(text(f"INSERT INTO {_LOOSE_REFERENCES} (image_id, version_id, position, role, sources, name, hash, "
                      "ref_version_id, weight) VALUES (0, 0, :position, :role, :sources, :name, :hash, "
                      ":ref_version_id, :weight)"), rows)
    _resolve(conn, types_by_role, _LOOSE_REFERENCES)
    found = {int(position): (version, how) for position, version, how in conn.execute(text(
        f"SELECT position, resolved_version_id, resolved_by FROM {_LOOSE_REFERENCES}"))}
    return [found.get(position, (None, None)) for position in range(1, len(references) + 1)]


@dataclass
class LinkCounts:
    links: int = 0
    inserted_or_updated: int = 0
    deleted: int = 0


def rebuild_links(engine: Engine, adapter_types: Collection[str], checkpoint_types: Collection[str],
                  force: bool = False) -> LinkCounts | None:
    """Recompute the links from resolved references; None (nothing done) when the resolution has not changed."""
    with engine.begin() as conn:
        resolved = stamp_of(conn, "image_resources") or ""
        if not force and stamp_of(conn, "adapter_checkpoint_links") == resolved:
            return None
        conn.execute(text("SET LOCAL work_mem = '256MB'"))
        counts = _rebuild_links(conn, adapter_types, checkpoint_types)
        set_stamp(conn, "adapter_checkpoint_links", resolved)
        return counts


def _rebuild_links(conn: Connection, adapter_types: Collection[str], checkpoint_types: Collection[str]) -> LinkCounts:
    """Recompute adapter_checkpoint_links from resolved references; rows that did not change are not touched.

    An image counts once per (adapter version, checkpoint version), however many galleries list it; its weight
    is the adapter strength it gives.
    Family compatibility compares the two versions' base-model families.
    """
    conn.execute(text(
        """
        CREATE TEMP TABLE new_links ON COMMIT DROP AS
        WITH resolved AS (
            SELECT r.image_id, r.resolved_version_id AS version_id, m.type, r.weight
            FROM image_resources r
            JOIN model_versions v ON v.id = r.resolved_version_id
            JOIN models m ON m.id = v.model_id
        ),
        image_nsfw AS (SELECT id, bool_or(nsfw) AS nsfw FROM images GROUP BY id),
        checkpoints AS (SELECT DISTINCT image_id, version_id FROM resolved WHERE type = ANY(:checkpoint_types)),
        adapters AS (
            SELECT image_id, version_id, max(weight) AS weight FROM resolved
            WHERE type = ANY(:adapter_types) GROUP BY image_id, version_id
        )
        SELECT a.version_id AS adapter_version_id, c.version_id AS checkpoint_version_id,
               count(*)::int AS image_count, (count(*) FILTER (WHERE NOT i.nsfw))::int AS sfw_image_count,
               avg(a.weight) AS avg_weight, count(a.weight)::int AS weighted_image_count,
               av.base_model_family AS adapter_family, cv.base_model_family AS checkpoint_family,
               av.base_model_family = cv.base_model_family AS family_compatible
        FROM adapters a
        JOIN checkpoints c ON c.image_id = a.image_id
        JOIN image_nsfw i ON i.id = a.image_id
        JOIN model_versions av ON av.id = a.version_id
        JOIN model_versions cv ON cv.id = c.version_id
        GROUP BY a.version_id, c.version_id, av.base_model_family, cv.base_model_family
        """
    ), {"adapter_types": list(adapter_types), "checkpoint_types": list(checkpoint_types)})
    counts = LinkCounts()
    counts.deleted = conn.execute(text(
        """
        DELETE FROM adapter_checkpoint_links l WHERE NOT EXISTS (
            SELECT 1 FROM new_links n
            WHERE n.adapter_version_id = l.adapter_version_id AND n.checkpoint_version_id = l.checkpoint_version_id)
        """
    )).rowcount
    counts.inserted_or_updated = conn.execute(text(
        """
        INSERT INTO adapter_checkpoint_links AS l SELECT * FROM new_links
        ON CONFLICT (adapter_version_id, checkpoint_version_id) DO UPDATE SET
            image_count = EXCLUDED.image_count, sfw_image_count = EXCLUDED.sfw_image_count,
            avg_weight = EXCLUDED.avg_weight, weighted_image_count = EXCLUDED.weighted_image_count,
            adapter_family = EXCLUDED.adapter_family, checkpoint_family = EXCLUDED.checkpoint_family,
            family_compatible = EXCLUDED.family_compatible
        WHERE (l.image_count, l.sfw_image_count, l.avg_weight, l.weighted_image_count, l.adapter_family,
               l.checkpoint_family, l.family_compatible) IS DISTINCT FROM
              (EXCLUDED.image_count, EXCLUDED.sfw_image_count, EXCLUDED.avg_weight, EXCLUDED.weighted_image_count,
               EXCLUDED.adapter_family, EXCLUDED.checkpoint_family, EXCLUDED.family_compatible)
        """
    )).rowcount
    counts.links = conn.execute(text("SELECT count(*) FROM adapter_checkpoint_links")).scalar_one()
    return counts
