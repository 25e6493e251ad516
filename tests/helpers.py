"""Helpers shared by test modules (fixture files, cleaning the module's database)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine, text

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def read_jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_all(engine: Engine) -> None:
    """Empty every table (between tests of one module that need a clean catalogue)."""
    with engine.begin() as conn:
        conn.execute(text(
            "TRUNCATE models_raw, models, model_versions, model_files, images, image_resources, "
            "adapter_checkpoint_links, crawl_state, crawl_runs, quarantine, derived_stamps RESTART IDENTITY CASCADE"
        ))
