"""Run the refresh job in-process (what `zoo refresh`, `zoo demo`, the tests and the benchmark use)."""

from __future__ import annotations

from dagster import DagsterInstance, ExecuteInProcessResult, materialize

from orchestration.assets import CATALOGUE_ASSETS
from orchestration.checks import CATALOGUE_CHECKS
from orchestration.resources import CivitaiResource, DatabaseResource


def run_refresh(*, dump_path: str | None = None, types: list[str] | None = None,
                base_models: list[str] | None = None, max_pages: int | None = None, workers: int = 2,
                database_url: str | None = None, civitai: CivitaiResource | None = None,
                instance: DagsterInstance | None = None) -> ExecuteInProcessResult:
    """Materialise the catalogue assets and run their checks; the result says whether it succeeded."""
    crawl: dict = {"dump_path": dump_path, "max_pages": max_pages}
    if types:
        crawl["types"] = types
    if base_models:
        crawl["base_models"] = base_models
    return materialize(
        [*CATALOGUE_ASSETS, *CATALOGUE_CHECKS],
        resources={"database": DatabaseResource(url=database_url), "civitai": civitai or CivitaiResource()},
        run_config={
            "ops": {"civitai_models_raw": {"config": crawl}, "zoo_catalog": {"config": {"workers": workers}}},
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        },
        instance=instance,
        raise_on_error=False,
    )
