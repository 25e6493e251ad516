"""The questions a summary answers: what is in the zoo, what is served, how it links. Used by the CLI and tests."""

from __future__ import annotations

from sqlalchemy import Connection, text


def catalogue_summary(conn: Connection) -> list[dict]:
    """One row per model type: models, NSFW and deleted models, versions, served versions, images, links."""
    return [dict(row._mapping) for row in conn.execute(text(
        """
        SELECT m.type,
               count(DISTINCT m.id) AS models,
               count(DISTINCT m.id) FILTER (WHERE m.nsfw) AS nsfw_models,
               count(DISTINCT m.id) FILTER (WHERE m.deleted_at IS NOT NULL) AS deleted_models,
               count(v.id) AS versions,
               count(s.version_id) AS served_versions,
               coalesce(sum((SELECT count(*) FROM images i WHERE i.version_id = v.id)), 0)::bigint AS images,
               coalesce(sum((SELECT count(*) FROM adapter_checkpoint_links l
                             WHERE l.adapter_version_id = v.id OR l.checkpoint_version_id = v.id)), 0)::bigint AS links
        FROM models m
        LEFT JOIN model_versions v ON v.model_id = m.id
        LEFT JOIN served_model_versions s ON s.version_id = v.id
        GROUP BY m.type ORDER BY count(DISTINCT m.id) DESC, m.type
        """
    ))]


def table_counts(conn: Connection) -> dict[str, int]:
    tables = ("models_raw", "models", "model_versions", "model_files", "images", "image_resources",
              "adapter_checkpoint_links", "quarantine", "crawl_runs")
    return {table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() for table in tables}


def top_links(conn: Connection, limit: int = 5) -> list[dict]:
    """The most co-used SFW adapter/checkpoint pairs."""
    return [dict(row._mapping) for row in conn.execute(text(
        "SELECT adapter_name, checkpoint_name, image_count, round(avg_weight::numeric, 2) AS avg_weight "
        "FROM top_adapter_checkpoint_pairs WHERE NOT adapter_nsfw AND NOT checkpoint_nsfw LIMIT :limit"
    ), {"limit": limit})]
