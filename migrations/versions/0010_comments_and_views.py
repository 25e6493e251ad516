"""Comments on every table, view and column; the analytics views (issue 14).

Tables gain the comments the ORM metadata (db/schema.py) carries; the four views of 0001 and the new ones carry
theirs here (views are not in the ORM). The preferred-description rule (db/descriptions.py) becomes the SQL function
preferred_descriptions(), so version_cards and the Python callers apply one definition; preferred_describer holds the
key the view applies it with. alembic_version is commented too; procrastinate's queue tables (0008) are the queue
library's schema and are left as it ships them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

# Comments the ORM metadata (db/schema.py) gained in this revision.
TABLE_COMMENTS = {
    'models_raw': 'Every Civitai /models item exactly as received, keyed by model id',
    'models': 'Civitai models normalised from models_raw; deleted ones are marked, never dropped',
    'model_versions': 'Versions of each model (Civitai modelVersions), with base model and trained words',
    'model_files': 'Files of each version with every hash kind Civitai gives (upper-case hex)',
    'images': "Example images as listed in a version's gallery, with their generation metadata",
    'image_resources': 'Resources an example image names, and its gallery, resolved to versions where possible',
    'adapter_checkpoint_links': 'Co-usage: example images that used an adapter version with a checkpoint version',
    'crawl_state': 'Where the crawl of one listing stands: its cursor and counts',
    'crawl_seen_models': 'Models the current crawl of a listing has seen (for the deletion check)',
    'crawl_seen_pages': 'Pages the current crawl of a listing has fetched (to detect cursor cycles)',
    'crawl_runs': 'One row per crawl or dump ingest: what was asked, how it ended, what it counted',
    'quarantine': 'Items that could not be stored or normalised, with the error and payload',
    'derived_stamps': 'The catalogue state each derived table was last computed from',
    'descriptions': 'What a describer said about a version: text, kind, trigger words, weight',
    'embeddings': 'One vector per (version, embedding space): [text || image], halves L2-normalised',
    'lexical_terms': 'Document frequency of each word per space and role (BM25 IDF)',
    'lexical_corpus': 'Embedded texts per space and role and their mean length (BM25 N, avgdl)',
    'version_roles': 'What search answers a served version as, decided from usage',
    'search_index_generations': 'Builds of the in-memory search index, one per space and generation',
    'search_index_parts': 'The bytes of each array of a search-index generation, in chunks',
    'studio_jobs': 'Generate and edit requests made over HTTP: inputs, result image and error',
    'retrieval_rankers': 'Rankers learned from usage (LightGBM lambdarank), one row per training run',
}
COLUMN_COMMENTS = {
    'models_raw': {
        'id': 'Civitai model id',
        'raw': 'the /models item as received (JSON)',
        'first_fetched_at': 'when the zoo first stored this model',
        'fetched_at': 'when this model was last received from a crawl or dump',
        'normalise_error': 'why the last normalisation failed; null when it succeeded',
        'deleted_at': 'when Civitai stopped listing the model (404 or not in a complete crawl)',
    },
    'models': {
        'id': 'Civitai model id',
        'name': 'model name as shown on Civitai',
        'type': 'Civitai model type: Checkpoint, LORA, LoCon, DoRA, TextualInversion, ...',
        'description_text': 'the model card (HTML description) as plain text',
        'creator': "the creator's Civitai username",
        'tags': 'Civitai tags',
        'nsfw_reason': 'why the model is or is not NSFW (flag, level or images rule, crawlers.nsfw)',
        'poi': "the API's poi flag: depicts a real person",
        'minor': "the API's minor flag",
        'availability': "the API's availability (Public, EarlyAccess, Private, ...)",
        'allow_commercial_use': 'commercial uses the licence permits (Image, RentCivit, Rent, Sell); empty: none',
        'allow_no_credit': 'licence: may be used without crediting the creator',
        'allow_derivatives': 'licence: derivatives (merges, fine-tunes) may be shared',
        'allow_different_license': 'licence: derivatives may carry a different licence',
        'download_count': 'downloads of all versions (Civitai stats)',
        'favorite_count': 'favourites (Civitai stats)',
        'thumbs_up_count': 'thumbs-up reviews (Civitai stats)',
        'comment_count': 'comments (Civitai stats)',
        'rating': 'mean rating, 0-5 (Civitai stats, 2023 era)',
        'rating_count': 'number of ratings (Civitai stats)',
        'deleted_at': 'when Civitai stopped listing the model (404 or not in a complete crawl); null while listed',
        'updated_at': 'when this row was last written',
    },
    'model_versions': {
        'id': 'Civitai model version id',
        'model_id': 'the model the version belongs to',
        'name': 'version name as shown on Civitai',
        'base_model': 'Civitai baseModel, e.g. SD 1.5, SDXL 1.0, Pony, Flux.1 D',
        'base_model_type': 'Civitai baseModelType, e.g. Standard, Inpainting',
        'base_model_family': 'architecture family of base_model (crawlers.taxonomy): SD1.x, SDXL, Flux.1, ...; unknown when none',
        'trained_words': 'trigger words the creator gave (trainedWords)',
        'description_text': "the version's notes (HTML) as plain text",
        'nsfw_level': "the API's nsfwLevel bitmask of the version (2024+)",
        'download_count': 'downloads of this version (Civitai stats)',
        'rating': 'mean rating of this version, 0-5 (Civitai stats, 2023 era)',
        'rating_count': 'number of ratings of this version',
        'thumbs_up_count': 'thumbs-up reviews of this version',
        'download_url': "Civitai download URL of the version's primary file",
        'created_at': 'when the version was created on Civitai',
        'published_at': 'when the version was published on Civitai; null in most 2023 data',
    },
    'model_files': {
        'id': 'Civitai file id',
        'version_id': 'the version the file belongs to',
        'name': 'file name as uploaded',
        'type': 'Civitai file type: Model, Pruned Model, VAE, Training Data, Config, ...',
        'is_primary': "the version's primary file (the one that is downloaded and served)",
        'size_kb': 'file size in KiB',
        'format': 'file format from the API metadata: SafeTensor, PickleTensor, ...',
        'fp': 'precision from the API metadata: fp16, fp32, bf16',
        'pickle_scan': "Civitai's pickle scan result (Success, Danger, Pending, ...)",
        'virus_scan': "Civitai's virus scan result",
        'download_url': 'Civitai download URL of this file',
        'sha256': 'SHA256 of the file, upper-case hex',
        'autov1': 'A1111 AutoV1 hash (8 hex, of a slice of the file), upper-case',
        'autov2': 'A1111 AutoV2 hash (first 10 hex of SHA256), upper-case',
        'autov3': 'AutoV3 hash (safetensors tensor data), upper-case',
        'crc32': 'CRC32 of the file, upper-case hex',
        'blake3': 'BLAKE3 of the file, upper-case hex',
    },
    'images': {
        'version_id': 'the version whose gallery lists the image',
        'model_id': 'the model of that version',
        'position': 'order in the gallery, from 0',
        'url': 'Civitai CDN URL of the image',
        'width': 'width in pixels',
        'height': 'height in pixels',
        'has_meta': 'the image came with generation metadata',
        'prompt': 'the generation prompt (meta prompt)',
        'negative_prompt': 'the negative prompt (meta negativePrompt)',
        'sampler': 'sampler name (meta sampler)',
        'steps': 'sampling steps (meta steps)',
        'cfg_scale': 'classifier-free guidance scale (meta cfgScale)',
        'seed': 'generation seed (meta seed)',
    },
    'image_resources': {
        'image_id': 'the image (images.id)',
        'sources': 'where the image names it: civitaiResources, resources, model_hash, hashes, addnet, prompt_tag, or gallery',
        'name': 'resource name as the image gives it (e.g. the <lora:name> stem)',
        'hash': 'resource hash as the image gives it, upper-case',
        'weight': 'strength the image used it at (e.g. <lora:name:0.8>)',
        'resolved_version_id': 'the catalogued version the resource resolved to; null when unresolved',
    },
    'adapter_checkpoint_links': {
        'adapter_version_id': 'the adapter version (LoRA, LoCon, DoRA, LyCORIS, embedding, hypernetwork)',
        'checkpoint_version_id': 'the checkpoint version used with it',
        'image_count': 'example images that used both',
        'sfw_image_count': 'of those, images that are not NSFW',
        'weighted_image_count': "of those, images that give the adapter's strength",
        'adapter_family': 'base-model family of the adapter version',
        'checkpoint_family': 'base-model family of the checkpoint version',
        'family_compatible': 'the two versions share a base-model family',
    },
    'crawl_state': {
        'params': "the listing's query parameters",
        'pages_done': 'pages fetched so far',
        'items_seen': 'items received so far',
        'started_at': 'when this crawl of the listing started',
        'updated_at': 'when the last page was stored',
        'finished_at': "when the crawl reached the listing's end; null while running",
    },
    'crawl_seen_models': {
        'key': 'the listing (crawl_state.key)',
        'model_id': 'a model the listing returned',
    },
    'crawl_seen_pages': {
        'key': 'the listing (crawl_state.key)',
    },
    'crawl_runs': {
        'id': 'run number',
        'source': 'api or dump:<file name>',
        'params': 'what the run was asked to fetch (listing filters, limits, dump path)',
        'started_at': 'when the run started',
        'finished_at': 'when the run ended; null while running',
        'pages': 'pages fetched (API) or read (dump)',
        'items_received': 'model items received',
        'models_new': 'models stored for the first time',
        'models_changed': 'models whose raw JSON changed',
        'models_unchanged': 'models received again unchanged',
        'models_deleted': 'models marked deleted by this run',
        'quarantined': 'items quarantined by this run',
        'error': 'why the run failed; null otherwise',
    },
    'quarantine': {
        'id': 'quarantine entry number',
        'payload_sha': 'hash of the payload (one entry per distinct payload)',
        'source': 'api or dump:<file name>',
        'model_id': 'the model id when the payload had a usable one',
        'error': 'why the item was quarantined',
        'payload': 'the item as received, when it was valid JSON',
        'created_at': 'when the item was quarantined',
    },
    'derived_stamps': {
        'name': 'the derived table (image_resources, adapter_checkpoint_links)',
        'stamp': 'fingerprint of the inputs it was computed from',
        'updated_at': 'when it was last computed',
    },
    'descriptions': {
        'version_id': 'the described model version',
        'describer': 'the describer that wrote it (card-text, openai:<model>, vlm:<model>)',
        'prompt_version': "version of the describer's prompt; a new one re-describes",
        'text': 'what the model does, in a few sentences',
        'kind': 'style, character, object, concept (adapters), or checkpoint',
        'trigger_words': 'words to put in the prompt to activate the adapter',
        'recommended_weight': 'suggested adapter strength (from <lora:name:w> in example prompts, else a default)',
        'created_at': 'when the description was stored',
    },
    'embeddings': {
        'version_id': 'the embedded model version',
        'emb': '[text || image] vector; its dimension is text_dim + image_dim',
        'text_dim': 'dimensions of the text half',
        'image_dim': 'dimensions of the image half (0 without an image encoder)',
        'images_embedded': 'SFW example images averaged into the image half (0: image half is zero)',
        'created_at': 'when the vector was stored',
    },
    'lexical_terms': {
        'space': 'the embedding space (embeddings.space)',
        'role': 'checkpoint or adapter',
        'documents': 'embedded texts that contain the word',
    },
    'lexical_corpus': {
        'space': 'the embedding space (embeddings.space)',
        'role': 'checkpoint or adapter',
        'documents': 'embedded texts of this space and role',
        'average_length': 'their mean length in words',
    },
    'version_roles': {
        'version_id': 'the served model version',
        'decided_at': 'when the role was decided',
    },
    'search_index_generations': {
        'built_at': 'when the generation was built',
    },
    'search_index_parts': {
        'space': "the generation's space",
        'generation': "the generation's number",
        'data': "the chunk's bytes",
    },
    'studio_jobs': {
        'created_at': 'when the job was queued',
        'started_at': 'when a server process started it',
        'finished_at': 'when it succeeded or failed',
    },
    'retrieval_rankers': {
        'id': 'ranker number; the newest of a space is used',
        'trained_at': 'when it was trained',
    },
}
PREVIOUS_COLUMN_COMMENTS = {('models_raw', 'deleted_at'): 'when /models/{id} said 404'}

PREFERRED_DESCRIPTIONS = """
CREATE FUNCTION preferred_descriptions(wanted text, wanted_version text, fallback text, fallback_version text)
RETURNS TABLE (version_id bigint, text text, kind text, trigger_words text[], recommended_weight double precision,
               describer text, prompt_version text)
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT ON (d.version_id) d.version_id, d.text, d.kind, d.trigger_words, d.recommended_weight,
           d.describer, d.prompt_version
    FROM descriptions d
    WHERE (d.describer, d.prompt_version) IN (($1, $2), ($3, $4))
    ORDER BY d.version_id, d.describer = $1 DESC
