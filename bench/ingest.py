"""Ingest benchmark: a Civitai dump into a fresh zoo, then a refresh with nothing changed.

Runs the real Dagster job (`zoo refresh --dump`) twice in one process on a fresh embedded Postgres (or a fresh
database on DATABASE_URL's server), prints one table and ends with one JSON line of headline figures.

    python bench/ingest.py ../shared/civitai/models-2023-07-04.jsonl.gz [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text


def fresh_database(workdir: Path) -> str:
    """A new empty database: on DATABASE_URL's server when set, else on an embedded server in `workdir`."""
    from config import Settings
    from db.embedded import embedded_database_url

    settings = Settings.from_env()
    if settings.database_url is None:
        return embedded_database_url(workdir / "pg" / "data")
    from db.engine import database_url

    admin = create_engine(database_url(settings), isolation_level="AUTOCOMMIT")
    name = f"zoo_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    return admin.url.set(database=name).render_as_string(hide_password=False)


def timed_refresh(dump: Path, url: str, workers: int) -> tuple[float, dict]:
    from config import Settings
    from orchestration.run import run_refresh

    started = time.perf_counter()
    result = run_refresh(Settings.from_env(), dump_path=str(dump), database_url=url, workers=workers)
    seconds = time.perf_counter() - started
    if not result.success:
        sys.exit(f"the refresh failed: {[e.message for e in result.all_events if e.is_failure]}")
    metadata = {
        event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }
    return seconds, metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump", type=Path, help="JSON Lines dump of /models items (.jsonl or .jsonl.gz)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not args.dump.is_file():
        print(f"skipped: dump {args.dump} not found")
        print(json.dumps({"bench": "ingest", "skipped": f"missing {args.dump}"}))
        return
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as workdir:
        url = fresh_database(Path(workdir))
        first_s, first = timed_refresh(args.dump, url, args.workers)
        second_s, second = timed_refresh(args.dump, url, args.workers)
        with create_engine(url).connect() as conn:
            nsfw_served = conn.execute(text(
                "SELECT count(*) FROM served_model_versions s JOIN models m ON m.id = s.model_id WHERE m.nsfw"
            )).scalar_one()
            nsfw_models = conn.execute(text("SELECT count(*) FROM models WHERE nsfw")).scalar_one()
    raw, catalogue = first["civitai_models_raw"], first["zoo_catalogue"]
    models = raw["items_received"]
    rows = [
        ("first ingest", first_s, models / first_s),
        ("no-change refresh", second_s, models / second_s),
    ]
    print(f"{'run':<20}{'seconds':>10}{'models/s':>12}")
    for name, seconds, rate in rows:
        print(f"{name:<20}{seconds:>10.2f}{rate:>12.0f}")
    print(f"refresh / first time: {second_s / first_s:.3f}   (target < 0.10)")
    print(f"rows: {catalogue['rows_models']} models, {catalogue['rows_model_versions']} versions, "
          f"{catalogue['rows_model_files']} files, {catalogue['rows_images']} images, "
          f"{catalogue['rows_image_resources']} image resources, "
          f"{first['adapter_checkpoint_links'].get('links')} links; "
          f"{nsfw_models} NSFW models, {nsfw_served} served; {catalogue['quarantined']} quarantined")
    print(f"second run: {second['civitai_models_raw']['models_unchanged']} unchanged, "
          f"{second['zoo_catalogue']['normalised']} re-normalised, links skipped: "
          f"{second['adapter_checkpoint_links']['skipped']}")
    print(json.dumps({
        "bench": "ingest", "models": models, "first_s": round(first_s, 2),
        "first_models_per_s": round(models / first_s, 1), "refresh_s": round(second_s, 2),
        "refresh_models_per_s": round(models / second_s, 1), "refresh_ratio": round(second_s / first_s, 4),
        "links": first["adapter_checkpoint_links"].get("links"), "nsfw_models": nsfw_models,
        "nsfw_served": nsfw_served, "quarantined": catalogue["quarantined"],
    }))


if __name__ == "__main__":
    main()
