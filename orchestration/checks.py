"""Asset checks: the catalogue's invariants, re-derived from the stored data rather than trusted."""


from dagster import AssetCheckResult, AssetCheckSeverity, asset_check
from sqlalchemy import text

from crawlers.nsfw import NSFW_BITS
from crawlers.taxonomy import ADAPTER_TYPES, CHECKPOINT_TYPES
from db.search_index_store import load_array
from embedding.refresh import space_dimension, space_name
from orchestration.assets import adapter_checkpoint_links, zoo_catalogue
from orchestration.embedding_assets import retrieval_index
from orchestration.models import ModelsResource
from orchestration.resources import DatabaseResource


@asset_check(asset=zoo_catalogue, blocking=True,
             description="No served version belongs to a model flagged NSFW in any way; blocks the steps after it.")
def nothing_nsfw_served(database: DatabaseResource) -> AssetCheckResult:
    with database.engine().connect() as conn:
        offenders = conn.execute(text(
            """
            SELECT DISTINCT s.model_id FROM served_model_versions s JOIN models m ON m.id = s.model_id
            WHERE m.nsfw OR m.nsfw_flag OR coalesce(m.nsfw_level, 0) & :bits <> 0 LIMIT 20
            """
        ), {"bits": NSFW_BITS}).scalars().all()
    return AssetCheckResult(passed=not offenders, metadata={"nsfw_models_served": offenders})


@asset_check(asset=zoo_catalogue, description="Every SFW, listed model has at least one servable version.")
def no_served_model_without_a_version(database: DatabaseResource) -> AssetCheckResult:
    with database.engine().connect() as conn:
        orphans = conn.execute(text(
            """
            SELECT m.id FROM models m
            WHERE NOT m.nsfw AND m.deleted_at IS NULL AND coalesce(m.mode, '') NOT IN ('Archived', 'TakenDown')
              AND NOT EXISTS (SELECT 1 FROM served_model_versions s WHERE s.model_id = m.id)
            ORDER BY m.id LIMIT 20
            """
        )).scalars().all()
    # Civitai drops versions without a primary file, so this is a data warning, not a broken invariant.
    return AssetCheckResult(passed=not orphans, severity=AssetCheckSeverity.WARN,
                            metadata={"models_without_served_version": orphans})


@asset_check(asset=adapter_checkpoint_links,
             description="Every link joins an existing adapter version to an existing checkpoint version.")
def links_point_at_existing_versions(database: DatabaseResource) -> AssetCheckResult:
    with database.engine().connect() as conn:
        bad = conn.execute(text(
            """
            SELECT count(*) FROM adapter_checkpoint_links l
            LEFT JOIN model_versions av ON av.id = l.adapter_version_id LEFT JOIN models am ON am.id = av.model_id
            LEFT JOIN model_versions cv ON cv.id = l.checkpoint_version_id LEFT JOIN models cm ON cm.id = cv.model_id
            WHERE am.id IS NULL OR cm.id IS NULL OR NOT (am.type = ANY(:adapters)) OR NOT (cm.type = ANY(:checkpoints))
            """
        ), {"adapters": list(ADAPTER_TYPES), "checkpoints": list(CHECKPOINT_TYPES)}).scalar_one()
    return AssetCheckResult(passed=bad == 0, metadata={"bad_links": bad})


CATALOGUE_CHECKS = [nothing_nsfw_served, no_served_model_without_a_version, links_point_at_existing_versions]


@asset_check(asset=retrieval_index, description="Every served version has a vector of the space's dimension.")
def every_served_version_has_a_vector(database: DatabaseResource, models: ModelsResource) -> AssetCheckResult:
    text_encoder, image_encoder = models.encoders()
    space, dimension = space_name(text_encoder, image_encoder), space_dimension(text_encoder, image_encoder)
    with database.engine().connect() as conn:
        missing = conn.execute(text(
            """
            SELECT s.version_id FROM served_model_versions s
            LEFT JOIN embeddings e ON e.version_id = s.version_id AND e.space = :space
            WHERE e.version_id IS NULL OR vector_dims(e.emb) <> :dimension ORDER BY s.version_id LIMIT 20
            """
        ), {"space": space, "dimension": dimension}).scalars().all()
    return AssetCheckResult(passed=not missing, metadata={"space": space, "versions_without_vector": missing})


@asset_check(asset=retrieval_index, blocking=True, description="No NSFW or deleted model has a vector serving can find.")
def no_nsfw_model_has_a_vector(database: DatabaseResource) -> AssetCheckResult:
    with database.engine().connect() as conn:
        offenders = conn.execute(text(
            """
            SELECT DISTINCT m.id FROM embeddings e JOIN model_versions v ON v.id = e.version_id
            JOIN models m ON m.id = v.model_id
            WHERE m.nsfw OR m.nsfw_flag OR coalesce(m.nsfw_level, 0) & :bits <> 0 OR m.deleted_at IS NOT NULL LIMIT 20
            """
        ), {"bits": NSFW_BITS}).scalars().all()
    return AssetCheckResult(passed=not offenders, metadata={"models": offenders})


@asset_check(asset=retrieval_index, blocking=True,
             description="The search index serving loads holds no model beyond the serving limits: none NSFW or "
                         "deleted, none above the content level, no real-person likeness unless allowed.")
def nothing_beyond_the_serving_limits_indexed(database: DatabaseResource, models: ModelsResource) -> AssetCheckResult:
    text_encoder, image_encoder = models.encoders()
    engine, limits = database.engine(), database.serving_limits()
    versions = load_array(engine, space_name(text_encoder, image_encoder), "version_id")
    with engine.connect() as conn:
        offenders = conn.execute(text(
            """
            SELECT v.id, m.name, m.nsfw, m.deleted_at IS NOT NULL AS deleted, m.content_level, m.poi
            FROM model_versions v JOIN models m ON m.id = v.model_id
            WHERE v.id = ANY(:versions) AND (m.nsfw OR m.deleted_at IS NOT NULL OR coalesce(m.nsfw_level, 0) & :bits <> 0
                  OR coalesce(m.content_level, 1) > :level OR (coalesce(m.poi, false) AND NOT :likeness))
            ORDER BY v.id LIMIT 20
            """
        ), {"versions": [] if versions is None else versions.tolist(), "bits": NSFW_BITS,
            "level": limits.max_content_level, "likeness": limits.likeness}).mappings().all()
    return AssetCheckResult(passed=not offenders, metadata={
        "indexed_versions": 0 if versions is None else len(versions), "max_content_level": limits.max_content_level,
        "likeness_served": limits.likeness, "offenders": [dict(row) for row in offenders]})


RETRIEVAL_CHECKS = [every_served_version_has_a_vector, no_nsfw_model_has_a_vector,
                    nothing_beyond_the_serving_limits_indexed]
