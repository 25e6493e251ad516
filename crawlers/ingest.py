"""Store a batch of received items raw, whatever the source (live pages or a dump): the shared first step."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from sqlalchemy import Connection

from db.raw_store import (
    RawItem,
    RawItemError,
    UpsertCounts,
    canonical_json,
    quarantine,
    to_raw_item,
    upsert_raw_items,
)

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What a crawl or dump ingest did; also the crawl_runs row."""

    pages: int = 0
    items_received: int = 0
    models_new: int = 0
    models_changed: int = 0
    models_unchanged: int = 0
    models_deleted: int = 0
    quarantined: int = 0

    def count_quarantined(self, new: bool) -> None:
        """A bad item: newly quarantined, or one already in quarantine (the same payload, kept once: unchanged).
        So the counts add up: items_received = models_new + models_changed + models_unchanged + quarantined."""
        if new:
            self.quarantined += 1
        else:
            self.models_unchanged += 1

    def add(self, counts: UpsertCounts) -> None:
        self.models_new += counts.new
        self.models_changed += counts.changed
        self.models_unchanged += counts.unchanged

    def as_dict(self) -> dict:
        return asdict(self)


def store_items(conn: Connection, items: Iterable[object], source: str, report: IngestReport,
                source_shas: Iterable[str | None] | None = None, run_id: int | None = None) -> list[int]:
    """Upsert the storable items raw and quarantine the rest; returns the ids stored.

    `source_shas`, when given, are the hashes of each item's bytes as received (dump lines), in order; `run_id`
    is the refresh run (crawl_runs.id) the catalogue's history records the changes under.
    """
    good: list[RawItem] = []
    shas = iter(source_shas) if source_shas is not None else None
    for item in items:
        report.items_received += 1
        try:
            good.append(to_raw_item(item, next(shas) if shas is not None else None))
        except RawItemError as error:
            log.warning("item quarantined: %s", error)
            report.count_quarantined(
                quarantine(conn, stage="crawl", source=source, error=str(error), payload=_storable(item)))
    report.add(upsert_raw_items(conn, good, source, run_id))
    return [item.id for item in good]


def _storable(item: object) -> object:
    """The payload as JSON if it can be encoded, else its repr (quarantine must never fail in turn)."""
    try:
        canonical_json(item)
        return item
    except Exception:  # noqa: BLE001
        return {"unencodable_repr": repr(item)[:100_000]}
