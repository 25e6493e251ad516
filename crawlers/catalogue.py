"""Turn stored raw items into catalogue rows: only those whose content changed since their last normalisation.

Batches are independent (each reads its raw rows, normalises them and writes them in one transaction), so they run
in worker processes, one per core: normalising is CPU-bound Python, and it overlaps with Postgres' own work.

Nothing poisons a run: an item the normaliser cannot read, or whose rows the database refuses (whatever the error
class), or that lists a version id another model owns, is quarantined with its reason and the rest of its batch is
stored. And no run withdraws more than a small share of the served versions: models whose new rows would stop
serving versions are held back from their batch and written together at the end, in one transaction that is
refused as a whole (TooManyWithdrawals) when they are too many.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields

import orjson
from sqlalchemy import Connection, Engine, text

from crawlers.normalise import NormalisedModel, normalise_model
from db.catalogue_store import (
    deletions_to_sync,
    ownership_conflicts,
    refresh_statistics,
    replace_models,
    served_version_count,
    served_versions,
    sync_deletions,
)
from db.engine import engine_for_url
from db.errors import describe, rows_refused
from db.raw_store import quarantine

log = logging.getLogger(__name__)
BATCH_SIZE = 500


@dataclass(frozen=True)
class WithdrawalLimit:
    """How many served versions one run may stop serving: `share` of those served, and never fewer than `floor`
    (so a small zoo is not stopped by one real deletion)."""

    share: float = 0.05
    floor: int = 20

    def allowed(self, served: int) -> int:
        return max(self.floor, int(self.share * served))


class TooManyWithdrawals(RuntimeError):
    """The run would stop serving more versions than its WithdrawalLimit allows; nothing was withdrawn."""

    def __init__(self, withdrawn: int, served: int, allowed: int, examples: Sequence[int]) -> None:
        self.withdrawn, self.served, self.allowed, self.examples = withdrawn, served, allowed, list(examples)
        super().__init__(
            f"this refresh would stop serving {withdrawn} of the {served} served model versions, more than the "
            f"{allowed} one run may withdraw; nothing was withdrawn (models involved include "
            f"{', '.join(map(str, self.examples))})")


@dataclass
class CatalogueCounts:
    pending: int = 0
    normalised: int = 0
    quarantined: int = 0
    deletions_synced: int = 0
    withdrawn: int = 0  # served versions this run stopped serving (removed, deleted, no primary file, NSFW, ...)
    versions: int = 0
    files: int = 0
    images: int = 0
    image_resources: int = 0

    def add(self, other: CatalogueCounts) -> None:
        for counted in fields(self):
            setattr(self, counted.name, getattr(self, counted.name) + getattr(other, counted.name))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class BatchOutcome:
    counts: CatalogueCounts = field(default_factory=CatalogueCounts)
    held_back: dict[int, int] = field(default_factory=dict)  # model id -> served versions its new rows withdraw

    def add(self, other: BatchOutcome) -> None:
        self.counts.add(other.counts)
        self.held_back.update(other.held_back)


def normalise_pending(engine: Engine, *, workers: int = 1, progress: Callable[[int, int], None] | None = None,
                      id_range: tuple[int, int] | None = None,
                      limit: WithdrawalLimit | None = None) -> CatalogueCounts:
    """Normalise every raw model (optionally in an id range) whose raw_sha differs from its normalised_sha.

    Work is committed per batch, so an interrupted run resumes where it stopped. An item that fails goes to
    quarantine with its error; the run goes on. Raises TooManyWithdrawals (after storing everything else) when the
    models that would stop serving versions, and the deletions the crawl saw, withdraw more than `limit` allows;
    they stay pending, so every later run refuses them again until the limit is raised for one run.
    """
    low, high = id_range or (0, 2**63 - 1)
    with engine.connect() as conn:
        pending = conn.execute(text(
            "SELECT id FROM models_raw WHERE normalised_sha IS DISTINCT FROM raw_sha AND id BETWEEN :low AND :high "
            "ORDER BY id"
        ), {"low": low, "high": high}).scalars().all()
        served = served_version_count(conn)
    outcome = BatchOutcome(CatalogueCounts(pending=len(pending)))
    batches = [pending[start:start + BATCH_SIZE] for start in range(0, len(pending), BATCH_SIZE)]
    url = engine.url.render_as_string(hide_password=False)
    if workers > 1 and len(batches) > 1:
        # spawn, not fork: a forked child would share the parent's pooled database connections
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            try:
                for done, batch_outcome in enumerate(pool.map(normalise_batch, [url] * len(batches), batches),
                                                     start=1):
                    outcome.add(batch_outcome)
                    if progress:
                        progress(min(done * BATCH_SIZE, len(pending)), len(pending))
            except Exception as error:
                # The pool chains a worker's error to the worker's traceback as text, which error reports would
                # take for the root cause (its first line says only '_RemoteTraceback:'): raise it as the worker did.
                log.debug("a normalising worker failed:%s", error.__cause__)
                raise error from None
    else:
        for done, batch in enumerate(batches, start=1):
            outcome.add(normalise_batch(url, batch))
            if progress:
                progress(min(done * BATCH_SIZE, len(pending)), len(pending))
    counts = outcome.counts
    counts.add(_withdraw(engine, outcome.held_back, served, limit or WithdrawalLimit()))
    if counts.normalised or counts.deletions_synced:
        refresh_statistics(engine)
    return counts


def normalise_batch(url: str, ids: list[int]) -> BatchOutcome:
    """Normalise and store one batch. Models whose new rows would stop serving versions are held back (left
    pending) for normalise_pending to write at the end, under the run's withdrawal limit."""
    outcome = BatchOutcome()
    _store(engine_for_url(url), ids, outcome)
    return outcome


