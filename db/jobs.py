"""The studio's queued jobs (studio_jobs): what a request asked for and what it made. The queue library's table
(procrastinate_jobs, schema from migration 0008) holds whether a job waits, runs or failed; this module reads both,
so any server process answers a job's status."""

from __future__ import annotations

from sqlalchemy import Connection, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql import bindparam

RETENTION_DAYS = 7  # finished jobs (and their images) are deleted after this long

_STATUS = """
    SELECT j.id, j.kind, j.request, j.sidecar, j.error, j.created_at, j.started_at, j.finished_at,
           j.result_png IS NOT NULL AS has_image, q.status::text AS queue_status
    FROM studio_jobs j LEFT JOIN procrastinate_jobs q ON q.id = j.queue_job_id WHERE j.id = :id"""


def create_job(conn: Connection, job_id: str, kind: str, request: dict, input_image: bytes | None = None,
               reference_image: bytes | None = None) -> None:
    conn.execute(text("INSERT INTO studio_jobs (id, kind, request, input_image, reference_image) "
                      "VALUES (:id, :kind, :request, :input, :reference)").bindparams(bindparam("request", type_=JSONB)),
                 {"id": job_id, "kind": kind, "request": request, "input": input_image, "reference": reference_image})


def set_queue_job(conn: Connection, job_id: str, queue_job_id: int) -> None:
    conn.execute(text("UPDATE studio_jobs SET queue_job_id = :q WHERE id = :id"), {"q": queue_job_id, "id": job_id})


def job_inputs(conn: Connection, job_id: str) -> dict | None:
    """What a worker needs to run the job (kind, request, images); marks it started."""
    row = conn.execute(text("UPDATE studio_jobs SET started_at = now(), error = NULL WHERE id = :id "
                            "RETURNING kind, request, input_image, reference_image"), {"id": job_id}).mappings().first()
    return dict(row) if row else None


def finish_job(conn: Connection, job_id: str, *, png: bytes | None = None, sidecar: dict | None = None,
               error: str | None = None) -> None:
    conn.execute(text("UPDATE studio_jobs SET result_png = :png, sidecar = :sidecar, error = :error, "
                      "finished_at = now() WHERE id = :id").bindparams(bindparam("sidecar", type_=JSONB)),
                 {"id": job_id, "png": png, "sidecar": sidecar, "error": error})


def job_status(conn: Connection, job_id: str) -> dict | None:
    """The job's row with its queue status (None for an unknown id)."""
    row = conn.execute(text(_STATUS), {"id": job_id}).mappings().first()
    return dict(row) if row else None


def job_image(conn: Connection, job_id: str) -> bytes | None:
    return conn.execute(text("SELECT result_png FROM studio_jobs WHERE id = :id"), {"id": job_id}).scalar()


def queue_depth(conn: Connection, queue: str) -> tuple[int, int]:
    """(waiting, running) jobs of a queue."""
    row = conn.execute(text("SELECT count(*) FILTER (WHERE status = 'todo'), count(*) FILTER (WHERE status = 'doing') "
                            "FROM procrastinate_jobs WHERE queue_name = :queue"), {"queue": queue}).one()
    return int(row[0]), int(row[1])


def purge_finished(conn: Connection, days: int = RETENTION_DAYS) -> int:
    """Delete jobs finished more than `days` ago (their images with them)."""
    return conn.execute(text("DELETE FROM studio_jobs WHERE finished_at < now() - make_interval(days => :days)"),
                        {"days": days}).rowcount


def status_name(row: dict) -> str:
    """queued, running, succeeded, failed or cancelled, from the job's row and its queue status."""
    if row["has_image"]:
        return "succeeded"
    queue = row["queue_status"]
    if row["error"] or queue in ("failed", "aborted"):
        return "failed"
    if queue == "cancelled":
        return "cancelled"
    if queue == "doing" or (row["started_at"] is not None and queue != "todo"):
        return "running"
    return "queued"
