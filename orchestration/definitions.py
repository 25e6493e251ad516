"""The Dagster code location: `dagster dev -m orchestration.definitions` loads it."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, ScheduleDefinition, define_asset_job

from orchestration.assets import CATALOGUE_ASSETS
from orchestration.checks import CATALOGUE_CHECKS
from orchestration.resources import CivitaiResource, DatabaseResource

refresh_job = define_asset_job(
    "refresh_zoo", selection=AssetSelection.assets(*CATALOGUE_ASSETS),
    description="Crawl Civitai (or a dump), normalise, resolve image resources and rebuild links.",
)

daily_refresh = ScheduleDefinition(job=refresh_job, cron_schedule="0 3 * * *", name="daily_zoo_refresh")

defs = Definitions(
    assets=CATALOGUE_ASSETS,
    asset_checks=CATALOGUE_CHECKS,
    jobs=[refresh_job],
    schedules=[daily_refresh],
    resources={"database": DatabaseResource(), "civitai": CivitaiResource()},
)