def _store(engine: Engine, ids: list[int], outcome: BatchOutcome) -> None:
    """Write `ids` in one transaction; if the database refuses the rows, halve until the culprit stands alone and
    quarantine it. Errors that are not the rows' fault (a lost connection) end the run: nothing is quarantined and
    the items stay pending for the next run."""
    try:
        with engine.begin() as conn:
            stored = _normalise_in(conn, ids, hold_back_withdrawals=True)
        outcome.add(stored)
    except Exception as error:
        if not rows_refused(error):
            raise
        if len(ids) == 1:
            _quarantine_unloadable(engine, ids[0], error)
            outcome.counts.quarantined += 1
            return
        middle = len(ids) // 2
        _store(engine, ids[:middle], outcome)
        _store(engine, ids[middle:], outcome)


def _normalise_in(conn: Connection, ids: Sequence[int], *, hold_back_withdrawals: bool) -> BatchOutcome:
    """Normalise the raw rows `ids` and write them in `conn`'s transaction; quarantine the items that cannot be
    normalised or claim another model's ids. With `hold_back_withdrawals`, a model whose new rows would stop serving
    any of its versions is not written (and stays pending): BatchOutcome.held_back names it."""
    outcome = BatchOutcome()
    raw = {row[0]: (orjson.loads(row[1]), row[2], row[3]) for row in conn.execute(text(
        "SELECT id, raw::text, raw_sha, source FROM models_raw WHERE id = ANY(:ids) ORDER BY id"), {"ids": list(ids)})}
    errors: dict[int, str | None] = {}
    good: list[NormalisedModel] = []
    for model_id, (payload, _, source) in raw.items():
        try:
            good.append(normalise_model(payload))
            errors[model_id] = None
        except Exception as error:  # noqa: BLE001 - any failure of one item must not stop the run
            errors[model_id] = _quarantine(conn, "normalise", source, model_id, payload,
                                           f"{type(error).__name__}: {error}")
    conflicts = ownership_conflicts(conn, good)
    for model_id, reason in conflicts.items():
        payload, _, source = raw[model_id]
        errors[model_id] = _quarantine(conn, "load", source, model_id, payload, reason)
    good = [model for model in good if model.model["id"] not in conflicts]
    if hold_back_withdrawals:
        outcome.held_back = _write_unless_withdrawing(conn, good)
        good = [model for model in good if model.model["id"] not in outcome.held_back]
    else:
        replace_models(conn, good)
    done = [model_id for model_id in errors if model_id not in outcome.held_back]
    _record_outcomes(conn, done, [raw[model_id][1] for model_id in done], [errors[model_id] for model_id in done])
    counts = outcome.counts
    counts.quarantined = sum(1 for model_id in done if errors[model_id] is not None)
    counts.normalised = len(good)
    counts.versions = sum(len(n.versions) for n in good)
    counts.files = sum(len(n.files) for n in good)
    counts.images = sum(len(n.images) for n in good)
    counts.image_resources = sum(len(n.image_resources) for n in good)
    return outcome


