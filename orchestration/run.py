"""Run the refresh in-process (what `zoo refresh`, `zoo demo`, the tests and the benchmarks use).

`run_refresh` materialises the catalogue assets in one run; `refresh_zoo` runs the whole graph: the catalogue, then
each shard of the partitioned describe/embed assets, then the retrieval index, and sums up the runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dagster import AssetSelection, DagsterInstance, ExecuteInProcessResult, materialize

from orchestration.assets import CATALOGUE_ASSETS
from orchestration.checks import CATALOGUE_CHECKS, RETRIEVAL_CHECKS
from orchestration.embedding_assets import RETRIEVAL_ASSETS, adapter_descriptions, retrieval_index, shards, zoo_embeddings
from orchestration.models import ModelsResource
from orchestration.resources import CivitaiResource, DatabaseResource

ALL_ASSETS = [*CATALOGUE_ASSETS, *RETRIEVAL_ASSETS, *CATALOGUE_CHECKS, *RETRIEVAL_CHECKS]
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _resources(database_url: str | None, civitai: CivitaiResource | None, models: ModelsResource | None) -> dict:
    return {"database": DatabaseResource(url=database_url), "civitai": civitai or CivitaiResource(),
            "models": models or ModelsResource()}


def run_refresh(*, dump_path: str | None = None, types: list[str] | None = None,
                base_models: list[str] | None = None, max_pages: int | None = None, workers: int = 2,
                database_url: str | None = None, civitai: CivitaiResource | None = None,
                models: ModelsResource | None = None, instance: DagsterInstance | None = None) -> ExecuteInProcessResult:
    """Materialise the catalogue assets and run their checks; the result says whether it succeeded."""
    crawl: dict = {"dump_path": dump_path, "max_pages": max_pages}
    if types:
        crawl["types"] = types
    if base_models:
        crawl["base_models"] = base_models
    return materialize(
        ALL_ASSETS,
        selection=AssetSelection.assets(*CATALOGUE_ASSETS),
        resources=_resources(database_url, civitai, models),
        run_config={"ops": {"civitai_models_raw": {"config": crawl}, "zoo_catalog": {"config": {"workers": workers}}},
                    **_QUIET},
        instance=instance,
        raise_on_error=False,
    )


@dataclass
class RefreshOutcome:
    """The runs of one whole refresh, summed up."""

    runs: list[ExecuteInProcessResult] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return bool(self.runs) and all(run.success for run in self.runs)

    def materializations(self) -> dict[str, dict]:
        found = {}
        for run in self.runs:
            for event in run.get_asset_materialization_events():
                name = event.asset_key.to_user_string()
                partition = event.event_specific_data.materialization.partition
                key = f"{name}[{partition}]" if partition else name
                found[key] = {k: v.value for k, v in event.materialization.metadata.items()}
        return found

    def checks(self) -> dict[str, bool]:
        return {event.check_name: event.passed for run in self.runs for event in run.get_asset_check_evaluations()}

    def failures(self) -> list[str]:
        return [f"{event.step_key}: {event.event_specific_data.error.message.strip()}"
                for run in self.runs for event in run.all_events if event.is_step_failure]


def refresh_zoo(settings=None, *, database_url: str | None = None, civitai: CivitaiResource | None = None,
                models: ModelsResource | None = None, instance: DagsterInstance | None = None,
                **catalogue_options) -> RefreshOutcome:
    """The whole graph: catalogue, every describe/embed shard, then the index; stops at the first failed run."""
    outcome = RefreshOutcome([run_refresh(database_url=database_url, civitai=civitai, models=models,
                                          instance=instance, **catalogue_options)])
    resources = _resources(database_url, civitai, models)
    for shard in shards.get_partition_keys():
        if not outcome.success:
            return outcome
        outcome.runs.append(materialize(
            ALL_ASSETS, selection=AssetSelection.assets(adapter_descriptions, zoo_embeddings), partition_key=shard,
            resources=resources, run_config=_QUIET, instance=instance, raise_on_error=False))
    if outcome.success:
        outcome.runs.append(materialize(
            ALL_ASSETS, selection=AssetSelection.assets(retrieval_index), resources=resources, run_config=_QUIET,
            instance=instance, raise_on_error=False))
    return outcome
