"""The second source: a dump file of /models items (JSON Lines, optionally gzip), through the same raw store."""

from __future__ import annotations

import gzip
import logging
from importlib import resources
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
from sqlalchemy import Engine

from crawlers.ingest import IngestReport, store_items
from db import crawl_store
from db.raw_store import known_source_shas, payload_sha, quarantine

log = logging.getLogger(__name__)
BATCH_SIZE = 1000


class DumpError(ValueError):
    """The dump cannot be read at all (missing, not a file, not gzip when it says so)."""


def _lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        yield from handle


def ingest_dump(engine: Engine, path: Path, on_batch: Callable[[int], None] | None = None) -> IngestReport:
    """Store every item of the dump raw; lines that are not JSON objects are quarantined, not fatal.

    A line whose bytes hash to an item already stored is unchanged and is not even parsed: that keeps a
    refresh from an unchanged dump to a fraction of the first ingest.
    """
    path = Path(path)
    if not path.is_file():
        raise DumpError(f"dump not found: {path}")
    source = f"dump:{path.name}"
    report = IngestReport()
    with engine.begin() as conn:
        run_id = crawl_store.open_run(conn, source, {"path": str(path)})
        known = known_source_shas(conn)
    batch: list[object] = []
    batch_shas: list[str] = []
    try:
        for line_number, line in enumerate(_lines(path), start=1):
            line = line.strip()
            if not line:
                continue
            line_sha = payload_sha(line)
            if line_sha in known:
                report.items_received += 1
                report.models_unchanged += 1
                continue
            try:
                batch.append(orjson.loads(line))
                batch_shas.append(line_sha)
            except orjson.JSONDecodeError as error:
                report.items_received += 1
                with engine.begin() as conn:
                    report.count_quarantined(quarantine(
                        conn, stage="crawl", source=source, error=f"line {line_number}: not JSON: {error}",
                        payload_text=line.decode("utf-8", "replace")))
                continue
            if len(batch) >= BATCH_SIZE:
                _flush(engine, batch, batch_shas, source, run_id, report, on_batch)
        _flush(engine, batch, batch_shas, source, run_id, report, on_batch)
        with engine.begin() as conn:
            crawl_store.close_run(conn, run_id, "succeeded", report.as_dict())
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        _flush(engine, batch, batch_shas, source, run_id, report, on_batch)  # keep every item read before the damage
        with engine.begin() as conn:
            crawl_store.close_run(conn, run_id, "failed", report.as_dict(), f"{type(error).__name__}: {error}")
        raise DumpError(f"cannot read dump {path}: {error}") from error
    return report


def _flush(engine: Engine, batch: list[object], batch_shas: list[str], source: str, run_id: int,
           report: IngestReport, on_batch: Callable[[int], None] | None) -> None:
    if not batch:
        return
    with engine.begin() as conn:
        store_items(conn, batch, source, report, batch_shas, run_id)
    report.pages += 1
    batch.clear()
    batch_shas.clear()
    if on_batch:
        on_batch(report.items_received)


def snapshot_path() -> Path:
    """The small hand-written Civitai-format snapshot the project ships for machines without Civitai."""
    return Path(str(resources.files("crawlers") / "snapshot" / "sample_models.jsonl"))
