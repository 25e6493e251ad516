"""Describe, embed and index: partitioned by shard of served versions, so shards run in parallel processes."""

import time

from dagster import AssetExecutionContext, AutomationCondition, MaterializeResult, StaticPartitionsDefinition, asset
from sqlalchemy import text

from config import Settings
from db.lexicon import rebuild_lexicon
from db.vectors import delete_unserved, ensure_hnsw_indexes, sync_families
from embedding.refresh import describe_pending, embed_pending, space_name
from orchestration.assets import adapter_checkpoint_links
from orchestration.models import ModelsResource
from orchestration.resources import DatabaseResource

SHARDS = Settings.from_env().shards
shards = StaticPartitionsDefinition([str(shard) for shard in range(SHARDS)])
GROUP = "retrieval"
# After each catalogue refresh the automation daemon (`dagster dev` runs it) materialises every shard, then the index.
FOLLOW_UPSTREAM = AutomationCondition.eager()


@asset(group_name=GROUP, automation_condition=FOLLOW_UPSTREAM, deps=[adapter_checkpoint_links], partitions_def=shards,
       description="What each served version does, its kind, trigger words and recommended weight (the refiner).")
def adapter_descriptions(context: AssetExecutionContext, database: DatabaseResource,
                         models: ModelsResource) -> MaterializeResult:
    describer = models.describer_model()
    counts = describe_pending(database.engine(), describer, int(context.partition_key), SHARDS)
    return MaterializeResult(metadata={"describer": describer.name, "prompt_version": describer.prompt_version,
                                       **vars(counts)})


@asset(group_name=GROUP, automation_condition=FOLLOW_UPSTREAM, deps=[adapter_descriptions], partitions_def=shards,
       description="[text || image] vectors of served versions in the preset's embedding space.")
def zoo_embeddings(context: AssetExecutionContext, database: DatabaseResource,
                   models: ModelsResource) -> MaterializeResult:
    text_encoder, image_encoder = models.encoders()
    fetcher = models.image_fetcher() if image_encoder else None
    counts = embed_pending(
        database.engine(), models.describer_model(), text_encoder, image_encoder,
        fetch_images=(lambda urls: [r.image for r in fetcher.fetch_many(urls)]) if fetcher else None,
        shard=int(context.partition_key), shards=SHARDS)
    return MaterializeResult(metadata={"space": space_name(text_encoder, image_encoder), **vars(counts)})


@asset(group_name=GROUP, automation_condition=FOLLOW_UPSTREAM, deps=[zoo_embeddings],
       description="Per-space partial HNSW indexes and word statistics (BM25); vectors and descriptions of "
                   "no-longer-served versions removed.")
def retrieval_index(context: AssetExecutionContext, database: DatabaseResource,
                    models: ModelsResource) -> MaterializeResult:
    started = time.perf_counter()
    engine = database.engine()
    text_encoder, image_encoder = models.encoders()
    space = space_name(text_encoder, image_encoder)
    with engine.begin() as conn:
        removed_vectors = delete_unserved(conn, "embeddings")
        removed_descriptions = delete_unserved(conn, "descriptions")
        moved_family = sync_families(conn)
    dimension = text_encoder.text_dim + (image_encoder.image_dim if image_encoder else 0)
    created = ensure_hnsw_indexes(engine, space, dimension)
    with engine.begin() as conn:
        words = rebuild_lexicon(conn, space)
        vectors = conn.execute(text("SELECT count(*) FROM embeddings WHERE space = :s"), {"s": space}).scalar_one()
    return MaterializeResult(metadata={
        "space": space, "dimension": dimension, "vectors": vectors, "indexes_created": created, "lexicon_words": words,
        "removed_vectors": removed_vectors, "removed_descriptions": removed_descriptions,
        "vectors_moved_family": moved_family,
        "seconds": round(time.perf_counter() - started, 3)})


RETRIEVAL_ASSETS = [adapter_descriptions, zoo_embeddings, retrieval_index]
