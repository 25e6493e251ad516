"""Rankers learned from usage: one LightGBM model per search level, with the features they read and their
training metrics, written by the retrieval_ranker asset.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('retrieval_rankers',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('space', sa.Text(), nullable=False, comment='the embedding space it ranks in'),
    sa.Column('generation', sa.BigInteger(), nullable=False, comment='the index generation it was trained on'),
    sa.Column('trained_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('features', postgresql.JSONB(astext_type=sa.Text()), nullable=False,
              comment='the feature columns, in order'),
    sa.Column('checkpoint_model', sa.Text(), nullable=True, comment='LightGBM model text of level 1'),
    sa.Column('adapter_model', sa.Text(), nullable=True, comment='LightGBM model text of level 2'),
    sa.Column('metrics', postgresql.JSONB(astext_type=sa.Text()), nullable=False,
              comment='training data, validation against hand weights'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_retrieval_rankers_space'), 'retrieval_rankers', ['space'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_retrieval_rankers_space'), table_name='retrieval_rankers')
    op.drop_table('retrieval_rankers')
