"""The in-memory search index's stored generations: serving processes load it from here (no file that only the
pipeline's machine can see), and reload when retrieval_index writes a newer one.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('search_index_generations',
    sa.Column('space', sa.Text(), nullable=False, comment='the embedding space the index serves'),
    sa.Column('generation', sa.BigInteger(), nullable=False, comment='increases with every build'),
    sa.Column('built_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('versions', sa.Integer(), nullable=False, comment='served versions the index holds'),
    sa.Column('bytes', sa.BigInteger(), nullable=False, comment='size of its stored parts'),
    sa.Column('manifest', postgresql.JSONB(astext_type=sa.Text()), nullable=False,
              comment='the arrays (name, dtype, shape) and settings the parts hold'),
    sa.PrimaryKeyConstraint('space', 'generation')
    )
    op.create_table('search_index_parts',
    sa.Column('space', sa.Text(), nullable=False),
    sa.Column('generation', sa.BigInteger(), nullable=False),
    sa.Column('part', sa.Text(), nullable=False, comment="the array's name in the manifest"),
    sa.Column('chunk', sa.Integer(), nullable=False, comment='0, 1, ...: concatenated in order'),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['space', 'generation'], ['search_index_generations.space',
                                                      'search_index_generations.generation'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('space', 'generation', 'part', 'chunk')
    )
    # Float arrays do not compress: store them out of line as they are, so writing and loading skip pglz.
    op.execute("ALTER TABLE search_index_parts ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table('search_index_parts')
    op.drop_table('search_index_generations')
