"""The zoo's tables (SQLAlchemy 2 declarative). Alembic migrations must agree with this metadata (`alembic check`).

Column names are plain on purpose: people run SQL on the zoo. `docs` in README.md describes the views.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from pgvector.sqlalchemy import Vector
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class ModelRaw(Base):
    """Every /models item exactly as received (JSONB), keyed by model id: schema drift never loses data."""

    __tablename__ = "models_raw"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    raw: Mapped[dict] = mapped_column(JSONB, nullable=False)
    raw_sha: Mapped[str] = mapped_column(Text, nullable=False, comment="blake2b of the item's canonical JSON")
    source_sha: Mapped[str] = mapped_column(
        Text, nullable=False, index=True,
        comment="blake2b of the bytes as received (a dump line), so an unchanged dump line is skipped unparsed")
    source: Mapped[str] = mapped_column(Text, nullable=False, comment="'api' or 'dump:<file name>'")
    first_fetched_at: Mapped[datetime] = _now()
    fetched_at: Mapped[datetime] = _now()
    normalised_sha: Mapped[str | None] = mapped_column(Text, comment="raw_sha of the last normalisation attempt")
    normalise_error: Mapped[str | None] = mapped_column(Text)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), comment="when /models/{id} said 404")


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    type: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    description_text: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    creator: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    schema_era: Mapped[str] = mapped_column(Text, nullable=False, comment="'2023' or '2024+' API shape")
    nsfw_flag: Mapped[bool] = mapped_column(Boolean, nullable=False, comment="the API's nsfw flag as given")
    nsfw_level: Mapped[int | None] = mapped_column(Integer, comment="the API's nsfwLevel bitmask (2024+)")
    nsfw: Mapped[bool] = mapped_column(Boolean, nullable=False, comment="the zoo's decision (crawlers.nsfw)")
    nsfw_reason: Mapped[str] = mapped_column(Text, nullable=False)
    poi: Mapped[bool | None] = mapped_column(Boolean)
    content_level: Mapped[int | None] = mapped_column(
        Integer, comment="how far the model goes, like Civitai's browsing levels: 1 PG, 2 PG-13, 4 R, 8 X, 16 XXX")
    content_level_reason: Mapped[str | None] = mapped_column(Text, comment="what set the content level")
    minor: Mapped[bool | None] = mapped_column(Boolean)
    mode: Mapped[str | None] = mapped_column(Text, comment="Archived / TakenDown when moderated")
    availability: Mapped[str | None] = mapped_column(Text)
    allow_commercial_use: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    allow_no_credit: Mapped[bool | None] = mapped_column(Boolean)
    allow_derivatives: Mapped[bool | None] = mapped_column(Boolean)
    allow_different_license: Mapped[bool | None] = mapped_column(Boolean)
    download_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    favorite_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    thumbs_up_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    comment_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    rating: Mapped[float | None] = mapped_column(Float)
    rating_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = _now()


class ModelVersion(Base):
    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), nullable=False, index=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False, comment="0 = the model's newest version")
    name: Mapped[str] = mapped_column(Text, nullable=False)
    base_model: Mapped[str | None] = mapped_column(Text, index=True)
    base_model_type: Mapped[str | None] = mapped_column(Text)
    base_model_family: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    trained_words: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    description_text: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    nsfw_level: Mapped[int | None] = mapped_column(Integer)
    download_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    rating: Mapped[float | None] = mapped_column(Float)
    rating_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    thumbs_up_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    download_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    removed_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), comment="when the version stopped appearing in its model's listing"
    )


class ModelFile(Base):
    """Files of a version with every hash kind Civitai gives, upper-cased and indexed for lookups."""

    __tablename__ = "model_files"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    name_stem: Mapped[str] = mapped_column(Text, nullable=False, comment="lower-case name without extension, for <lora:...> tags")
    type: Mapped[str | None] = mapped_column(Text)
    is_primary: Mapped[bool] = mapped_column(Boolean, nullable=False)
    size_kb: Mapped[float | None] = mapped_column(Float)
    format: Mapped[str | None] = mapped_column(Text)
    fp: Mapped[str | None] = mapped_column(Text)
    pickle_scan: Mapped[str | None] = mapped_column(Text)
    virus_scan: Mapped[str | None] = mapped_column(Text)
    download_url: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(Text, index=True)
    autov1: Mapped[str | None] = mapped_column(Text, index=True)
    autov2: Mapped[str | None] = mapped_column(Text, index=True)
    autov3: Mapped[str | None] = mapped_column(Text, index=True)
    crc32: Mapped[str | None] = mapped_column(Text, index=True)
    blake3: Mapped[str | None] = mapped_column(Text, index=True)

    __table_args__ = (Index("ix_model_files_name_stem", "name_stem"),)


class Image(Base):
    """An example image as listed in a version's gallery (one image can be posted to several galleries)."""

    __tablename__ = "images"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False,
                                    comment="Civitai image id (from the URL when the API omits it)")
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True,
                                            index=True)
    model_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    url: Mapped[str | None] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    nsfw_level: Mapped[int | None] = mapped_column(Integer, comment="1 PG, 2 PG13, 4 R, 8 X, 16 XXX, 32 Blocked; null unrated")
    nsfw: Mapped[bool] = mapped_column(Boolean, nullable=False, comment="never used for descriptions or embeddings")
    has_meta: Mapped[bool] = mapped_column(Boolean, nullable=False)
    prompt: Mapped[str | None] = mapped_column(Text)
    negative_prompt: Mapped[str | None] = mapped_column(Text)
    sampler: Mapped[str | None] = mapped_column(Text)
    steps: Mapped[int | None] = mapped_column(Integer)
    cfg_scale: Mapped[float | None] = mapped_column(Float)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    checkpoint_name: Mapped[str | None] = mapped_column(Text, comment="meta Model")
    checkpoint_hash: Mapped[str | None] = mapped_column(Text, comment="meta 'Model hash' or hashes.model, upper-case")


