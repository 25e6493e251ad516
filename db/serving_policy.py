"""The catalogue evidence behind what serving shows and how (roles, content levels), and where the decisions live:
`version_roles` (one row per served version) and `models.content_level` / `content_level_reason`."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, text

from db.copy import stage_rows

# SFW images that used a LoRA-family version outside its own model's gallery: their distinct prompts, and how many
# galleries (models) they were posted to.
_LORA_USAGE = """
    SELECT r.resolved_version_id AS version_id, array_agg(DISTINCT i.prompt) AS prompts,
           count(DISTINCT g.model_id) AS galleries
    FROM image_resources r
    JOIN images i ON i.id = r.image_id AND i.version_id = r.version_id
    JOIN model_versions g ON g.id = i.version_id
    JOIN model_versions v ON v.id = r.resolved_version_id
    WHERE r.role = 'lora' AND NOT i.nsfw AND i.prompt IS NOT NULL AND g.model_id <> v.model_id
    GROUP BY r.resolved_version_id"""
# Images that used an embedding: whether the name they call it by stands in their negative or their positive prompt.
_EMBEDDING_USAGE = """
    SELECT r.resolved_version_id AS version_id,
           count(DISTINCT i.id) FILTER (WHERE strpos(lower(coalesce(i.negative_prompt, '')), lower(r.name)) > 0)
               AS in_negative,
           count(DISTINCT i.id) FILTER (WHERE strpos(lower(coalesce(i.prompt, '')), lower(r.name)) > 0)
               AS in_positive
    FROM image_resources r JOIN images i ON i.id = r.image_id AND i.version_id = r.version_id
    WHERE r.role = 'embedding' AND r.resolved_version_id IS NOT NULL AND length(r.name) >= 3
    GROUP BY r.resolved_version_id"""


def role_cards(conn: Connection, describer_params: Mapping[str, str], preferred_sql: str) -> list[dict]:
    """Served versions with their type, name, tags and described kind (through the preferred-description rule)."""
    return [dict(row) for row in conn.execute(text(f"""
        SELECT s.version_id, s.model_type, s.model_name, s.tags, d.kind
        FROM served_model_versions s LEFT JOIN ({preferred_sql}) d ON d.version_id = s.version_id"""),
        dict(describer_params)).mappings()]


def lora_usage(conn: Connection) -> list[dict]:
    return [dict(row) for row in conn.execute(text(_LORA_USAGE)).mappings()]


def embedding_usage(conn: Connection) -> list[dict]:
    return [dict(row) for row in conn.execute(text(_EMBEDDING_USAGE)).mappings()]


def store_roles(conn: Connection, roles: Mapping[int, tuple[str, str]]) -> int:
    """Replace every version's role; returns how many rows changed."""
    stage_rows(conn, "stage_version_roles", "version_roles", ("version_id", "role", "reason"),
               ((version, role, reason) for version, (role, reason) in roles.items()))
    changed = conn.execute(text("""
        INSERT INTO version_roles (version_id, role, reason) SELECT version_id, role, reason FROM stage_version_roles
        ON CONFLICT (version_id) DO UPDATE SET role = EXCLUDED.role, reason = EXCLUDED.reason, decided_at = now()
        WHERE (version_roles.role, version_roles.reason) IS DISTINCT FROM (EXCLUDED.role, EXCLUDED.reason)""")).rowcount
    changed += conn.execute(text("DELETE FROM version_roles r WHERE NOT EXISTS "
                                 "(SELECT 1 FROM stage_version_roles s WHERE s.version_id = r.version_id)")).rowcount
    return changed


def level_evidence(conn: Connection) -> list[dict]:
    """Every SFW-or-not model's flags, tags and its example images' levels (all images: levels are evidence)."""
    return [dict(row) for row in conn.execute(text("""
        SELECT m.id, m.nsfw, m.nsfw_level, m.tags,
               coalesce((SELECT array_agg(i.nsfw_level) FROM images i WHERE i.model_id = m.id
                         AND i.nsfw_level IS NOT NULL), '{}') AS image_levels
        FROM models m""")).mappings()]


def store_levels(conn: Connection, levels: Mapping[int, tuple[int, str]]) -> int:
    """Set each model's content level and reason; returns how many models changed."""
    if not levels:
        return 0
    return conn.execute(text("""
        UPDATE models m SET content_level = t.level, content_level_reason = t.reason
        FROM unnest(CAST(:ids AS bigint[]), CAST(:levels AS int[]), CAST(:reasons AS text[])) AS t(id, level, reason)
        WHERE m.id = t.id AND (m.content_level, m.content_level_reason) IS DISTINCT FROM (t.level, t.reason)"""),
        {"ids": list(levels), "levels": [level for level, _ in levels.values()],
         "reasons": [reason for _, reason in levels.values()]}).rowcount
