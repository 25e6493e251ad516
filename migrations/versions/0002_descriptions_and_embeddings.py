"""Descriptions (the refiner's cache) and embeddings ([text || image] vectors per space).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from alembic import op
import pgvector.sqlalchemy
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('descriptions',
    sa.Column('version_id', sa.BigInteger(), nullable=False),
    sa.Column('describer', sa.Text(), nullable=False),
    sa.Column('prompt_version', sa.Text(), nullable=False),
    sa.Column('input_sha', sa.Text(), nullable=False, comment='hash of the card the description was made from'),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('trigger_words', sa.ARRAY(sa.Text()), server_default='{}', nullable=False),
    sa.Column('recommended_weight', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('version_id', 'describer', 'prompt_version')
    )
    op.create_index(op.f('ix_descriptions_kind'), 'descriptions', ['kind'], unique=False)
    op.create_table('embeddings',
    sa.Column('version_id', sa.BigInteger(), nullable=False),
    sa.Column('space', sa.Text(), nullable=False, comment='encoder(s) and dimensions, e.g. minilm-l6-v2|384+0'),
    sa.Column('role', sa.Text(), nullable=False, comment='checkpoint or adapter: each has its own index'),
    sa.Column('emb', pgvector.sqlalchemy.vector.VECTOR(), nullable=False),
    sa.Column('text_dim', sa.Integer(), nullable=False),
    sa.Column('image_dim', sa.Integer(), nullable=False),
    sa.Column('images_embedded', sa.Integer(), server_default='0', nullable=False),
    sa.Column('input_sha', sa.Text(), nullable=False, comment='hash of the embedded text, image URLs and encoder'),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('version_id', 'space')
    )


def downgrade() -> None:
    op.drop_table('embeddings')
    op.drop_index(op.f('ix_descriptions_kind'), table_name='descriptions')
    op.drop_table('descriptions')