class ImageResource(Base):
    """Each resource an image names (or the gallery it was posted to), and the version it resolved to, if any."""

    __tablename__ = "image_resources"
    image_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    version_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, comment="the gallery the image is listed in")
    position: Mapped[int] = mapped_column(Integer, primary_key=True, comment="0 is the gallery itself")
    role: Mapped[str] = mapped_column(Text, nullable=False, comment="checkpoint, lora, embedding, hypernetwork, vae")
    sources: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    name: Mapped[str | None] = mapped_column(Text)
    hash: Mapped[str | None] = mapped_column(Text)
    ref_version_id: Mapped[int | None] = mapped_column(BigInteger, comment="version id the image itself gives")
    weight: Mapped[float | None] = mapped_column(Float)
    resolved_version_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    resolved_by: Mapped[str | None] = mapped_column(Text, comment="version_id, hash, file_name or gallery")

    __table_args__ = (
        ForeignKeyConstraint(["image_id", "version_id"], ["images.id", "images.version_id"], ondelete="CASCADE"),
    )


class AdapterCheckpointLink(Base):
    """Co-usage evidence: images that used an adapter version together with a checkpoint version."""

    __tablename__ = "adapter_checkpoint_links"
    adapter_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    checkpoint_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    image_count: Mapped[int] = mapped_column(Integer, nullable=False)
    sfw_image_count: Mapped[int] = mapped_column(Integer, nullable=False)
    avg_weight: Mapped[float | None] = mapped_column(Float, comment="mean adapter strength where images give one")
    weighted_image_count: Mapped[int] = mapped_column(Integer, nullable=False)
    adapter_family: Mapped[str] = mapped_column(Text, nullable=False)
    checkpoint_family: Mapped[str] = mapped_column(Text, nullable=False)
    family_compatible: Mapped[bool] = mapped_column(Boolean, nullable=False)


