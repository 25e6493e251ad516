"""The catalogue assets: crawl (or dump) -> catalogue -> image resources -> adapter/checkpoint links."""


import logging
import time

from dagster import AssetExecutionContext, Config, MaterializeResult, asset

from crawlers.catalog import normalise_pending
from crawlers.crawl import crawl_listing
from crawlers.dump import ingest_dump
from crawlers.taxonomy import ADAPTER_TYPES, CHECKPOINT_TYPES, SERVED_TYPES, types_by_role
from db.links import rebuild_links, resolve_image_resources
from db.summary import table_counts
from orchestration.resources import CivitaiResource, DatabaseResource

progress = logging.getLogger("zoo.progress")
GROUP = "catalogue"


class CrawlConfig(Config):
    """What to fetch: a dump file, or a filtered slice of the live API (all served types by default)."""

    dump_path: str | None = None
    types: list[str] = list(SERVED_TYPES)
    base_models: list[str] = []
    max_pages: int | None = None
    sort: str = "Newest"


class CatalogConfig(Config):
    workers: int = 2


@asset(group_name=GROUP, description="Every Civitai /models item as received (models_raw), crawled or from a dump.")
def civitai_models_raw(context: AssetExecutionContext, config: CrawlConfig, database: DatabaseResource,
                       civitai: CivitaiResource) -> MaterializeResult:
    started = time.perf_counter()
    engine = database.engine()
    if config.dump_path:
        report = ingest_dump(engine, config.dump_path,
                             on_batch=lambda n: progress.info("dump: %d items read", n))
        source = f"dump {config.dump_path}"
    else:
        client = civitai.client()
        try:
            report = crawl_listing(
                engine, client, types=config.types, base_models=config.base_models, sort=config.sort,
                max_pages=config.max_pages,
                on_page=lambda pages, seen: progress.info("crawl: page %d, %d models seen", pages, seen))
        finally:
            client.close()
        source = client.base_url
    seconds = time.perf_counter() - started
    context.log.info(f"{source}: {report.as_dict()}")
    return MaterializeResult(metadata={
        "source": source, **report.as_dict(), "seconds": round(seconds, 3),
        "models_per_second": round(report.items_received / seconds, 1) if seconds else 0.0,
    })


@asset(group_name=GROUP, deps=[civitai_models_raw],
       description="Normalised models, versions, files (all hashes), images and image references; NSFW decided.")
def zoo_catalog(context: AssetExecutionContext, config: CatalogConfig, database: DatabaseResource) -> MaterializeResult:
    started = time.perf_counter()
    engine = database.engine()
    counts = normalise_pending(engine, workers=config.workers,
                               progress=lambda done, total: progress.info("catalogue: %d/%d models", done, total))
    with engine.connect() as conn:
        totals = table_counts(conn)
    return MaterializeResult(metadata={
        **counts.as_dict(), "seconds": round(time.perf_counter() - started, 3),
        **{f"rows_{table}": n for table, n in totals.items()},
    })


@asset(group_name=GROUP, deps=[zoo_catalog],
       description="What each example image names, resolved to model versions (version id, any hash, file name).")
def image_resources(context: AssetExecutionContext, database: DatabaseResource) -> MaterializeResult:
    started = time.perf_counter()
    counts = resolve_image_resources(database.engine(), types_by_role())
    metadata = {"skipped": counts is None, "seconds": round(time.perf_counter() - started, 3)}
    if counts is not None:
        metadata.update(vars(counts))
    progress.info("image resources: %s", "unchanged" if counts is None else vars(counts))
    return MaterializeResult(metadata=metadata)


@asset(group_name=GROUP, deps=[image_resources],
       description="Adapter -> checkpoint co-usage (images, SFW images, average weight) and family compatibility.")
def adapter_checkpoint_links(context: AssetExecutionContext, database: DatabaseResource) -> MaterializeResult:
    started = time.perf_counter()
    counts = rebuild_links(database.engine(), ADAPTER_TYPES, CHECKPOINT_TYPES)
    metadata = {"skipped": counts is None, "seconds": round(time.perf_counter() - started, 3)}
    if counts is not None:
        metadata.update(vars(counts))
    progress.info("links: %s", "unchanged" if counts is None else vars(counts))
    return MaterializeResult(metadata=metadata)


CATALOGUE_ASSETS = [civitai_models_raw, zoo_catalog, image_resources, adapter_checkpoint_links]
