"""The code location built from one Settings: assets (the shard count partitions describe and embed), checks, jobs
by asset group, the daily schedule and the resources. `orchestration.definitions` builds it from the environment;
`orchestration.run` builds it from the settings it is given."""

from __future__ import annotations

from collections.abc import Mapping

from dagster import AssetSelection, ConfigurableResource, Definitions, ScheduleDefinition, define_asset_job

from config import Settings
from orchestration.assets import CATALOGUE_ASSETS, CATALOGUE_GROUP
from orchestration.checks import CATALOGUE_CHECKS, RETRIEVAL_CHECKS
from orchestration.embedding_assets import (EMBEDDING_GROUP, RETRIEVAL_GROUP, retrieval_index, retrieval_ranker,
                                            sharded_assets)
from orchestration.resources import zoo_resources

refresh_job = define_asset_job(
    "refresh_zoo", selection=AssetSelection.groups(CATALOGUE_GROUP),
    description="Crawl Civitai (or a dump), normalise, resolve image resources and rebuild links.",
)
# Describe and embed run per shard (partition): a backfill of all shards runs them in parallel.
embed_job = define_asset_job(
    "describe_and_embed", selection=AssetSelection.groups(EMBEDDING_GROUP),
    description="Describe and embed one shard of the served versions (only what changed).",
)
index_job = define_asset_job(
    "build_retrieval_index", selection=AssetSelection.groups(RETRIEVAL_GROUP),
    description="Index the vectors of every shard, rebuild the word statistics, and learn the ranker from usage.",
)
daily_refresh = ScheduleDefinition(job=refresh_job, cron_schedule="0 3 * * *", name="daily_zoo_refresh")


def zoo_definitions(settings: Settings, *,
                    resources: Mapping[str, ConfigurableResource] | None = None) -> Definitions:
    """Everything the zoo's Dagster code location holds; `resources` replace those zoo_resources(settings) builds."""
    return Definitions(
        assets=[*CATALOGUE_ASSETS, *sharded_assets(settings.shards), retrieval_index, retrieval_ranker],
        asset_checks=[*CATALOGUE_CHECKS, *RETRIEVAL_CHECKS],
        jobs=[refresh_job, embed_job, index_job],
        schedules=[daily_refresh],
        resources={**zoo_resources(settings), **(resources or {})},
    )