class CrawlState(Base):
    """Where a crawl of one listing stands; written in the same transaction as each page's items."""

    __tablename__ = "crawl_state"
    key: Mapped[str] = mapped_column(Text, primary_key=True, comment="source and filters of the listing")
    params: Mapped[dict] = mapped_column(JSONB, nullable=False)
    next_url: Mapped[str | None] = mapped_column(Text, comment="the page to fetch next; null once finished")
    pages_done: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    items_seen: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    stale_pages: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0",
                                             comment="pages in a row that listed no model new to this crawl")
    started_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CrawlSeenModel(Base):
    """The models the current crawl of a listing has listed so far (for the deletion check after a complete crawl,
    and to notice pages that bring nothing new); emptied when the crawl starts and when it finishes."""

    __tablename__ = "crawl_seen_models"
    key: Mapped[str] = mapped_column(ForeignKey("crawl_state.key", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class CrawlSeenPage(Base):
    """The pages the current crawl of a listing has fetched, by the md5 of their URL: a next page that was fetched
    before is a cursor cycle."""

    __tablename__ = "crawl_seen_pages"
    key: Mapped[str] = mapped_column(ForeignKey("crawl_state.key", ondelete="CASCADE"), primary_key=True)
    url_md5: Mapped[str] = mapped_column(Text, primary_key=True, comment="md5 of the page's URL (its cursor)")
    page: Mapped[int] = mapped_column(Integer, nullable=False, comment="its number in the crawl, from 1")


class CrawlRun(Base):
    __tablename__ = "crawl_runs"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    params: Mapped[dict] = mapped_column(JSONB, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, comment="running, succeeded, failed")
    started_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pages: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    items_received: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    models_new: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    models_changed: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    models_unchanged: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    models_deleted: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    quarantined: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)


class Quarantine(Base):
    """Items that could not be stored or normalised: the error and the payload as received."""

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    payload_sha: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    stage: Mapped[str] = mapped_column(Text, nullable=False, comment="crawl (no usable id) or normalise")
    source: Mapped[str] = mapped_column(Text, nullable=False)
    model_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    error: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict | None] = mapped_column(JSONB)
    payload_text: Mapped[str | None] = mapped_column(Text, comment="when the payload was not valid JSON")
    created_at: Mapped[datetime] = _now()




class DerivedStamp(Base):
    """Which state of the catalogue a derived table was last computed from, so unchanged inputs skip the work."""

    __tablename__ = "derived_stamps"
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    stamp: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[datetime] = _now()


class Description(Base):
    """What a describer said about a model version; cached by (version, describer, prompt version, inputs)."""

    __tablename__ = "descriptions"
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True)
    describer: Mapped[str] = mapped_column(Text, primary_key=True)
    prompt_version: Mapped[str] = mapped_column(Text, primary_key=True)
    input_sha: Mapped[str] = mapped_column(Text, nullable=False, comment="hash of the card the description was made from")
    text: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    trigger_words: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    recommended_weight: Mapped[float] = mapped_column(Float, nullable=False)
    created_at: Mapped[datetime] = _now()


class Embedding(Base):
    """One vector per (model version, embedding space): [text || image], each half L2-normalised.

    The column has no fixed dimension so several spaces share it; retrieval casts to the space's dimension, which
    is what the per-space partial HNSW indexes (built by the retrieval_index asset) are defined on.
    """

    __tablename__ = "embeddings"
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True)
    space: Mapped[str] = mapped_column(Text, primary_key=True, comment="encoder(s) and dimensions, e.g. minilm-l6-v2|384+0")
    role: Mapped[str] = mapped_column(Text, nullable=False, comment="checkpoint or adapter: each has its own index")
    base_model_family: Mapped[str] = mapped_column(Text, nullable=False, server_default="unknown",
                                                   comment="the version's base-model family (per-family HNSW indexes)")
    emb: Mapped[list[float]] = mapped_column(Vector(), nullable=False)
    text_dim: Mapped[int] = mapped_column(Integer, nullable=False)
    image_dim: Mapped[int] = mapped_column(Integer, nullable=False)
    images_embedded: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    input_sha: Mapped[str] = mapped_column(Text, nullable=False, comment="hash of the embedded text, image URLs and encoder")
    lexemes: Mapped[str | None] = mapped_column(TSVECTOR, comment="the embedded text's words (BM25 in retrieval)")
    lexical_length: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0",
                                                comment="how many words the embedded text has (BM25's length)")
    created_at: Mapped[datetime] = _now()

    __table_args__ = (Index("ix_embeddings_lexemes", "lexemes", postgresql_using="gin"),)


class LexicalTerm(Base):
    """In how many embedded texts of a space and role a word occurs: the IDF of retrieval's BM25 (rebuilt by the
    retrieval_index asset)."""

    __tablename__ = "lexical_terms"
    space: Mapped[str] = mapped_column(Text, primary_key=True)
    role: Mapped[str] = mapped_column(Text, primary_key=True)
    lexeme: Mapped[str] = mapped_column(Text, primary_key=True, comment="a word as to_tsvector('english') stems it")
    documents: Mapped[int] = mapped_column(Integer, nullable=False)


