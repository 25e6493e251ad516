"""What serving shows and how: each served version's role (checkpoint, content, enhancer, negative) and each model's
content level (PG .. XXX) with the reason, decided by the retrieval_index asset from the catalogue's evidence.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('models', sa.Column('content_level', sa.Integer(), nullable=True,
                                      comment="how far the model goes, like Civitai's browsing levels: 1 PG, 2 PG-13, 4 R, 8 X, 16 XXX"))
    op.add_column('models', sa.Column('content_level_reason', sa.Text(), nullable=True,
                                      comment='what set the content level'))
    op.create_table('version_roles',
    sa.Column('version_id', sa.BigInteger(), nullable=False),
    sa.Column('role', sa.Text(), nullable=False, comment='checkpoint, content, enhancer or negative'),
    sa.Column('reason', sa.Text(), nullable=False, comment='the evidence the role was decided from'),
    sa.Column('decided_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('version_id')
    )


def downgrade() -> None:
    op.drop_table('version_roles')
    op.drop_column('models', 'content_level_reason')
    op.drop_column('models', 'content_level')
