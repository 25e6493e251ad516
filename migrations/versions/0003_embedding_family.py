"""embeddings.base_model_family: a copy of the version's family, so each large family gets its own partial HNSW
index and level 2 walks only compatible adapters.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('embeddings', sa.Column('base_model_family', sa.Text(), server_default='unknown', nullable=False,
                                          comment="the version's base-model family (per-family HNSW indexes)"))
    op.execute("UPDATE embeddings e SET base_model_family = v.base_model_family FROM model_versions v "
               "WHERE v.id = e.version_id")


def downgrade() -> None:
    op.drop_column('embeddings', 'base_model_family')
