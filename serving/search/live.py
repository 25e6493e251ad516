"""The newest generation of a space's search index, held by a long-lived process and swapped when a newer one is
stored: the retrieval_index asset writes a generation and NOTIFYs `zoo_search_index`; a watcher thread here
LISTENs (and polls, in case a notification is missed), loads the new generation in the background and swaps one
reference. A query takes the reference once and keeps using that engine to its end, so no query fails or waits
during a swap, and the old generation's memory is freed when its last query ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
from sqlalchemy import Engine

from db.descriptions import DescriberKey
from db.rankers import newest_ranker_id
from db.search_index_store import CHANNEL, current_generation
from embedding.search_index import SearchIndex, build_search_index, load_search_index

log = logging.getLogger(__name__)


class IndexNotReady(RuntimeError):
    """The zoo has no search index for this space yet (nothing refreshed, or another preset's space)."""


class LiveIndex:
    """`current` is the search engine of the newest loaded generation; `watch()` keeps it current."""

    def __init__(self, db: Engine, space: str, dimension: int, make_engine: Callable[[SearchIndex], object],
                 describer: DescriberKey, *, poll_seconds: float = 30.0) -> None:
        self.db, self.space, self.dimension = db, space, dimension
        self.make_engine, self.describer = make_engine, describer
        self.poll_seconds = poll_seconds
        self.generation: int | None = None
        self.ranker: int | None = None  # the newest stored ranker's id when the engine was made
        self.swaps = 0
        self.load_seconds = 0.0
        self._current = None
        self._lock = threading.Lock()  # one load at a time; queries never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_poll = 0.0

    @property
    def current(self):
        """The engine to answer a query with (load the first generation on first use)."""
        engine = self._current
        if engine is None:
            self.refresh()
            engine = self._current
        return engine

    def refresh(self) -> bool:
        """Load the newest generation if it is newer than the one held, or remake the engine when a newer ranker
        was stored; True when a swap happened. With no stored generation (a zoo indexed before generations
        existed) the index is built from the tables, in memory."""
        with self._lock:
            with self.db.connect() as conn:
                newest, ranker = current_generation(conn, self.space), newest_ranker_id(conn, self.space)
            held = self._current is not None
            if held and (newest is None or newest == self.generation) and ranker == self.ranker:
                return False
            started = time.perf_counter()
            if held and newest in (None, self.generation):  # a new ranker for the index held: no reload
                index = self._current.index
            else:
                index = load_search_index(self.db, self.space, newest) if newest is not None else None
            if index is None:
                with self.db.connect() as conn:
                    index = build_search_index(conn, self.space, self.dimension, self.describer)
            engine = self.make_engine(index)
            self.ranker = ranker
            self.load_seconds = time.perf_counter() - started
            self._current, self.generation = engine, newest
            self.swaps += 1
            log.info("search index %s generation %s loaded in %.2f s", self.space, newest, self.load_seconds)
            return True

    def watch(self) -> None:
        """Keep `current` on the newest generation from a background thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name=f"search-index-{self.space}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_seconds + 5)

    def _watch(self) -> None:
        url = self.db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._refresh_logged()
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=min(self.poll_seconds, 1.0), stop_after=1):
                            if notice.payload.split(":", 1)[0] == self.space:
                                self._refresh_logged()
                        if self._polled():
                            self._refresh_logged()
            except psycopg.Error as error:  # the database went away: retry, keep serving what is loaded
                log.warning("search index watcher: %s; retrying", error)
                self._stop.wait(min(self.poll_seconds, 5.0))

    def _polled(self) -> bool:
        """True once every poll_seconds (a missed notification costs at most that long)."""
        now = time.monotonic()
        if now - self._last_poll >= self.poll_seconds:
            self._last_poll = now
            return True
        return False

    def _refresh_logged(self) -> None:
        try:
            self.refresh()
        except Exception:  # noqa: BLE001 - a failed load keeps the loaded generation serving
            log.exception("search index %s: loading a new generation failed; the old one keeps serving", self.space)

