"""History of the catalogue: model_changes and the raw JSON of changed models (issue 14).

model_changes says what each refresh run (crawl_runs) changed per model; models_raw_history keeps each item as it was
before a run changed it (db/history.py writes both). The views recent_changes and catalogue_growth read them.
A catalogue that exists already gets its history started: each stored model counts as added by the run during which
it was first stored, and each deleted one as deleted by the run during which it was marked.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

VIEWS = {
    "recent_changes": (
        """
        CREATE VIEW recent_changes AS
        SELECT c.changed_at, c.run_id, r.source AS run_source, c.model_id,
               coalesce(m.name, raw.raw->>'name') AS model_name,
               coalesce(m.type, raw.raw->>'type') AS model_type,
               c.change, c.fields,
               'https://civitai.com/models/' || c.model_id AS civitai_url
        FROM model_changes c
        JOIN crawl_runs r ON r.id = c.run_id
        LEFT JOIN models m ON m.id = c.model_id
        LEFT JOIN models_raw raw ON raw.id = c.model_id
        ORDER BY c.changed_at DESC, c.model_id
        """,
        "Every change a refresh recorded, newest first, with the model's name and type (filter on changed_at for "
        "'this week')",
        {
            "changed_at": "when the change was stored",
            "run_id": "the refresh run that saw it (crawl_runs.id)",
            "run_source": "what the run read: 'api' or 'dump:<file>'",
            "model_id": "Civitai model id",
            "model_name": "the model's current name",
            "model_type": "the model's current type",
            "change": "added, changed, deleted or restored",
            "fields": "what changed: description, files, images, licence, nsfw, other, status, versions",
            "civitai_url": "the model's page on Civitai",
        },
    ),
    "catalogue_growth": (
        """
        CREATE VIEW catalogue_growth AS
        WITH per_run AS (
            SELECT c.run_id, coalesce(m.type, raw.raw->>'type', 'unknown') AS model_type,
                   count(*) FILTER (WHERE c.change = 'added') AS added,
                   count(*) FILTER (WHERE c.change = 'changed') AS changed,
                   count(*) FILTER (WHERE c.change = 'deleted') AS deleted,
                   count(*) FILTER (WHERE c.change = 'restored') AS restored
            FROM model_changes c
            LEFT JOIN models m ON m.id = c.model_id
            LEFT JOIN models_raw raw ON raw.id = c.model_id
            GROUP BY 1, 2
        )
        SELECT p.run_id, r.started_at AS run_started_at, r.source AS run_source, p.model_type,
               p.added, p.changed, p.deleted, p.restored,
               (sum(p.added - p.deleted + p.restored)
                    OVER (PARTITION BY p.model_type ORDER BY p.run_id))::bigint AS models_listed
        FROM per_run p JOIN crawl_runs r ON r.id = p.run_id
        ORDER BY p.run_id, p.model_type
        """,
        "Per refresh run and model type: models added, changed, deleted and restored, and how many were listed "
        "after the run",
        {
            "run_id": "the refresh run (crawl_runs.id)",
            "run_started_at": "when the run started",
            "run_source": "what the run read: 'api' or 'dump:<file>'",
            "model_type": "Civitai model type (the model's current one)",
            "added": "models first stored by this run",
            "changed": "models whose description, versions, files, images, licence, NSFW flags, status or other "
                       "fields this run changed",
            "deleted": "models this run found deleted (404 on Civitai)",
            "restored": "deleted models this run found listed again",
            "models_listed": "models of the type known and not deleted after this run (running total)",
        },
    ),
}


def upgrade() -> None:
    op.create_table(
        'model_changes',
        sa.Column('run_id', sa.BigInteger(), nullable=False,
                  comment='the refresh run that saw the change (crawl_runs.id)'),
        sa.Column('model_id', sa.BigInteger(), nullable=False, comment='Civitai model id (models_raw.id)'),
        sa.Column('change', sa.Text(), nullable=False, comment='added, changed, deleted or restored'),
        sa.Column('fields', postgresql.ARRAY(sa.Text()), server_default='{}', nullable=False,
                  comment='what changed: description, files, images, licence, nsfw, other, status, versions (empty '
                          'for added and deleted; counts alone are not history)'),
        sa.Column('changed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False,
                  comment='when the change was stored'),
        sa.CheckConstraint("change IN ('added', 'changed', 'deleted', 'restored')", name='ck_model_changes_change'),
        sa.ForeignKeyConstraint(['run_id'], ['crawl_runs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('run_id', 'model_id'),
        comment='What each refresh run changed, per model: added, changed (which fields), deleted or restored',
    )
    op.create_index('ix_model_changes_model_id', 'model_changes', ['model_id'])
    op.create_index('ix_model_changes_changed_at', 'model_changes', ['changed_at'])
    op.create_table(
        'models_raw_history',
        sa.Column('run_id', sa.BigInteger(), nullable=False,
                  comment='the refresh run that replaced this item (crawl_runs.id)'),
        sa.Column('model_id', sa.BigInteger(), nullable=False, comment='Civitai model id'),
        sa.Column('raw', postgresql.JSONB(astext_type=sa.Text()), nullable=False, comment='the item as it was (JSON)'),
        sa.Column('raw_sha', sa.Text(), nullable=False, comment="blake2b of the item's canonical JSON"),
        sa.Column('source', sa.Text(), nullable=False, comment="where the item came from: 'api' or 'dump:<file>'"),
        sa.Column('fetched_at', sa.DateTime(timezone=True), nullable=False,
                  comment='when this content was received: it held from then until replaced_at'),
        sa.Column('replaced_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False,
                  comment='when the refresh run replaced it'),
        sa.ForeignKeyConstraint(['run_id', 'model_id'], ['model_changes.run_id', 'model_changes.model_id'],
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('run_id', 'model_id'),
        comment='Each /models item as it was before a refresh run changed it (models_raw holds the current one)',
    )
    # History starts with what is stored: each model added by the run during which it was first stored (a run opens
    # before it stores anything), each deleted one deleted by the run during which it was marked.
    for change, moment in (("added", "first_fetched_at"), ("deleted", "deleted_at")):
        op.execute(f"""
            INSERT INTO model_changes (run_id, model_id, change, changed_at)
            SELECT run_id, id, '{change}', {moment} FROM (
                SELECT r.id, r.{moment},
                       (SELECT max(c.id) FROM crawl_runs c WHERE c.started_at <= r.{moment}) AS run_id
                FROM models_raw r WHERE r.{moment} IS NOT NULL) s
            WHERE run_id IS NOT NULL
            ON CONFLICT (run_id, model_id) DO NOTHING
        """)
    for name, (definition, comment, columns) in VIEWS.items():
        op.execute(definition)
        op.execute(f"COMMENT ON VIEW {name} IS {_literal(comment)}")
        for column, text in columns.items():
            op.execute(f"COMMENT ON COLUMN {name}.{column} IS {_literal(text)}")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table('models_raw_history')
    op.drop_index('ix_model_changes_changed_at', table_name='model_changes')
    op.drop_index('ix_model_changes_model_id', table_name='model_changes')
    op.drop_table('model_changes')
