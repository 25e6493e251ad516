"""The models and pages a crawl has seen go to tables of their own (crawl_seen_models, crawl_seen_pages) instead of
an array on crawl_state that every page rewrote whole and the crawler mirrored in memory; stale_pages counts pages
in a row that listed nothing new. Cursor cycles and stuck listings are noticed from these.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('crawl_seen_models',
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('model_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['key'], ['crawl_state.key'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key', 'model_id')
    )
    op.create_table('crawl_seen_pages',
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('url_md5', sa.Text(), nullable=False, comment="md5 of the page's URL (its cursor)"),
    sa.Column('page', sa.Integer(), nullable=False, comment='its number in the crawl, from 1'),
    sa.ForeignKeyConstraint(['key'], ['crawl_state.key'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('key', 'url_md5')
    )
    op.add_column('crawl_state', sa.Column('stale_pages', sa.Integer(), server_default='0', nullable=False,
                                           comment='pages in a row that listed no model new to this crawl'))
    # An unfinished crawl keeps what it had seen.
    op.execute("INSERT INTO crawl_seen_models (key, model_id) SELECT DISTINCT key, unnest(seen_ids) FROM crawl_state "
               "WHERE finished_at IS NULL")
    op.drop_column('crawl_state', 'seen_ids')


def downgrade() -> None:
    op.add_column('crawl_state', sa.Column('seen_ids', sa.ARRAY(sa.BigInteger()), server_default='{}',
                                           nullable=False))
    op.execute("UPDATE crawl_state s SET seen_ids = coalesce((SELECT array_agg(model_id ORDER BY model_id) "
               "FROM crawl_seen_models m WHERE m.key = s.key), '{}')")
    op.drop_column('crawl_state', 'stale_pages')
    op.drop_table('crawl_seen_pages')
    op.drop_table('crawl_seen_models')
