"""Advisory locks that keep two runs from writing the same tables at once.

Which step takes which lock (orchestration takes them; the names below are the locks):
- `RAW` (exclusive): storing received items in models_raw (a crawl or a dump). Two ingests of one new item would
  both insert it.
- `CATALOGUE` (exclusive): normalising into the catalogue tables, resolving image references, rebuilding links.
  Two normalisations of one pending model collide on its key.
- `INDEX`: describe and embed take it shared, so the shards of one run work in parallel; each shard also takes
  its own `shard_lock` exclusively, so two runs never describe (and pay for) the same versions at once. The index
  step takes it exclusively: it deletes what is no longer served and publishes a generation built from every
  shard's vectors, so no shard may be writing then.
A long crawl therefore does not stop describing, and a long describe (a VLM on many versions) does not stop the
daily catalogue refresh: they write different tables and read each other's in single transactions.

Locks are session locks on a connection of their own: they die with it, so a killed run never leaves one held.
A second run waits at most `wait_seconds`, then is refused with ZooBusy naming who holds the lock.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from db.errors import sqlstate

log = logging.getLogger(__name__)

RAW = "models_raw"
CATALOGUE = "catalogue"
INDEX = "index"
# The two-key form of Postgres' advisory locks, with this first key: apart from the one-key locks (a crawl's
# listing lock) and from other applications sharing the database.
_NAMESPACE = int.from_bytes(hashlib.blake2b(b"zoo", digest_size=4).digest(), "big", signed=True)
_LOCK_TIMEOUT = "55P03"


class ZooBusy(RuntimeError):
    """Another run held the lock for longer than this one would wait."""


def shard_lock(shard: int, shards: int) -> str:
    return f"describe/embed shard {shard} of {shards}"


def _key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big", signed=True)


@contextmanager
def advisory_lock(engine: Engine, name: str, *, shared: bool = False, wait_seconds: float = 600.0,
                  holder: str = "zoo") -> Iterator[None]:
    """Hold the lock `name` (shared or exclusive) while the block runs; `holder` tells waiting runs who has it."""
    kind = "_shared" if shared else ""
    params = {"ns": _NAMESPACE, "key": _key(name)}
    with engine.connect() as conn:
        conn.execute(text("SELECT set_config('application_name', :holder, false)"), {"holder": holder[:60]})
        if not conn.execute(text(f"SELECT pg_try_advisory_lock{kind}(:ns, :key)"), params).scalar_one():
            _wait(conn, name, kind, params, wait_seconds)
        conn.commit()  # the lock is the session's: no transaction stays open while the block runs
        try:
            yield
        finally:
            _release(conn, name, kind, params)


def _wait(conn: Connection, name: str, kind: str, params: dict, wait_seconds: float) -> None:
    held_by = holders(conn, name)
    log.info("waiting up to %g s for the %s lock, held by %s", wait_seconds, name, held_by)
    if wait_seconds > 0:
        conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{int(wait_seconds * 1000)}ms"})
        try:
            conn.execute(text(f"SELECT pg_advisory_lock{kind}(:ns, :key)"), params)
            return
        except DBAPIError as error:
            if sqlstate(error) != _LOCK_TIMEOUT:
                raise
            conn.rollback()
            held_by = holders(conn, name) or held_by
    conn.execute(text("RESET application_name"))
    conn.commit()
    raise ZooBusy(f"another run holds the zoo's {name} lock ({held_by or 'it has just ended'}); "
                  f"waited {wait_seconds:g} s for it")


def _release(conn: Connection, name: str, kind: str, params: dict) -> None:
    try:
        conn.execute(text(f"SELECT pg_advisory_unlock{kind}(:ns, :key)"), params)
        conn.execute(text("RESET application_name"))
        conn.commit()
    except DBAPIError as error:  # the lock's connection was cut: the server released the lock with it
        log.warning("the connection holding the %s lock was lost before the work ended (%s)", name,
                    str(error.orig).strip().splitlines()[0] if error.orig else error)


def holders(conn: Connection, name: str) -> str:
    """Who holds the lock `name` now, as 'zoo_catalogue (pid 123, since 09:14:02)', or ''."""
    rows = conn.execute(text(
        """
        SELECT a.application_name, a.pid, to_char(a.query_start, 'YYYY-MM-DD HH24:MI:SS TZ') AS since, l.mode
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.classid::bigint = :ns AND l.objid::bigint = :key
        ORDER BY a.query_start
        """
    ), {"ns": _NAMESPACE & 0xFFFFFFFF, "key": _key(name) & 0xFFFFFFFF}).all()
    return "; ".join(f"{row.application_name or 'a session'} (pid {row.pid}, since {row.since}"
                     f"{', shared' if row.mode == 'ShareLock' else ''})" for row in rows)
