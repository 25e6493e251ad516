"""The catalogue assets: crawl (or dump) -> catalogue -> image resources -> adapter/checkpoint links."""


import logging

from dagster import AssetExecutionContext, Config, MaterializeResult, asset

from crawlers.catalogue import TooManyWithdrawals, normalise_pending
from crawlers.crawl import crawl_listing
from crawlers.dump import ingest_dump
from crawlers.taxonomy import ADAPTER_TYPES, CHECKPOINT_TYPES, SERVED_TYPES, types_by_role
from db import locks
from db.links import rebuild_links, resolve_image_resources
from db.summary import headline_counts, table_counts
from orchestration.metadata import AssetReport
from orchestration.resources import CivitaiResource, DatabaseResource, RunRefused

progress = logging.getLogger("zoo.progress")
CATALOGUE_GROUP = "catalogue"
KINDS = {"postgres"}


class CrawlConfig(Config):
    """What to fetch: a dump file, or a filtered slice of the live API (all served types by default)."""

    dump_path: str | None = None
    types: list[str] = list(SERVED_TYPES)
    base_models: list[str] = []
    max_pages: int | None = None
    sort: str = "Newest"


class CatalogueConfig(Config):
    workers: int = 2


@asset(group_name=CATALOGUE_GROUP, kinds=KINDS,
       description="Every Civitai /models item as received (models_raw), crawled or from a dump.")
def civitai_models_raw(context: AssetExecutionContext, config: CrawlConfig, database: DatabaseResource,
                       civitai: CivitaiResource) -> MaterializeResult:
    report = AssetReport()
    with database.lock(locks.RAW, holder="zoo civitai_models_raw") as engine:
        ingested, source = _ingest(engine, config, civitai)
    context.log.info(f"{source}: {ingested.as_dict()}")
    report.add(ingested, source=source)
    return report.result(models_per_second="items_received")


def _ingest(engine, config: CrawlConfig, civitai: CivitaiResource):
    """Store the dump's or the listing's items raw; returns the ingest report and where the items came from."""
    if config.dump_path:
        ingested = ingest_dump(engine, config.dump_path,
                               on_batch=lambda n: progress.info("dump: %d items read", n))
        source = f"dump {config.dump_path}"
    else:
        client = civitai.client()
        try:
            ingested = crawl_listing(
                engine, client, types=config.types, base_models=config.base_models, sort=config.sort,
                max_pages=config.max_pages,
                on_page=lambda pages, seen: progress.info("crawl: page %d, %d models seen", pages, seen))
        finally:
            client.close()
        source = client.base_url
    return ingested, source


@asset(group_name=CATALOGUE_GROUP, kinds=KINDS, deps=[civitai_models_raw],
       description="Normalised models, versions, files (all hashes), images and image references; NSFW decided.")
def zoo_catalogue(context: AssetExecutionContext, config: CatalogueConfig, database: DatabaseResource) -> MaterializeResult:
    report = AssetReport()
    with database.lock(locks.CATALOGUE, holder="zoo zoo_catalogue") as engine:
        try:
            report.add(normalise_pending(
                engine, workers=config.workers, limit=database.withdrawal_limit(),
                progress=lambda done, total: progress.info("catalogue: %d/%d models", done, total)))
        except TooManyWithdrawals as error:
            raise RunRefused(
                f"{error}. If Civitai really removed them, run this refresh again with ZOO_MAX_REMOVED_SHARE=1 (for "
                "this run only); if not, Civitai's answers may have changed shape: see the quarantine table and "
                "models_raw.") from None
        with engine.connect() as conn:
            report.add(**{f"rows_{table}": n for table, n in table_counts(conn).items()})
    return report.result()


@asset(group_name=CATALOGUE_GROUP, kinds=KINDS, deps=[zoo_catalogue],
       description="What each example image names, resolved to model versions (version id, any hash, file name).")
def image_resources(context: AssetExecutionContext, database: DatabaseResource) -> MaterializeResult:
    report = AssetReport()
    with database.lock(locks.CATALOGUE, holder="zoo image_resources") as engine:
        counts = resolve_image_resources(engine, types_by_role())
    report.add(counts, skipped=counts is None)
    progress.info("image resources: %s", "unchanged" if counts is None else vars(counts))
    return report.result()


@asset(group_name=CATALOGUE_GROUP, kinds=KINDS, deps=[image_resources],
       description="Adapter -> checkpoint co-usage (images, SFW images, average weight) and family compatibility.")
def adapter_checkpoint_links(context: AssetExecutionContext, database: DatabaseResource) -> MaterializeResult:
    report = AssetReport()
    with database.lock(locks.CATALOGUE, holder="zoo adapter_checkpoint_links") as engine:
        counts = rebuild_links(engine, ADAPTER_TYPES, CHECKPOINT_TYPES)
    report.add(counts, skipped=counts is None)
    progress.info("links: %s", "unchanged" if counts is None else vars(counts))
    return report.result()


@asset(group_name=CATALOGUE_GROUP, kinds=KINDS, deps=[adapter_checkpoint_links],
       description="The zoo's headline counts after the refresh (models, served versions, links, what the run "
                   "changed, history's bytes; described and embedded versions as of the last describe/embed run) as "
                   "numeric metadata, which the Dagster UI plots over time.")
def zoo_stats(context: AssetExecutionContext, database: DatabaseResource) -> MaterializeResult:
    report = AssetReport()
    with database.engine().connect() as conn:  # reads only: it waits for no other run's lock
        report.add(**headline_counts(conn, ADAPTER_TYPES, CHECKPOINT_TYPES))
    return report.result()


CATALOGUE_ASSETS = [civitai_models_raw, zoo_catalogue, image_resources, adapter_checkpoint_links, zoo_stats]
