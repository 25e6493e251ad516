"""The Dagster code location: what it defines, that Dagster itself can load it, and a real in-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from dagster import AssetKey
from sqlalchemy import text

from helpers import FIXTURES, truncate_all
from orchestration.definitions import defs
from orchestration.location import zoo_definitions
from orchestration.resources import zoo_resources
from orchestration.run import run_refresh

REPO = Path(__file__).resolve().parent.parent


def test_definitions_hold_the_catalogue_graph_job_schedule_and_checks() -> None:
    job = defs.resolve_job_def("refresh_zoo")
    assert job is not None
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {"civitai_models_raw", "zoo_catalogue", "image_resources", "adapter_checkpoint_links",
                    "zoo_stats", "adapter_descriptions", "zoo_embeddings", "retrieval_index", "retrieval_ranker"}
    parents = {key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
               for key in graph.get_all_asset_keys()}
    assert parents["zoo_catalogue"] == {"civitai_models_raw"}
    assert parents["adapter_checkpoint_links"] == {"image_resources"}
    assert parents["adapter_descriptions"] == {"adapter_checkpoint_links"}
    assert parents["zoo_stats"] == {"adapter_checkpoint_links"}
    assert parents["retrieval_index"] == {"zoo_embeddings"}
    assert graph.get(AssetKey("zoo_embeddings")).partitions_def is not None
    schedule = defs.resolve_schedule_def("daily_zoo_refresh")
    assert schedule.cron_schedule == "0 3 * * *"
    check_names = {key.name for key in graph.asset_check_keys}
    assert check_names == {"nothing_nsfw_served", "no_served_model_without_a_version",
                           "links_point_at_existing_versions", "every_served_version_has_a_vector",
                           "no_nsfw_model_has_a_vector", "nothing_beyond_the_serving_limits_indexed"}


def test_jobs_select_asset_groups_and_the_settings_set_the_shards(settings) -> None:
    location = zoo_definitions(replace(settings, shards=3))

    def selected(job: str) -> set[str]:
        graph = location.resolve_job_def(job).asset_layer.asset_graph
        return {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).is_executable}

    assert selected("refresh_zoo") == {"civitai_models_raw", "zoo_catalogue", "image_resources",
                                       "adapter_checkpoint_links", "zoo_stats"}
    assert selected("describe_and_embed") == {"adapter_descriptions", "zoo_embeddings"}
    assert selected("build_retrieval_index") == {"retrieval_index", "retrieval_ranker"}
    assert location.resolve_job_def("describe_and_embed").partitions_def.get_partition_keys() == ["0", "1", "2"]
    graph = location.resolve_asset_graph()
    assert all("postgres" in graph.get(key).kinds for key in graph.get_all_asset_keys())
    assert "pytorch" in graph.get(AssetKey("zoo_embeddings")).kinds


def test_resources_come_from_the_settings_and_secrets_stay_out_of_their_config(settings) -> None:
    keyed = replace(settings, civitai_api_key="civitai-secret", describer_api_key="describer-secret")
    plain = zoo_resources(keyed)
    assert plain["database"].url == settings.database_url
    assert plain["civitai"].api_key == "civitai-secret" and plain["models"].describer_api_key == "describer-secret"
    assert plain["models"].images_dir == str(settings.zoo_home / "images")
    hidden = zoo_resources(keyed, secrets_as_env_vars=True)  # what the code location, seen in the UI, holds
    assert (hidden["database"].url, hidden["civitai"].api_key, hidden["models"].describer_api_key) == (
        "DATABASE_URL", "CIVITAI_API_KEY", "ZOO_DESCRIBER_API_KEY")


def test_dagster_loads_the_code_location() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-m", "orchestration.definitions"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Validation successful" in done.stderr + done.stdout


def test_in_process_run_materialises_every_asset_with_metadata(settings, engine) -> None:
    result = run_refresh(settings, dump_path=str(FIXTURES / "civitai_2023.jsonl"), workers=1)
    assert result.success
    metadata = {event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
                for event in result.get_asset_materialization_events()}
    assert metadata["civitai_models_raw"]["items_received"] == 9
    assert metadata["zoo_catalogue"]["normalised"] == 9
    assert metadata["zoo_catalogue"]["rows_models"] == 9
    assert metadata["adapter_checkpoint_links"]["links"] > 0
    assert all(key in metadata["zoo_catalogue"] for key in ("seconds", "rows_images", "rows_image_resources"))
    assert all(isinstance(asset["seconds"], float) for asset in metadata.values())
    assert metadata["civitai_models_raw"]["models_per_second"] > 0
    stats = metadata["zoo_stats"]
    assert (stats["models"], stats["last_run_added"], stats["last_run_changed"]) == (9, 9, 0)
    assert stats["served_versions"] > 0 and stats["links"] == metadata["adapter_checkpoint_links"]["links"]
    assert all(isinstance(value, (int, float)) for value in stats.values())  # numeric: the UI plots them
    assert all(event.passed for event in result.get_asset_check_evaluations())

    again = run_refresh(settings, dump_path=str(FIXTURES / "civitai_2023.jsonl"), workers=1)
    second = {event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
              for event in again.get_asset_materialization_events()}
    assert second["civitai_models_raw"]["models_unchanged"] == 9
    assert second["zoo_catalogue"]["normalised"] == 0
    assert second["image_resources"]["skipped"] is True
    assert second["adapter_checkpoint_links"]["skipped"] is True
    assert (second["zoo_stats"]["models"], second["zoo_stats"]["last_run_added"]) == (9, 0)


def test_nsfw_check_fails_when_an_nsfw_model_slips_into_serving(settings, engine) -> None:
    run_refresh(settings, dump_path=str(FIXTURES / "civitai_2023.jsonl"), workers=1)
    with engine.begin() as conn:  # a policy bug: the decision says SFW although the API flag is set
        flagged = conn.execute(text("UPDATE models SET nsfw = false WHERE nsfw_flag RETURNING id")).scalars().all()
    assert flagged
    result = run_refresh(settings, dump_path=str(FIXTURES / "civitai_2023.jsonl"), workers=1)
    checks = {event.check_name: event.passed for event in result.get_asset_check_evaluations()}
    assert checks["nothing_nsfw_served"] is False
    assert not result.success


def test_cli_runs_are_recorded_in_the_persistent_instance_dagster_dev_reads(settings, engine, tmp_path) -> None:
    from dagster import DagsterInstance

    from config import Settings
    from orchestration.run import persistent_instance

    assert Settings.from_env({"ZOO_HOME": str(tmp_path)}).dagster_home == tmp_path / "dagster"
    assert Settings.from_env({"ZOO_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "d")}).dagster_home == \
        tmp_path / "d"
    truncate_all(engine)  # the test before left a policy bug behind
    home = replace(settings, dagster_dir=tmp_path / "dagster")
    with persistent_instance(home) as instance:
        result = run_refresh(home, dump_path=str(FIXTURES / "civitai_2023.jsonl"), workers=1, instance=instance)
    assert result.success
    with DagsterInstance.from_config(str(tmp_path / "dagster")) as reopened:  # what `dagster dev` would open
        assert [run.job_name for run in reopened.get_runs()] == ["refresh_zoo"]
        stats = reopened.get_latest_materialization_event(AssetKey("zoo_stats"))
        assert stats.asset_materialization.metadata["models"].value == 9
