"""The Dagster code location: `dagster dev -m orchestration.definitions` loads it."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, ScheduleDefinition, define_asset_job

from orchestration.assets import CATALOGUE_ASSETS
from orchestration.checks import CATALOGUE_CHECKS, RETRIEVAL_CHECKS
from orchestration.embedding_assets import RETRIEVAL_ASSETS
from orchestration.models import ModelsResource
from orchestration.resources import CivitaiResource, DatabaseResource

refresh_job = define_asset_job(
    "refresh_zoo", selection=AssetSelection.assets(*CATALOGUE_ASSETS),
    description="Crawl Civitai (or a dump), normalise, resolve image resources and rebuild links.",
)
# Describe and embed run per shard (partition): a backfill of all shards runs them in parallel.
embed_job = define_asset_job(
    "describe_and_embed", selection=AssetSelection.assets(*RETRIEVAL_ASSETS[:2]),
    description="Describe and embed one shard of the served versions (only what changed).",
)
index_job = define_asset_job("build_retrieval_index", selection=AssetSelection.assets(*RETRIEVAL_ASSETS[2:]))

daily_refresh = ScheduleDefinition(job=refresh_job, cron_schedule="0 3 * * *", name="daily_zoo_refresh")

defs = Definitions(
    assets=[*CATALOGUE_ASSETS, *RETRIEVAL_ASSETS],
    asset_checks=[*CATALOGUE_CHECKS, *RETRIEVAL_CHECKS],
    jobs=[refresh_job, embed_job, index_job],
    schedules=[daily_refresh],
    resources={"database": DatabaseResource(), "civitai": CivitaiResource(), "models": ModelsResource()},
)
