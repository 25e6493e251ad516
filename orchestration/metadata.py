"""What every asset reports as Dagster metadata: its counts and how long it took, in one MaterializeResult."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from dagster import MaterializeResult


class AssetReport:
    """An asset's metadata. The clock starts when the report is made; `add` merges counts, `result` finishes it."""

    def __init__(self) -> None:
        self._started = time.perf_counter()
        self.metadata: dict[str, Any] = {}

    def add(self, counts: Any = None, /, **values: Any) -> None:
        """Merge a dataclass of counts (each field a metadata entry; None adds nothing) and named values."""
        if counts is not None:
            self.metadata.update(asdict(counts))
        self.metadata.update(values)

    def result(self, **rates: str) -> MaterializeResult:
        """The metadata with the seconds since the report was made; each keyword names an entry to report per
        second under that name (`models_per_second="items_received"`)."""
        seconds = time.perf_counter() - self._started
        per_second = {name: round(self.metadata[count] / seconds, 1) if seconds else 0.0
                      for name, count in rates.items()}
        return MaterializeResult(metadata={**self.metadata, **per_second, "seconds": round(seconds, 3)})
