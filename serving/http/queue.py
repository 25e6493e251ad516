"""The studio's job queue: procrastinate (a maintained Postgres-backed task queue), chosen over pgqueuer and over a
jobs table of our own.

- procrastinate 3.10 runs on psycopg 3 (the driver the project already uses), its schema is one SQL file that
  migration 0008 applies (vendored at its version, so the migration never changes under us) and `alembic check`
  ignores through migrations/env.py, it keeps every job's status in `procrastinate_jobs` (todo, doing, succeeded,
  failed, cancelled) where any process reads it, wakes workers with LISTEN/NOTIFY, and notices a worker that died
  mid-job by its heartbeat. Its worker runs inside the server's event loop and runs our synchronous task in a thread.
- pgqueuer 1.6 also speaks psycopg 3, but moves a finished job out of its queue table into a log, so a job's status
  is a search of two tables; it brings typer, uvloop and pydantic-settings along, and its schema is installed by
  its CLI, not as a plain SQL file a migration can hold.
- A table polled with SELECT ... FOR UPDATE SKIP LOCKED would be a queue of our own: heartbeats, wake-ups and
  stalled-job recovery are what a library already does and tests.

Each server process runs one worker with concurrency 1: one job at a time per warm pipeline; several processes
(`zoo serve --workers N`, or replicas on several hosts sharing the database) share the queue. The inputs and
results live in `studio_jobs` (db/jobs.py): the queue carries only the job's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import procrastinate
from sqlalchemy import Engine

log = logging.getLogger(__name__)

QUEUE = "studio"
TASK = "zoo.studio.run_job"
STALLED_AFTER_SECONDS = 60.0  # a worker silent this long died: its job is retried by a live one


class JobQueue:
    """The procrastinate app on the zoo's database, its one task (run a studio job by id), and this process's
    worker."""

    def __init__(self, db: Engine, run: Callable[[str], None]) -> None:
        conninfo = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        connector = procrastinate.PsycopgConnector(conninfo=conninfo, min_size=1, max_size=4)
        self.app = procrastinate.App(connector=connector)
        self.task = self.app.task(name=TASK, queue=QUEUE)(run)
        self._worker: asyncio.Task | None = None

    async def open(self) -> None:
        await self.app.open_async()

    async def defer(self, job_id: str) -> int:
        """Queue a studio job; returns the queue's id for it."""
        return await self.task.defer_async(job_id=job_id)

    async def start_worker(self) -> None:
        """Retry the jobs of workers that died mid-job, then work this process's share of the queue."""
        manager = self.app.job_manager
        for job in await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=STALLED_AFTER_SECONDS):
            log.warning("studio job %s was running on a worker that stopped; retrying it", job.id)
            await manager.retry_job(job)
        self._worker = asyncio.create_task(self.app.run_worker_async(
            queues=[QUEUE], concurrency=1, wait=True, install_signal_handlers=False, delete_jobs="successful",
            stalled_worker_timeout=STALLED_AFTER_SECONDS, shutdown_graceful_timeout=5.0))

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker
        await self.app.close_async()
