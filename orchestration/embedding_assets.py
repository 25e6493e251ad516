"""Describe, embed and index: describe and embed are partitioned by shard of served versions (version_id % shards),
so shards run in parallel processes; the index is built once over all of them."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    Config,
    MaterializeResult,
    StaticPartitionsDefinition,
    asset,
)
from sqlalchemy import Engine, text

from db import locks
from db.lexicon import rebuild_lexicon
from db.vectors import delete_unserved, ensure_hnsw_indexes, sync_families
from embedding.refresh import describe_pending, describer_key, embed_pending, space_dimension, space_name
from embedding.search_index import ServingLimits, build_search_index, store_search_index
from embedding.serving_policy import refresh_serving_policy
from orchestration.assets import adapter_checkpoint_links
from orchestration.metadata import AssetReport
from orchestration.models import ModelsResource
from orchestration.resources import DatabaseResource
from serving.search.training import MAX_QUERIES, train_ranker

EMBEDDING_GROUP = "embedding"
RETRIEVAL_GROUP = "retrieval"
# After each catalogue refresh the automation daemon (`dagster dev` runs it) materialises every shard, then the index.
FOLLOW_UPSTREAM = AutomationCondition.eager()


def sharded_assets(shards: int) -> list[AssetsDefinition]:
    """adapter_descriptions and zoo_embeddings, one partition per shard of the served versions."""
    sharded_asset = partial(asset, group_name=EMBEDDING_GROUP, automation_condition=FOLLOW_UPSTREAM,
                            partitions_def=StaticPartitionsDefinition([str(shard) for shard in range(shards)]))

    @sharded_asset(kinds={"python", "postgres"}, deps=[adapter_checkpoint_links],
                   description="What each served version does, its kind, trigger words and recommended weight "
                               "(the refiner).")
    def adapter_descriptions(context: AssetExecutionContext, database: DatabaseResource,
                             models: ModelsResource) -> MaterializeResult:
        report = AssetReport()
        describer = models.load_describer()
        with shard_locks(database, "adapter_descriptions", int(context.partition_key), shards) as engine:
            report.add(describe_pending(engine, describer, int(context.partition_key), shards),
                       describer=describer.name, prompt_version=describer.prompt_version)
        return report.result()

    @sharded_asset(kinds={"pytorch", "postgres"}, deps=[adapter_descriptions],
                   description="[text || image] vectors of served versions in the preset's embedding space.")
    def zoo_embeddings(context: AssetExecutionContext, database: DatabaseResource,
                       models: ModelsResource) -> MaterializeResult:
        report = AssetReport()
        text_encoder, image_encoder = models.encoders()
        fetcher = models.image_fetcher() if image_encoder else None
        with shard_locks(database, "zoo_embeddings", int(context.partition_key), shards) as engine:
            report.add(embed_pending(
                engine, models.load_describer(), text_encoder, image_encoder,
                fetch_images=(lambda urls: [r.image for r in fetcher.fetch_many(urls)]) if fetcher else None,
                shard=int(context.partition_key), shards=shards), space=space_name(text_encoder, image_encoder))
        return report.result()

    return [adapter_descriptions, zoo_embeddings]


@contextmanager
def shard_locks(database: DatabaseResource, step: str, shard: int, shards: int) -> Iterator[Engine]:
    """The index lock shared (the shards of a run work side by side; the index step waits for all of them) and
    the shard's own lock (two runs never describe or embed the same versions at once)."""
    holder = f"zoo {step}[{shard}]"
    with database.lock(locks.INDEX, shared=True, holder=holder), \
            database.lock(locks.shard_lock(shard, shards), holder=holder) as engine:
        yield engine


@asset(group_name=RETRIEVAL_GROUP, kinds={"postgres"}, automation_condition=FOLLOW_UPSTREAM,
       deps=["zoo_embeddings"],  # every shard of it
       description="Each model's content level and each served version's role (content, enhancer, negative), then "
                   "the in-memory search index of the served versions within the serving limits (a new "
                   "generation serving processes load), "
                   "per-space partial HNSW indexes and word statistics for SQL users; vectors and descriptions of "
                   "no-longer-served versions removed.")
def retrieval_index(context: AssetExecutionContext, database: DatabaseResource,
                    models: ModelsResource) -> MaterializeResult:
    with database.lock(locks.INDEX, holder="zoo retrieval_index") as engine:
        return _build_index(engine, models, database.serving_limits())


def _build_index(engine: Engine, models: ModelsResource, limits: ServingLimits) -> MaterializeResult:
    report = AssetReport()
    text_encoder, image_encoder = models.encoders()
    space, dimension = space_name(text_encoder, image_encoder), space_dimension(text_encoder, image_encoder)
    with engine.begin() as conn:
        report.add(removed_vectors=delete_unserved(conn, "embeddings"),
                   removed_descriptions=delete_unserved(conn, "descriptions"), vectors_moved_family=sync_families(conn))
    report.add(space=space, dimension=dimension, indexes_created=ensure_hnsw_indexes(engine, space, dimension))
    with engine.begin() as conn:
        report.add(lexicon_words=rebuild_lexicon(conn, space), vectors=conn.execute(
            text("SELECT count(*) FROM embeddings WHERE space = :s"), {"s": space}).scalar_one())
    describer = describer_key(models.load_describer())
    with engine.begin() as conn:
        report.add(refresh_serving_policy(conn, describer))
    with engine.begin() as conn:  # the generation, its parts and its notification commit together
        index = build_search_index(conn, space, dimension, describer, limits)
        report.add(search_index_generation=store_search_index(conn, index), search_index_versions=len(index))
    return report.result()


class RankerConfig(Config):
    """`hold_out`: example images that must never reach the training data (the quality benchmark's test half)."""

    hold_out: list[int] = []
    max_queries: int = MAX_QUERIES


@asset(group_name=RETRIEVAL_GROUP, kinds={"lightgbm", "postgres"}, automation_condition=FOLLOW_UPSTREAM,
       deps=[retrieval_index],
       description="A ranker per search level learned from usage (LightGBM lambdarank): the SFW example images' "
                   "prompts are the queries, the models they used the answers; validated on held-out creators "
                   "against the hand weights, stored per level only where it beats them; serving processes reload.")
def retrieval_ranker(context: AssetExecutionContext, config: RankerConfig, database: DatabaseResource,
                     models: ModelsResource) -> MaterializeResult:
    text_encoder, image_encoder = models.encoders()
    space = space_name(text_encoder, image_encoder)
    with database.lock(locks.INDEX, holder="zoo retrieval_ranker") as engine:
        ranker = train_ranker(engine, text_encoder, space, config.hold_out, config.max_queries)
    report = AssetReport()
    report.add(space=space, ranker_id=ranker.id if ranker else 0, levels_learned=len(ranker.boosters) if ranker else 0)
    metrics = ranker.metrics if ranker else {}
    for level in ("checkpoint", "adapter"):
        found = metrics.get(level, {})
        for system in ("learned", "hand_weights"):
            for name, value in found.get(system, {}).items():
                report.add(**{f"{level}_{system}_{name}": value})
    return report.result()
