"""The Dagster code location: what it defines, that Dagster itself can load it, and a real in-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey
from sqlalchemy import text

from helpers import FIXTURES
from orchestration.definitions import defs
from orchestration.run import run_refresh

REPO = Path(__file__).resolve().parent.parent


def test_definitions_hold_the_catalogue_graph_job_schedule_and_checks() -> None:
    job = defs.resolve_job_def("refresh_zoo")
    assert job is not None
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {"civitai_models_raw", "zoo_catalog", "image_resources", "adapter_checkpoint_links",
                    "adapter_descriptions", "zoo_embeddings", "retrieval_index"}
    parents = {key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
               for key in graph.get_all_asset_keys()}
    assert parents["zoo_catalog"] == {"civitai_models_raw"}
    assert parents["adapter_checkpoint_links"] == {"image_resources"}
    assert parents["adapter_descriptions"] == {"adapter_checkpoint_links"}
    assert parents["retrieval_index"] == {"zoo_embeddings"}
    assert graph.get(AssetKey("zoo_embeddings")).partitions_def is not None
    schedule = defs.resolve_schedule_def("daily_zoo_refresh")
    assert schedule.cron_schedule == "0 3 * * *"
    check_names = {key.name for key in graph.asset_check_keys}
    assert check_names == {"nothing_nsfw_served", "no_served_model_without_a_version",
                           "links_point_at_existing_versions", "every_served_version_has_a_vector",
                           "no_nsfw_model_has_a_vector"}


def test_dagster_loads_the_code_location() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-m", "orchestration.definitions"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Validation successful" in done.stderr + done.stdout


def test_in_process_run_materialises_every_asset_with_metadata(database_url: str, engine) -> None:
    result = run_refresh(dump_path=str(FIXTURES / "civitai_2023.jsonl"), database_url=database_url, workers=1)
    assert result.success
    metadata = {event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
                for event in result.get_asset_materialization_events()}
    assert metadata["civitai_models_raw"]["items_received"] == 9
    assert metadata["zoo_catalog"]["normalised"] == 9
    assert metadata["zoo_catalog"]["rows_models"] == 9
    assert metadata["adapter_checkpoint_links"]["links"] > 0
    assert all(key in metadata["zoo_catalog"] for key in ("seconds", "rows_images", "rows_image_resources"))
    assert all(event.passed for event in result.get_asset_check_evaluations())

    again = run_refresh(dump_path=str(FIXTURES / "civitai_2023.jsonl"), database_url=database_url, workers=1)
    second = {event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
              for event in again.get_asset_materialization_events()}
    assert second["civitai_models_raw"]["models_unchanged"] == 9
    assert second["zoo_catalog"]["normalised"] == 0
    assert second["image_resources"]["skipped"] is True
    assert second["adapter_checkpoint_links"]["skipped"] is True


def test_nsfw_check_fails_when_an_nsfw_model_slips_into_serving(database_url: str, engine) -> None:
    run_refresh(dump_path=str(FIXTURES / "civitai_2023.jsonl"), database_url=database_url, workers=1)
    with engine.begin() as conn:  # a policy bug: the decision says SFW although the API flag is set
        flagged = conn.execute(text("UPDATE models SET nsfw = false WHERE nsfw_flag RETURNING id")).scalars().all()
    assert flagged
    result = run_refresh(dump_path=str(FIXTURES / "civitai_2023.jsonl"), database_url=database_url, workers=1)
    checks = {event.check_name: event.passed for event in result.get_asset_check_evaluations()}
    assert checks["nothing_nsfw_served"] is False
    assert not result.success