class LexicalCorpus(Base):
    """How many embedded texts a space and role has, and their mean length in words (BM25's N and avgdl)."""

    __tablename__ = "lexical_corpus"
    space: Mapped[str] = mapped_column(Text, primary_key=True)
    role: Mapped[str] = mapped_column(Text, primary_key=True)
    documents: Mapped[int] = mapped_column(Integer, nullable=False)
    average_length: Mapped[float] = mapped_column(Float, nullable=False)


class VersionRole(Base):
    """What search answers a served version as: checkpoint, content (answers a prompt), enhancer (a detail or
    quality tweak used with any prompt) or negative (an embedding for the negative prompt); decided from usage."""

    __tablename__ = "version_roles"
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(Text, nullable=False, comment="checkpoint, content, enhancer or negative")
    reason: Mapped[str] = mapped_column(Text, nullable=False, comment="the evidence the role was decided from")
    decided_at: Mapped[datetime] = _now()


class SearchIndexGeneration(Base):
    """One build of a space's in-memory search index (written by the retrieval_index asset): serving processes
    load the newest generation and reload when a newer one appears (NOTIFY zoo_search_index)."""

    __tablename__ = "search_index_generations"
    space: Mapped[str] = mapped_column(Text, primary_key=True, comment="the embedding space the index serves")
    generation: Mapped[int] = mapped_column(BigInteger, primary_key=True, comment="increases with every build")
    built_at: Mapped[datetime] = _now()
    versions: Mapped[int] = mapped_column(Integer, nullable=False, comment="served versions the index holds")
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="size of its stored parts")
    manifest: Mapped[dict] = mapped_column(JSONB, nullable=False,
                                           comment="the arrays (name, dtype, shape) and settings the parts hold")


class SearchIndexPart(Base):
    """The bytes of one array of a search-index generation, in chunks (a bytea value holds at most 1 GB)."""

    __tablename__ = "search_index_parts"
    space: Mapped[str] = mapped_column(Text, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    part: Mapped[str] = mapped_column(Text, primary_key=True, comment="the array's name in the manifest")
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True, comment="0, 1, ...: concatenated in order")
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)

    __table_args__ = (ForeignKeyConstraint(["space", "generation"], ["search_index_generations.space",
                                                                     "search_index_generations.generation"],
                                           ondelete="CASCADE"),)


class StudioJob(Base):
    """A generate or edit request made over HTTP, its inputs and its result. The queue (procrastinate_jobs, see
    serving/http/queue.py) dispatches it to one server process and holds its status; this row holds what that
    process needs and what it made, so any process answers the job's status and image."""

    __tablename__ = "studio_jobs"
    id: Mapped[str] = mapped_column(Text, primary_key=True, comment="the public job id (random, not guessable)")
    kind: Mapped[str] = mapped_column(Text, nullable=False, comment="generate or edit")
    request: Mapped[dict] = mapped_column(JSONB, nullable=False, comment="the request's parameters")
    input_image: Mapped[bytes | None] = mapped_column(LargeBinary, comment="edit: the image to edit (PNG)")
    reference_image: Mapped[bytes | None] = mapped_column(LargeBinary, comment="edit: the style reference (PNG)")
    queue_job_id: Mapped[int | None] = mapped_column(BigInteger, index=True,
                                                     comment="procrastinate_jobs.id: the queue's status of it")
    result_png: Mapped[bytes | None] = mapped_column(LargeBinary, comment="the image made, with A1111 parameters")
    sidecar: Mapped[dict | None] = mapped_column(JSONB, comment="model and version ids, prompts, timings")
    error: Mapped[str | None] = mapped_column(Text, comment="why the job failed, in one line")
    created_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RetrievalRanker(Base):
    """A ranker learned from usage (one LightGBM lambdarank model per search level), trained by the retrieval_ranker
    asset on one index generation and read by every search engine of the space."""

    __tablename__ = "retrieval_rankers"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    space: Mapped[str] = mapped_column(Text, nullable=False, index=True, comment="the embedding space it ranks in")
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="the index generation it was trained on")
    trained_at: Mapped[datetime] = _now()
    features: Mapped[list] = mapped_column(JSONB, nullable=False, comment="the feature columns, in order")
    checkpoint_model: Mapped[str | None] = mapped_column(Text, comment="LightGBM model text of level 1")
    adapter_model: Mapped[str | None] = mapped_column(Text, comment="LightGBM model text of level 2")
    metrics: Mapped[dict] = mapped_column(JSONB, nullable=False, comment="training data, validation against hand weights")
