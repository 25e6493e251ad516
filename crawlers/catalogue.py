"""Turn stored raw items into catalogue rows: only those whose content changed since their last normalisation.

Batches are independent (each reads its raw rows, normalises them and writes them in one transaction), so they run
in worker processes, one per core: normalising is CPU-bound Python, and it overlaps with Postgres' own work.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields

import orjson
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from crawlers.normalise import NormalisedModel, normalise_model
from db.catalogue_store import refresh_statistics, replace_models, sync_deletions
from db.engine import engine_for_url
from db.raw_store import quarantine

log = logging.getLogger(__name__)
BATCH_SIZE = 500


@dataclass
class CatalogueCounts:
    pending: int = 0
    normalised: int = 0
    quarantined: int = 0
    deletions_synced: int = 0
    versions: int = 0
    files: int = 0
    images: int = 0
    image_resources: int = 0

    def add(self, other: CatalogueCounts) -> None:
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def as_dict(self) -> dict:
        return asdict(self)


def normalise_pending(engine: Engine, *, workers: int = 1, progress: Callable[[int, int], None] | None = None,
                      id_range: tuple[int, int] | None = None) -> CatalogueCounts:
    """Normalise every raw model (optionally in an id range) whose raw_sha differs from its normalised_sha.

    Work is committed per batch, so an interrupted run resumes where it stopped. An item that fails goes to
    quarantine with its error; the run goes on.
    """
    low, high = id_range or (0, 2**63 - 1)
    with engine.connect() as conn:
        pending = conn.execute(text(
            "SELECT id FROM models_raw WHERE normalised_sha IS DISTINCT FROM raw_sha AND id BETWEEN :low AND :high "
            "ORDER BY id"
        ), {"low": low, "high": high}).scalars().all()
    counts = CatalogueCounts(pending=len(pending))
    batches = [pending[start:start + BATCH_SIZE] for start in range(0, len(pending), BATCH_SIZE)]
    url = engine.url.render_as_string(hide_password=False)
    if workers > 1 and len(batches) > 1:
        # spawn, not fork: a forked child would share the parent's pooled database connections
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for done, batch_counts in enumerate(pool.map(normalise_batch, [url] * len(batches), batches), start=1):
                counts.add(batch_counts)
                if progress:
                    progress(min(done * BATCH_SIZE, len(pending)), len(pending))
    else:
        for done, batch in enumerate(batches, start=1):
            counts.add(normalise_batch(url, batch))
            if progress:
                progress(min(done * BATCH_SIZE, len(pending)), len(pending))
    with engine.begin() as conn:
        counts.deletions_synced = sync_deletions(conn)
    if counts.normalised or counts.deletions_synced:
        refresh_statistics(engine)
    return counts


def normalise_batch(url: str, ids: list[int]) -> CatalogueCounts:
    """Normalise and store one batch; if the database refuses it, retry one by one to quarantine the culprit."""
    engine = engine_for_url(url)
    counts = CatalogueCounts()
    try:
        _normalise_ids(engine, ids, counts)
    except DBAPIError:
        for model_id in ids:
            try:
                _normalise_ids(engine, [model_id], counts)
            except DBAPIError as error:
                _quarantine_unloadable(engine, model_id, error)
                counts.quarantined += 1
    return counts


def _normalise_ids(engine: Engine, ids: list[int], counts: CatalogueCounts) -> None:
    batch_counts = CatalogueCounts()
    with engine.begin() as conn:
        rows = conn.execute(text("SELECT id, raw::text, raw_sha, source FROM models_raw WHERE id = ANY(:ids)"),
                            {"ids": ids}).all()
        good: list[NormalisedModel] = []
        errors: list[str | None] = []
        for model_id, raw_text, _, source in rows:
            payload = orjson.loads(raw_text)
            try:
                good.append(normalise_model(payload))
                errors.append(None)
            except Exception as error:  # noqa: BLE001 - any failure of one item must not stop the run
                message = f"{type(error).__name__}: {error}"
                log.warning("model %s quarantined: %s", model_id, message)
                quarantine(conn, stage="normalise", source=source, error=message, payload=payload, model_id=model_id)
                batch_counts.quarantined += 1
                errors.append(message)
        replace_models(conn, good)
        _record_outcomes(conn, [row[0] for row in rows], [row[2] for row in rows], errors)
    batch_counts.normalised = len(good)
    batch_counts.versions = sum(len(n.versions) for n in good)
    batch_counts.files = sum(len(n.files) for n in good)
    batch_counts.images = sum(len(n.images) for n in good)
    batch_counts.image_resources = sum(len(n.image_resources) for n in good)
    counts.add(batch_counts)


def _record_outcomes(conn, ids: list[int], shas: list[str], errors: list[str | None]) -> None:
    conn.execute(text(
        """
        UPDATE models_raw r SET normalised_sha = o.sha, normalise_error = o.error
        FROM unnest(CAST(:ids AS bigint[]), CAST(:shas AS text[]), CAST(:errors AS text[])) AS o(id, sha, error)
        WHERE r.id = o.id
        """
    ), {"ids": ids, "shas": shas, "errors": errors})


def _quarantine_unloadable(engine: Engine, model_id: int, error: DBAPIError) -> None:
    message = f"database refused the normalised rows: {str(error.orig).strip()}"
    log.warning("model %s quarantined: %s", model_id, message)
    with engine.begin() as conn:
        raw_text, raw_sha, source = conn.execute(
            text("SELECT raw::text, raw_sha, source FROM models_raw WHERE id = :id"), {"id": model_id}).one()
        quarantine(conn, stage="load", source=source, error=message, payload=orjson.loads(raw_text), model_id=model_id)
        _record_outcomes(conn, [model_id], [raw_sha], [message])