$$"""
PREFERRED_DESCRIPTIONS_COMMENT = (
    "One description per version: the wanted describer's (name, prompt version), else the fallback's stored in its "
    "place (db/descriptions.py)")

# Adapter types as crawlers/taxonomy.py's ADAPTER_TYPES stood at this revision.
ADAPTER_TYPES = "('LORA', 'LoCon', 'DoRA', 'LyCORIS', 'TextualInversion', 'Hypernetwork')"

# name -> (definition, comment on the view, comments on its columns); created in this order, dropped in reverse.
NEW_VIEWS = {
    "version_cards": (
        """
        SELECT s.version_id, s.model_id, s.model_name, s.version_name, s.model_type,
               d.kind, d.trigger_words, d.recommended_weight, d.text AS description, d.describer,
               d.prompt_version AS describer_prompt_version,
               s.base_model, s.base_model_family, s.trained_words, m.creator, m.tags,
               s.model_download_count, s.version_download_count,
               m.allow_commercial_use, m.allow_no_credit, m.allow_derivatives, m.allow_different_license,
               s.primary_file_id, s.primary_file_name, f.sha256, f.autov1, f.autov2, f.autov3, f.crc32, f.blake3,
               v.created_at, v.published_at,
               'https://civitai.com/models/' || s.model_id || '?modelVersionId=' || s.version_id AS civitai_url
        FROM served_model_versions s
        JOIN models m ON m.id = s.model_id
        JOIN model_versions v ON v.id = s.version_id
        JOIN model_files f ON f.id = s.primary_file_id
        LEFT JOIN (
            SELECT d.* FROM preferred_describer p
            CROSS JOIN LATERAL preferred_descriptions(p.describer, p.prompt_version, p.fallback, p.fallback_version) d
        ) d ON d.version_id = s.version_id
        """,
        "One row per served version: what it is, how to use it, its licence and primary file; the description is "
        "the preferred describer's (preferred_describer)",
        {
            "version_id": "model version id",
            "model_id": "model id",
            "model_name": "model name",
            "version_name": "version name",
            "model_type": "Civitai model type (Checkpoint, LORA, ...)",
            "kind": "style, character, object, concept or checkpoint; null when not described",
            "trigger_words": "words that activate the adapter, by the describer; null when not described",
            "recommended_weight": "suggested adapter strength; null when not described",
            "description": "what the version does, by the preferred describer",
            "describer": "the describer that wrote the description (the preferred one or its fallback)",
            "describer_prompt_version": "that describer's prompt version",
            "base_model": "Civitai baseModel",
            "base_model_family": "architecture family of the base model",
            "trained_words": "trigger words the creator gave",
            "creator": "the creator's Civitai username",
            "tags": "Civitai tags of the model",
            "model_download_count": "downloads of all versions of the model",
            "version_download_count": "downloads of this version",
            "allow_commercial_use": "commercial uses the licence permits; empty: none",
            "allow_no_credit": "licence: may be used without crediting the creator",
            "allow_derivatives": "licence: derivatives may be shared",
            "allow_different_license": "licence: derivatives may carry a different licence",
            "primary_file_id": "Civitai id of the primary file",
            "primary_file_name": "name of the primary file",
            "sha256": "SHA256 of the primary file, upper-case",
            "autov1": "AutoV1 hash of the primary file",
            "autov2": "AutoV2 hash of the primary file (first 10 hex of SHA256)",
            "autov3": "AutoV3 hash of the primary file",
            "crc32": "CRC32 of the primary file",
            "blake3": "BLAKE3 of the primary file",
            "created_at": "when the version was created on Civitai",
            "published_at": "when the version was published on Civitai",
            "civitai_url": "the version's page on civitai.com",
        },
    ),
    "adapter_compatibility": (
        """
        SELECT l.adapter_version_id, am.name AS adapter_name, am.type AS adapter_type, am.nsfw AS adapter_nsfw,
               l.adapter_family, l.checkpoint_family, l.adapter_family = l.checkpoint_family AS family_compatible,
               count(*) AS checkpoints, count(DISTINCT cv.model_id) AS checkpoint_models,
               sum(l.image_count) AS images, sum(l.sfw_image_count) AS sfw_images,
               sum(l.avg_weight * l.weighted_image_count) / nullif(sum(l.weighted_image_count), 0) AS avg_weight,
               (array_agg(l.checkpoint_version_id ORDER BY l.image_count DESC, l.checkpoint_version_id))[1]
                   AS top_checkpoint_version_id
        FROM adapter_checkpoint_links l
        JOIN model_versions av ON av.id = l.adapter_version_id JOIN models am ON am.id = av.model_id
        JOIN model_versions cv ON cv.id = l.checkpoint_version_id
        GROUP BY l.adapter_version_id, am.name, am.type, am.nsfw, l.adapter_family, l.checkpoint_family
        """,
        "Per adapter version and checkpoint family: how many checkpoints and images used it "
        "(from adapter_checkpoint_links)",
        {
            "adapter_version_id": "the adapter version",
            "adapter_name": "its model's name",
            "adapter_type": "its model's type (LORA, LoCon, TextualInversion, ...)",
            "adapter_nsfw": "its model is NSFW (never served)",
            "adapter_family": "base-model family of the adapter",
            "checkpoint_family": "base-model family of the checkpoints counted",
            "family_compatible": "the adapter's family is this checkpoint family",
            "checkpoints": "checkpoint versions of this family used with the adapter",
            "checkpoint_models": "distinct checkpoint models among them",
            "images": "example images that used the adapter with one of them (summed over checkpoints)",
            "sfw_images": "of those, images that are not NSFW",
            "avg_weight": "mean adapter strength over the images that give one",
            "top_checkpoint_version_id": "the checkpoint version used with it most (ties: lowest id)",
        },
    ),
    "trigger_word_collisions": (
        f"""
        WITH words AS (
            SELECT DISTINCT c.base_model_family, lower(btrim(w)) AS trigger_word, c.model_id, c.model_name,
                   c.version_id
            FROM version_cards c CROSS JOIN LATERAL unnest(coalesce(c.trigger_words, c.trained_words)) AS w
            WHERE c.model_type IN {ADAPTER_TYPES} AND btrim(w) <> ''
        )
        SELECT base_model_family, trigger_word, count(DISTINCT model_id) AS adapters, count(*) AS versions,
               array_agg(DISTINCT model_id ORDER BY model_id) AS model_ids,
               array_agg(DISTINCT model_name ORDER BY model_name) AS model_names,
               array_agg(version_id ORDER BY version_id) AS version_ids
        FROM words
        GROUP BY base_model_family, trigger_word
        HAVING count(DISTINCT model_id) > 1
        """,
        "Trigger words shared by served adapters of several models in one base-model family (the describer's "
        "trigger words, else the creator's trained words; compared lower-case)",
        {
            "base_model_family": "the base-model family the adapters share",
            "trigger_word": "the shared trigger word, lower-case and trimmed",
            "adapters": "adapter models using it (always more than one)",
            "versions": "served adapter versions using it",
            "model_ids": "those models' ids",
            "model_names": "those models' names",
            "version_ids": "those versions' ids",
        },
    ),
    "duplicate_uploads": (
        """
        WITH files AS (
            SELECT coalesce(left(f.sha256, 10), f.autov2) AS autov2, f.sha256, f.name, f.version_id, v.model_id,
                   coalesce(v.published_at, v.created_at) AS uploaded_at
            FROM model_files f JOIN model_versions v ON v.id = f.version_id
            WHERE (f.sha256 IS NOT NULL OR f.autov2 IS NOT NULL) AND f.type IN ('Model', 'Pruned Model')
        )
        SELECT autov2, max(sha256) AS sha256, count(DISTINCT model_id) AS models,
               count(DISTINCT version_id) AS versions, count(*) AS files,
               (array_agg(model_id ORDER BY uploaded_at NULLS LAST, version_id))[1] AS first_model_id,
               (array_agg(version_id ORDER BY uploaded_at NULLS LAST, version_id))[1] AS first_version_id,
               array_agg(DISTINCT model_id ORDER BY model_id) AS model_ids,
               array_agg(DISTINCT name ORDER BY name) AS file_names
        FROM files
        GROUP BY autov2
        HAVING count(DISTINCT model_id) > 1 AND count(DISTINCT sha256) <= 1
        """,
        "Model files (types Model and Pruned Model; not the VAEs and configs many models bundle) uploaded under more "
        "than one model: same AutoV2 (first 10 hex of SHA256), no differing SHA256; NSFW and deleted models included",
        {
            "autov2": "the file's AutoV2 hash (from SHA256 where known)",
            "sha256": "the file's SHA256 where any upload gives it",
            "models": "models that carry the file",
            "versions": "versions that carry it",
            "files": "file rows with this hash",
            "first_model_id": "model of the earliest upload (published, else created date; ties: lowest version id)",
            "first_version_id": "version of the earliest upload",
            "model_ids": "all models that carry it",
            "file_names": "the names it was uploaded under",
        },
    ),
    "creator_stats": (
        """
        SELECT m.creator, count(*) AS models, coalesce(sum(v.versions), 0)::bigint AS versions,
               sum(m.download_count)::bigint AS downloads,
               count(*) FILTER (WHERE m.nsfw) AS nsfw_models, round(avg(m.nsfw::int)::numeric, 4) AS nsfw_share,
               count(*) FILTER (WHERE m.deleted_at IS NOT NULL) AS deleted_models,
               min(v.first_upload) AS first_upload, max(v.last_upload) AS last_upload
        FROM models m
        LEFT JOIN (
            SELECT model_id, count(*) AS versions, min(coalesce(published_at, created_at)) AS first_upload,
                   max(coalesce(published_at, created_at)) AS last_upload
            FROM model_versions GROUP BY model_id
        ) v ON v.model_id = m.id
        WHERE m.creator IS NOT NULL
        GROUP BY m.creator
        """,
        "Per creator: models, versions, downloads and NSFW share (every catalogued model with a named creator)",
        {
            "creator": "the creator's Civitai username",
            "models": "models by the creator",
            "versions": "versions of those models",
            "downloads": "downloads of those models (sum of models.download_count)",
            "nsfw_models": "of those models, NSFW ones (models.nsfw)",
            "nsfw_share": "nsfw_models / models, 4 decimals",
            "deleted_models": "of those models, ones Civitai no longer lists",
            "first_upload": "earliest version date (published, else created)",
            "last_upload": "latest version date (published, else created)",
        },
    ),
    "base_model_trends": (
        """
        WITH dated AS (
            SELECT v.id, v.model_id, v.base_model, v.base_model_family, v.published_at IS NULL AS by_created,
                   date_trunc('month', coalesce(v.published_at, v.created_at) AT TIME ZONE 'UTC')::date AS month
            FROM model_versions v
            WHERE coalesce(v.published_at, v.created_at) IS NOT NULL
        ), firsts AS (
            SELECT *, min(month) OVER (PARTITION BY model_id, base_model) AS first_month FROM dated
        )
        SELECT base_model, base_model_family, month, count(DISTINCT model_id) AS models,
               count(DISTINCT model_id) FILTER (WHERE month = first_month) AS new_models, count(*) AS versions,
               count(*) FILTER (WHERE by_created) AS versions_by_created_date
        FROM firsts
        GROUP BY base_model, base_model_family, month
        """,
        "Models and versions per base model per month (UTC), by published date, else created date (2023 data has "
        "no published dates); every catalogued version",
        {
            "base_model": "Civitai baseModel (null: none given)",
            "base_model_family": "its architecture family",
            "month": "first day of the month",
            "models": "models with a version on this base model dated in the month",
            "new_models": "of those, models whose first version on this base model is dated in the month",
            "versions": "versions on this base model dated in the month",
            "versions_by_created_date": "of those, versions dated by created_at (no published_at)",
        },
    ),
}

# The views of 0001: comments on each and on its columns.
EXISTING_VIEWS = {
    "served_model_versions": (
        "Exactly the versions serving may return: SFW, not deleted or moderated away, still listed, with a primary "
        "file",
        {
            "version_id": "model version id",
            "model_id": "model id",
            "model_name": "model name",
            "model_type": "Civitai model type",
            "version_name": "version name",
            "base_model": "Civitai baseModel",
            "base_model_family": "architecture family of the base model",
            "trained_words": "trigger words the creator gave",
            "tags": "Civitai tags of the model",
            "model_download_count": "downloads of all versions of the model",
            "version_download_count": "downloads of this version",
            "allow_commercial_use": "commercial uses the licence permits; empty: none",
            "primary_file_id": "Civitai id of the primary file (lowest id when several are primary)",
            "primary_file_name": "name of the primary file",
            "primary_file_sha256": "SHA256 of the primary file, upper-case",
            "download_url": "download URL of the primary file (else the version's)",
        },
    ),
    "adapters_per_base_model": (
        "Non-checkpoint models and versions per base model and type (versions still listed)",
        {
            "base_model": "Civitai baseModel",
            "base_model_family": "its architecture family",
            "type": "Civitai model type",
            "models": "models with a version on this base model",
            "versions": "versions on this base model",
            "sfw_versions": "of those, versions of models that are not NSFW",
        },
    ),
    "nsfw_share_by_type": (
        "Per model type: models, NSFW models and which rule made them NSFW",
        {
            "type": "Civitai model type",
            "models": "models of this type",
            "nsfw_models": "of those, NSFW ones (models.nsfw)",
            "nsfw_share": "nsfw_models / models, 4 decimals",
            "by_flag": "NSFW by the API's nsfw flag",
            "by_level": "NSFW by the API's nsfwLevel bits (R, X, XXX, Blocked)",
            "by_images": "NSFW because most rated example images are Mature/X (2023 rule)",
        },
    ),
    "top_adapter_checkpoint_pairs": (
        "Adapter/checkpoint version pairs by co-usage, most used first (adapter_checkpoint_links with names)",
        {
            "adapter_version_id": "the adapter version",
            "adapter_name": "its model's name",
            "adapter_type": "its model's type",
            "adapter_nsfw": "its model is NSFW",
            "checkpoint_version_id": "the checkpoint version",
            "checkpoint_name": "its model's name",
            "checkpoint_nsfw": "its model is NSFW",
            "image_count": "example images that used both",
            "sfw_image_count": "of those, images that are not NSFW",
            "avg_weight": "mean adapter strength where images give one",
            "family_compatible": "the two versions share a base-model family",
        },
    ),
}

ALEMBIC_VERSION_COMMENT = "The migration (migrations/versions) the schema is at; written by Alembic"


def _literal(comment: str | None) -> str:
    return "NULL" if comment is None else "'" + comment.replace("'", "''") + "'"


def _comment(kind: str, name: str, comment: str | None) -> None:
    """COMMENT ON through the driver: comments hold ':' that bound-parameter parsing would misread."""
    op.get_bind().exec_driver_sql(f"COMMENT ON {kind} {name} IS {_literal(comment)}")


def _comment_view(name: str, comment: str | None, columns: dict[str, str]) -> None:
    _comment("VIEW", name, comment)
    for column, text in columns.items():
        _comment("COLUMN", f"{name}.{column}", text)


def upgrade() -> None:
    for table, comment in TABLE_COMMENTS.items():
        _comment("TABLE", table, comment)
    for table, columns in COLUMN_COMMENTS.items():
        for column, comment in columns.items():
            _comment("COLUMN", f"{table}.{column}", comment)
    _comment("TABLE", "alembic_version", ALEMBIC_VERSION_COMMENT)
    _comment("COLUMN", "alembic_version.version_num", "the revision id")
    for name, (comment, columns) in EXISTING_VIEWS.items():
        _comment_view(name, comment, columns)
    op.create_table(
        'preferred_describer',
        sa.Column('singleton', sa.Boolean(), server_default=sa.text('true'), nullable=False,
                  comment='always true: the table holds one row'),
        sa.Column('describer', sa.Text(), nullable=False, comment="the configured describer's name"),
        sa.Column('prompt_version', sa.Text(), nullable=False, comment='its prompt version'),
        sa.Column('fallback', sa.Text(), nullable=False,
                  comment='the describer whose description stands in where it failed'),
        sa.Column('fallback_version', sa.Text(), nullable=False, comment="the fallback's prompt version"),
        sa.Column('recorded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False,
                  comment='when a describe step last set it'),
        sa.CheckConstraint('singleton', name='preferred_describer_one_row'),
        sa.PrimaryKeyConstraint('singleton'),
        comment='The describer whose descriptions version_cards shows (one row, set by the describe step)',
    )
    op.get_bind().exec_driver_sql(PREFERRED_DESCRIPTIONS)
    _comment("FUNCTION", "preferred_descriptions(text, text, text, text)", PREFERRED_DESCRIPTIONS_COMMENT)
    for name, (definition, comment, columns) in NEW_VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {definition}")
        _comment_view(name, comment, columns)


def downgrade() -> None:
    for name in reversed(NEW_VIEWS):
        op.execute(f"DROP VIEW {name}")
    op.execute("DROP FUNCTION preferred_descriptions(text, text, text, text)")
    op.drop_table('preferred_describer')
    for name, (_, columns) in EXISTING_VIEWS.items():
        _comment_view(name, None, dict.fromkeys(columns))
    _comment("TABLE", "alembic_version", None)
    _comment("COLUMN", "alembic_version.version_num", None)
    for table, columns in COLUMN_COMMENTS.items():
        for column in columns:
            _comment("COLUMN", f"{table}.{column}", PREVIOUS_COLUMN_COMMENTS.get((table, column)))
    for table in TABLE_COMMENTS:
        _comment("TABLE", table, None)
