"""Queued generate/edit jobs of the HTTP API: the procrastinate queue's schema (its tables, types and functions,
version 3.10.0, from migrations/sql/) and `studio_jobs`, the requests' inputs and results.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# The queue library's own schema as that version ships it: a migration must not change when the library does
# (a later version's upgrade scripts go into later migrations).
PROCRASTINATE_SCHEMA = Path(__file__).resolve().parent.parent / "sql" / "procrastinate-3.10.0-schema.sql"


def upgrade() -> None:
    # The driver's own execute: the file's PL/pgSQL holds '%' and ':' that bound-parameter parsing would misread.
    op.get_bind().connection.driver_connection.execute(PROCRASTINATE_SCHEMA.read_text(encoding="utf-8"))
    op.create_table('studio_jobs',
    sa.Column('id', sa.Text(), nullable=False, comment='the public job id (random, not guessable)'),
    sa.Column('kind', sa.Text(), nullable=False, comment='generate or edit'),
    sa.Column('request', postgresql.JSONB(astext_type=sa.Text()), nullable=False, comment="the request's parameters"),
    sa.Column('input_image', sa.LargeBinary(), nullable=True, comment='edit: the image to edit (PNG)'),
    sa.Column('reference_image', sa.LargeBinary(), nullable=True, comment='edit: the style reference (PNG)'),
    sa.Column('queue_job_id', sa.BigInteger(), nullable=True, comment="procrastinate_jobs.id: the queue's status of it"),
    sa.Column('result_png', sa.LargeBinary(), nullable=True, comment='the image made, with A1111 parameters'),
    sa.Column('sidecar', postgresql.JSONB(astext_type=sa.Text()), nullable=True, comment='model and version ids, prompts, timings'),
    sa.Column('error', sa.Text(), nullable=True, comment='why the job failed, in one line'),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_studio_jobs_queue_job_id'), 'studio_jobs', ['queue_job_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_studio_jobs_queue_job_id'), table_name='studio_jobs')
    op.drop_table('studio_jobs')
    op.execute("""
        DO $$ DECLARE f record; BEGIN
            FOR f IN SELECT p.oid::regprocedure AS signature FROM pg_proc p
                     WHERE p.proname LIKE 'procrastinate\\_%' AND p.pronamespace = 'public'::regnamespace LOOP
                EXECUTE 'DROP FUNCTION ' || f.signature || ' CASCADE';
            END LOOP;
        END $$""")
    op.execute("DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs, "
               "procrastinate_workers CASCADE")
    op.execute("DROP TYPE IF EXISTS procrastinate_job_to_defer_v1, procrastinate_job_event_type, "
               "procrastinate_job_status CASCADE")
