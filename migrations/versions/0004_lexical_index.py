"""Words of the embedded texts (embeddings.lexemes, a GIN index) and their document frequencies, for the BM25
signal of retrieval. Existing vectors get their words at the next zoo_embeddings run, without re-encoding.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('embeddings', sa.Column('lexemes', postgresql.TSVECTOR(), nullable=True,
                                          comment="the embedded text's words (BM25 in retrieval)"))
    op.add_column('embeddings', sa.Column('lexical_length', sa.Integer(), server_default='0', nullable=False,
                                          comment="how many words the embedded text has (BM25's length)"))
    op.create_index('ix_embeddings_lexemes', 'embeddings', ['lexemes'], unique=False, postgresql_using='gin')
    op.create_table('lexical_terms',
    sa.Column('space', sa.Text(), nullable=False),
    sa.Column('role', sa.Text(), nullable=False),
    sa.Column('lexeme', sa.Text(), nullable=False, comment="a word as to_tsvector('english') stems it"),
    sa.Column('documents', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('space', 'role', 'lexeme')
    )
    op.create_table('lexical_corpus',
    sa.Column('space', sa.Text(), nullable=False),
    sa.Column('role', sa.Text(), nullable=False),
    sa.Column('documents', sa.Integer(), nullable=False),
    sa.Column('average_length', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('space', 'role')
    )


def downgrade() -> None:
    op.drop_table('lexical_corpus')
    op.drop_table('lexical_terms')
    op.drop_index('ix_embeddings_lexemes', table_name='embeddings', postgresql_using='gin')
    op.drop_column('embeddings', 'lexical_length')
    op.drop_column('embeddings', 'lexemes')