def _write_unless_withdrawing(conn: Connection, batch: list[NormalisedModel]) -> dict[int, int]:
    """Write the batch, except the models whose new rows would stop serving any of their versions: those are
    returned (model id -> versions withdrawn) and nothing of them is written (a savepoint undoes the trial)."""
    model_ids = [model.model["id"] for model in batch]
    before = served_versions(conn, model_ids)
    if not before:  # nothing served can be withdrawn (new models, or none served)
        replace_models(conn, batch)
        return {}
    savepoint = conn.begin_nested()
    replace_models(conn, batch)
    lost = before - served_versions(conn, model_ids)
    if not lost:
        savepoint.commit()
        return {}
    savepoint.rollback()
    withdrawing: dict[int, int] = {}
    for model_id in conn.execute(text("SELECT model_id FROM model_versions WHERE id = ANY(:ids)"),
                                 {"ids": list(lost)}).scalars():
        withdrawing[model_id] = withdrawing.get(model_id, 0) + 1
    replace_models(conn, [model for model in batch if model.model["id"] not in withdrawing])
    return withdrawing


def _withdraw(engine: Engine, held_back: dict[int, int], served: int, limit: WithdrawalLimit) -> CatalogueCounts:
    """Write the held-back models and carry the crawl's deletions over, in one transaction that is refused whole
    when the served versions it withdraws are more than `limit` allows of the `served` ones the run began with."""
    counts = CatalogueCounts()
    allowed = limit.allowed(served)
    if sum(held_back.values()) > allowed:  # certain without writing anything
        raise TooManyWithdrawals(sum(held_back.values()), served, allowed, sorted(held_back)[:10])
    with engine.begin() as conn:
        deleted = deletions_to_sync(conn)
        if not held_back and not deleted:
            return counts
        involved = sorted({*held_back, *deleted})
        before = served_versions(conn, involved)
        counts.add(_normalise_in(conn, sorted(held_back), hold_back_withdrawals=False).counts)
        counts.deletions_synced = sync_deletions(conn)
        counts.withdrawn = len(before - served_versions(conn, involved))
        if counts.withdrawn > allowed:
            raise TooManyWithdrawals(counts.withdrawn, served, allowed, involved[:10])
    if counts.withdrawn:
        log.info("%d served versions withdrawn (%d allowed)", counts.withdrawn, allowed)
    return counts


def _quarantine(conn: Connection, stage: str, source: str, model_id: int, payload: object, message: str) -> str:
    log.warning("model %s quarantined: %s", model_id, message)
    quarantine(conn, stage=stage, source=source, error=message, payload=payload, model_id=model_id)
    return message


def _record_outcomes(conn: Connection, ids: list[int], shas: list[str], errors: list[str | None]) -> None:
    conn.execute(text(
        """
        UPDATE models_raw r SET normalised_sha = o.sha, normalise_error = o.error
        FROM unnest(CAST(:ids AS bigint[]), CAST(:shas AS text[]), CAST(:errors AS text[])) AS o(id, sha, error)
        WHERE r.id = o.id
        """
    ), {"ids": ids, "shas": shas, "errors": errors})


def _quarantine_unloadable(engine: Engine, model_id: int, error: BaseException) -> None:
    message = f"database refused the normalised rows: {describe(error)}"
    with engine.begin() as conn:
        raw_text, raw_sha, source = conn.execute(
            text("SELECT raw::text, raw_sha, source FROM models_raw WHERE id = :id"), {"id": model_id}).one()
        _quarantine(conn, "load", source, model_id, orjson.loads(raw_text), message)
        _record_outcomes(conn, [model_id], [raw_sha], [message])
