"""The questions a summary answers: what is in the zoo, what is served, how it links. Used by the CLI and tests."""

from __future__ import annotations

from collections.abc import Sequence

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


def headline_counts(conn: Connection, adapter_types: Sequence[str], checkpoint_types: Sequence[str]) -> dict[str, int]:
    """The numbers a refresh is watched by (the zoo_stats asset's metadata, which Dagster plots over time): the
    catalogue's size, what is served and covered, what the last refresh run changed and what history costs.
    Coverage (described, embedded) is as the describe/embed job last left it: it runs after the catalogue job."""
    counts = dict(conn.execute(text(
        """
        SELECT (SELECT count(*) FROM models) AS models,
               (SELECT count(*) FROM models WHERE type = ANY(:checkpoints)) AS checkpoint_models,
               (SELECT count(*) FROM models WHERE type = ANY(:adapters)) AS adapter_models,
               (SELECT count(*) FROM models WHERE nsfw) AS nsfw_models,
               (SELECT count(*) FROM models WHERE deleted_at IS NOT NULL) AS deleted_models,
               (SELECT count(*) FROM model_versions) AS versions,
               (SELECT count(*) FROM served_model_versions) AS served_versions,
               (SELECT count(*) FROM model_files) AS files,
               (SELECT count(*) FROM images) AS images,
               (SELECT count(*) FROM adapter_checkpoint_links) AS links,
               (SELECT count(DISTINCT version_id) FROM descriptions) AS described_versions,
               (SELECT count(DISTINCT version_id) FROM embeddings) AS embedded_versions,
               (SELECT count(*) FROM quarantine) AS quarantined,
               pg_total_relation_size('model_changes') + pg_total_relation_size('models_raw_history') AS history_bytes
        """
    ), {"adapters": list(adapter_types), "checkpoints": list(checkpoint_types)}).one()._mapping)
    last_run = dict(conn.execute(text(
        "SELECT change, count(*) FROM model_changes WHERE run_id = (SELECT max(id) FROM crawl_runs) GROUP BY change"
    )).all())
    return {**counts, **{f"last_run_{change}": last_run.get(change, 0)
                         for change in ("added", "changed", "deleted", "restored")}}
