"""Initial schema: the vector extension, the catalogue tables and the views people query.

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None

VIEW_NAMES = ["served_model_versions", "adapters_per_base_model", "nsfw_share_by_type", "top_adapter_checkpoint_pairs"]

VIEWS = [
    # Exactly the versions serving may return: SFW, not deleted or moderated away, listed, with a primary file.
    """
    CREATE VIEW served_model_versions AS
    SELECT v.id AS version_id, v.model_id, m.name AS model_name, m.type AS model_type, v.name AS version_name,
           v.base_model, v.base_model_family, v.trained_words, m.tags, m.download_count AS model_download_count,
           v.download_count AS version_download_count, m.allow_commercial_use,
           f.id AS primary_file_id, f.name AS primary_file_name, f.sha256 AS primary_file_sha256,
           coalesce(f.download_url, v.download_url) AS download_url
    FROM model_versions v
    JOIN models m ON m.id = v.model_id
    JOIN LATERAL (
        SELECT pf.id, pf.name, pf.sha256, pf.download_url FROM model_files pf
        WHERE pf.version_id = v.id AND pf.is_primary ORDER BY pf.id LIMIT 1
    ) f ON true
    WHERE NOT m.nsfw AND m.deleted_at IS NULL AND v.removed_at IS NULL
      AND coalesce(m.mode, '') NOT IN ('Archived', 'TakenDown')
    """,
    """
    CREATE VIEW adapters_per_base_model AS
    SELECT v.base_model, v.base_model_family, m.type,
           count(DISTINCT m.id) AS models, count(*) AS versions,
           count(*) FILTER (WHERE NOT m.nsfw) AS sfw_versions
    FROM model_versions v JOIN models m ON m.id = v.model_id
    WHERE m.type <> 'Checkpoint' AND v.removed_at IS NULL
    GROUP BY 1, 2, 3
    """,
    """
    CREATE VIEW nsfw_share_by_type AS
    SELECT m.type, count(*) AS models, count(*) FILTER (WHERE m.nsfw) AS nsfw_models,
           round(avg(m.nsfw::int)::numeric, 4) AS nsfw_share,
           count(*) FILTER (WHERE m.nsfw_reason LIKE 'flag%') AS by_flag,
           count(*) FILTER (WHERE m.nsfw_reason LIKE 'level%') AS by_level,
           count(*) FILTER (WHERE m.nsfw_reason LIKE 'images%') AS by_images
    FROM models m GROUP BY m.type
    """,
    """
    CREATE VIEW top_adapter_checkpoint_pairs AS
    SELECT l.adapter_version_id, am.name AS adapter_name, am.type AS adapter_type, am.nsfw AS adapter_nsfw,
           l.checkpoint_version_id, cm.name AS checkpoint_name, cm.nsfw AS checkpoint_nsfw,
           l.image_count, l.sfw_image_count, l.avg_weight, l.family_compatible
    FROM adapter_checkpoint_links l
    JOIN model_versions av ON av.id = l.adapter_version_id JOIN models am ON am.id = av.model_id
    JOIN model_versions cv ON cv.id = l.checkpoint_version_id JOIN models cm ON cm.id = cv.model_id
    ORDER BY l.image_count DESC, l.adapter_version_id, l.checkpoint_version_id
    """,
]


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table('crawl_runs',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('params', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('status', sa.Text(), nullable=False, comment='running, succeeded, failed'),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('pages', sa.Integer(), server_default='0', nullable=False),
    sa.Column('items_received', sa.Integer(), server_default='0', nullable=False),
    sa.Column('models_new', sa.Integer(), server_default='0', nullable=False),
    sa.Column('models_changed', sa.Integer(), server_default='0', nullable=False),
    sa.Column('models_unchanged', sa.Integer(), server_default='0', nullable=False),
    sa.Column('models_deleted', sa.Integer(), server_default='0', nullable=False),
    sa.Column('quarantined', sa.Integer(), server_default='0', nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('crawl_state',
    sa.Column('key', sa.Text(), nullable=False, comment='source and filters of the listing'),
    sa.Column('params', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('next_url', sa.Text(), nullable=True, comment='the page to fetch next; null once finished'),
    sa.Column('pages_done', sa.Integer(), server_default='0', nullable=False),
    sa.Column('items_seen', sa.Integer(), server_default='0', nullable=False),
    sa.Column('seen_ids', sa.ARRAY(sa.BigInteger()), server_default='{}', nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('derived_stamps',
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('stamp', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('models',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('description_text', sa.Text(), server_default='', nullable=False),
    sa.Column('creator', sa.Text(), nullable=True),
    sa.Column('tags', sa.ARRAY(sa.Text()), server_default='{}', nullable=False),
    sa.Column('schema_era', sa.Text(), nullable=False, comment="'2023' or '2024+' API shape"),
    sa.Column('nsfw_flag', sa.Boolean(), nullable=False, comment="the API's nsfw flag as given"),
    sa.Column('nsfw_level', sa.Integer(), nullable=True, comment="the API's nsfwLevel bitmask (2024+)"),
    sa.Column('nsfw', sa.Boolean(), nullable=False, comment="the zoo's decision (crawlers.nsfw)"),
    sa.Column('nsfw_reason', sa.Text(), nullable=False),
    sa.Column('poi', sa.Boolean(), nullable=True),
    sa.Column('minor', sa.Boolean(), nullable=True),
    sa.Column('mode', sa.Text(), nullable=True, comment='Archived / TakenDown when moderated'),
    sa.Column('availability', sa.Text(), nullable=True),
    sa.Column('allow_commercial_use', sa.ARRAY(sa.Text()), server_default='{}', nullable=False),
    sa.Column('allow_no_credit', sa.Boolean(), nullable=True),
    sa.Column('allow_derivatives', sa.Boolean(), nullable=True),
    sa.Column('allow_different_license', sa.Boolean(), nullable=True),
    sa.Column('download_count', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('favorite_count', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('thumbs_up_count', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('comment_count', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('rating', sa.Float(), nullable=True),
    sa.Column('rating_count', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_models_type'), 'models', ['type'], unique=False)
    op.create_table('models_raw',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('raw', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('raw_sha', sa.Text(), nullable=False, comment="blake2b of the item's canonical JSON"),
    sa.Column('source_sha', sa.Text(), nullable=False, comment='blake2b of the bytes as received (a dump line), so an unchanged dump line is skipped unparsed'),
    sa.Column('source', sa.Text(), nullable=False, comment="'api' or 'dump:<file name>'"),
    sa.Column('first_fetched_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('fetched_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('normalised_sha', sa.Text(), nullable=True, comment='raw_sha of the last normalisation attempt'),
    sa.Column('normalise_error', sa.Text(), nullable=True),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True, comment='when /models/{id} said 404'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_models_raw_source_sha'), 'models_raw', ['source_sha'], unique=False)
    op.create_table('quarantine',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('payload_sha', sa.Text(), nullable=False),
    sa.Column('stage', sa.Text(), nullable=False, comment='crawl (no usable id) or normalise'),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('model_id', sa.BigInteger(), nullable=True),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('payload_text', sa.Text(), nullable=True, comment='when the payload was not valid JSON'),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('payload_sha')
    )
    op.create_index(op.f('ix_quarantine_model_id'), 'quarantine', ['model_id'], unique=False)
    op.create_table('model_versions',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('model_id', sa.BigInteger(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False, comment="0 = the model's newest version"),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('base_model', sa.Text(), nullable=True),
    sa.Column('base_model_type', sa.Text(), nullable=True),
    sa.Column('base_model_family', sa.Text(), nullable=False),
    sa.Column('trained_words', sa.ARRAY(sa.Text()), server_default='{}', nullable=False),
    sa.Column('description_text', sa.Text(), server_default='', nullable=False),
    sa.Column('nsfw_level', sa.Integer(), nullable=True),
    sa.Column('download_count', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('rating', sa.Float(), nullable=True),
    sa.Column('rating_count', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('thumbs_up_count', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('download_url', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True, comment="when the version stopped appearing in its model's listing"),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_model_versions_base_model'), 'model_versions', ['base_model'], unique=False)
    op.create_index(op.f('ix_model_versions_base_model_family'), 'model_versions', ['base_model_family'], unique=False)
    op.create_index(op.f('ix_model_versions_model_id'), 'model_versions', ['model_id'], unique=False)
    op.create_table('adapter_checkpoint_links',
    sa.Column('adapter_version_id', sa.BigInteger(), nullable=False),
    sa.Column('checkpoint_version_id', sa.BigInteger(), nullable=False),
    sa.Column('image_count', sa.Integer(), nullable=False),
    sa.Column('sfw_image_count', sa.Integer(), nullable=False),
    sa.Column('avg_weight', sa.Float(), nullable=True, comment='mean adapter strength where images give one'),
    sa.Column('weighted_image_count', sa.Integer(), nullable=False),
    sa.Column('adapter_family', sa.Text(), nullable=False),
    sa.Column('checkpoint_family', sa.Text(), nullable=False),
    sa.Column('family_compatible', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['adapter_version_id'], ['model_versions.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['checkpoint_version_id'], ['model_versions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('adapter_version_id', 'checkpoint_version_id')
    )
    op.create_index(op.f('ix_adapter_checkpoint_links_checkpoint_version_id'), 'adapter_checkpoint_links', ['checkpoint_version_id'], unique=False)
    op.create_table('images',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False, comment='Civitai image id (from the URL when the API omits it)'),
    sa.Column('version_id', sa.BigInteger(), nullable=False),
    sa.Column('model_id', sa.BigInteger(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('url', sa.Text(), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('nsfw_level', sa.Integer(), nullable=True, comment='1 PG, 2 PG13, 4 R, 8 X, 16 XXX, 32 Blocked; null unrated'),
    sa.Column('nsfw', sa.Boolean(), nullable=False, comment='never used for descriptions or embeddings'),
    sa.Column('has_meta', sa.Boolean(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=True),
    sa.Column('negative_prompt', sa.Text(), nullable=True),
    sa.Column('sampler', sa.Text(), nullable=True),
    sa.Column('steps', sa.Integer(), nullable=True),
    sa.Column('cfg_scale', sa.Float(), nullable=True),
    sa.Column('seed', sa.BigInteger(), nullable=True),
    sa.Column('checkpoint_name', sa.Text(), nullable=True, comment='meta Model'),
    sa.Column('checkpoint_hash', sa.Text(), nullable=True, comment="meta 'Model hash' or hashes.model, upper-case"),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', 'version_id')
    )
    op.create_index(op.f('ix_images_model_id'), 'images', ['model_id'], unique=False)
    op.create_index(op.f('ix_images_version_id'), 'images', ['version_id'], unique=False)
    op.create_table('model_files',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('version_id', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('name_stem', sa.Text(), nullable=False, comment='lower-case name without extension, for <lora:...> tags'),
    sa.Column('type', sa.Text(), nullable=True),
    sa.Column('is_primary', sa.Boolean(), nullable=False),
    sa.Column('size_kb', sa.Float(), nullable=True),
    sa.Column('format', sa.Text(), nullable=True),
    sa.Column('fp', sa.Text(), nullable=True),
    sa.Column('pickle_scan', sa.Text(), nullable=True),
    sa.Column('virus_scan', sa.Text(), nullable=True),
    sa.Column('download_url', sa.Text(), nullable=True),
    sa.Column('sha256', sa.Text(), nullable=True),
    sa.Column('autov1', sa.Text(), nullable=True),
    sa.Column('autov2', sa.Text(), nullable=True),
    sa.Column('autov3', sa.Text(), nullable=True),
    sa.Column('crc32', sa.Text(), nullable=True),
    sa.Column('blake3', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_model_files_autov1'), 'model_files', ['autov1'], unique=False)
    op.create_index(op.f('ix_model_files_autov2'), 'model_files', ['autov2'], unique=False)
    op.create_index(op.f('ix_model_files_autov3'), 'model_files', ['autov3'], unique=False)
    op.create_index(op.f('ix_model_files_blake3'), 'model_files', ['blake3'], unique=False)
    op.create_index(op.f('ix_model_files_crc32'), 'model_files', ['crc32'], unique=False)
    op.create_index('ix_model_files_name_stem', 'model_files', ['name_stem'], unique=False)
    op.create_index(op.f('ix_model_files_sha256'), 'model_files', ['sha256'], unique=False)
    op.create_index(op.f('ix_model_files_version_id'), 'model_files', ['version_id'], unique=False)
    op.create_table('image_resources',
    sa.Column('image_id', sa.BigInteger(), nullable=False),
    sa.Column('version_id', sa.BigInteger(), nullable=False, comment='the gallery the image is listed in'),
    sa.Column('position', sa.Integer(), nullable=False, comment='0 is the gallery itself'),
    sa.Column('role', sa.Text(), nullable=False, comment='checkpoint, lora, embedding, hypernetwork, vae'),
    sa.Column('sources', sa.ARRAY(sa.Text()), nullable=False),
    sa.Column('name', sa.Text(), nullable=True),
    sa.Column('hash', sa.Text(), nullable=True),
    sa.Column('ref_version_id', sa.BigInteger(), nullable=True, comment='version id the image itself gives'),
    sa.Column('weight', sa.Float(), nullable=True),
    sa.Column('resolved_version_id', sa.BigInteger(), nullable=True),
    sa.Column('resolved_by', sa.Text(), nullable=True, comment='version_id, hash, file_name or gallery'),
    sa.ForeignKeyConstraint(['image_id', 'version_id'], ['images.id', 'images.version_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('image_id', 'version_id', 'position')
    )
    op.create_index(op.f('ix_image_resources_resolved_version_id'), 'image_resources', ['resolved_version_id'], unique=False)
    for statement in VIEWS:
        op.execute(statement)


def downgrade() -> None:
    for name in reversed(VIEW_NAMES):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_index(op.f('ix_image_resources_resolved_version_id'), table_name='image_resources')
    op.drop_table('image_resources')
    op.drop_index(op.f('ix_model_files_version_id'), table_name='model_files')
    op.drop_index(op.f('ix_model_files_sha256'), table_name='model_files')
    op.drop_index('ix_model_files_name_stem', table_name='model_files')
    op.drop_index(op.f('ix_model_files_crc32'), table_name='model_files')
    op.drop_index(op.f('ix_model_files_blake3'), table_name='model_files')
    op.drop_index(op.f('ix_model_files_autov3'), table_name='model_files')
    op.drop_index(op.f('ix_model_files_autov2'), table_name='model_files')
    op.drop_index(op.f('ix_model_files_autov1'), table_name='model_files')
    op.drop_table('model_files')
    op.drop_index(op.f('ix_images_version_id'), table_name='images')
    op.drop_index(op.f('ix_images_model_id'), table_name='images')
    op.drop_table('images')
    op.drop_index(op.f('ix_adapter_checkpoint_links_checkpoint_version_id'), table_name='adapter_checkpoint_links')
    op.drop_table('adapter_checkpoint_links')
    op.drop_index(op.f('ix_model_versions_model_id'), table_name='model_versions')
    op.drop_index(op.f('ix_model_versions_base_model_family'), table_name='model_versions')
    op.drop_index(op.f('ix_model_versions_base_model'), table_name='model_versions')
    op.drop_table('model_versions')
    op.drop_index(op.f('ix_quarantine_model_id'), table_name='quarantine')
    op.drop_table('quarantine')
    op.drop_index(op.f('ix_models_raw_source_sha'), table_name='models_raw')
    op.drop_table('models_raw')
    op.drop_index(op.f('ix_models_type'), table_name='models')
    op.drop_table('models')
    op.drop_table('derived_stamps')
    op.drop_table('crawl_state')
    op.drop_table('crawl_runs')
