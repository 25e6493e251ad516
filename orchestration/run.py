"""Run the refresh in-process (what `zoo refresh`, `zoo demo`, the tests and the benchmarks use).

Both build the code location from the settings they are given and run its jobs: `run_refresh` the catalogue job;
`refresh_zoo` the whole graph: the catalogue, then each shard of the describe/embed job, then the index job, and
sums up the runs.
"""

from __future__ import annotations

import sys
from contextlib import redirect_stdout
from dataclasses import dataclass, field, replace

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from config import Settings
from orchestration.location import embed_job, index_job, refresh_job, zoo_definitions
from orchestration.models import ModelsResource
from orchestration.resources import CivitaiResource

# The console logger would print every failed step's traceback; failures() says what failed, in one line each.
_QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def persistent_instance(settings: Settings) -> DagsterInstance:
    """The Dagster instance under settings.dagster_home (DAGSTER_HOME), created on first use: runs recorded in it
    are what `dagster dev` shows when started with the same DAGSTER_HOME. Callers that pass no instance (tests,
    benchmarks) run on an ephemeral one that is gone with the process."""
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    with redirect_stdout(sys.stderr):  # Dagster greets a new instance on stdout, which `--json` keeps for JSON
        return DagsterInstance.from_config(str(settings.dagster_home))


def _definitions(settings: Settings, database_url: str | None, civitai: CivitaiResource | None,
                 models: ModelsResource | None) -> Definitions:
    if database_url is not None:
        settings = replace(settings, database_url=database_url)
    overrides = {"civitai": civitai, "models": models}
    return zoo_definitions(settings, resources={key: value for key, value in overrides.items() if value is not None})


def _run_catalogue(defs: Definitions, instance: DagsterInstance | None, *, dump_path: str | None = None,
                   types: list[str] | None = None, base_models: list[str] | None = None,
                   max_pages: int | None = None, workers: int = 2) -> ExecuteInProcessResult:
    crawl: dict = {"dump_path": dump_path, "max_pages": max_pages}
    if types:
        crawl["types"] = types
    if base_models:
        crawl["base_models"] = base_models
    return defs.resolve_job_def(refresh_job.name).execute_in_process(
        run_config={"ops": {"civitai_models_raw": {"config": crawl}, "zoo_catalogue": {"config": {"workers": workers}}},
                    **_QUIET},
        instance=instance, raise_on_error=False)


def run_refresh(settings: Settings, *, dump_path: str | None = None, types: list[str] | None = None,
                base_models: list[str] | None = None, max_pages: int | None = None, workers: int = 2,
                database_url: str | None = None, civitai: CivitaiResource | None = None,
                models: ModelsResource | None = None, instance: DagsterInstance | None = None) -> ExecuteInProcessResult:
    """Materialise the catalogue assets and run their checks; the result says whether it succeeded.

    `database_url`, `civitai` and `models` replace what the settings configure."""
    return _run_catalogue(_definitions(settings, database_url, civitai, models), instance, dump_path=dump_path,
                          types=types, base_models=base_models, max_pages=max_pages, workers=workers)


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
        """One line per failed step: the step and the root cause (Dagster's own wrapper says only "Error occurred
        while executing op")."""
        return [f"{event.step_key}: {root_cause(event.event_specific_data.error)}"
                for run in self.runs for event in run.all_events if event.is_step_failure]


def root_cause(error) -> str:
    """The innermost cause's first line of a Dagster SerializableErrorInfo chain."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    lines = [line for line in (error.message or "").strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else error.cls_name or "unknown error"


def refresh_zoo(settings: Settings, *, database_url: str | None = None, civitai: CivitaiResource | None = None,
                models: ModelsResource | None = None, instance: DagsterInstance | None = None,
                **catalogue_options) -> RefreshOutcome:
    """The whole graph: catalogue, every describe/embed shard, then the index; stops at the first failed run.

    `catalogue_options` are run_refresh's (dump_path, types, base_models, max_pages, workers)."""
    defs = _definitions(settings, database_url, civitai, models)
    outcome = RefreshOutcome([_run_catalogue(defs, instance, **catalogue_options)])
    embed = defs.resolve_job_def(embed_job.name)
    for shard in embed.partitions_def.get_partition_keys():
        if not outcome.success:
            return outcome
        outcome.runs.append(embed.execute_in_process(partition_key=shard, run_config=_QUIET, instance=instance,
                                                     raise_on_error=False))
    if outcome.success:
        outcome.runs.append(defs.resolve_job_def(index_job.name).execute_in_process(
            run_config=_QUIET, instance=instance, raise_on_error=False))
    return outcome
