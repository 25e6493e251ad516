"""The zoo's tables (SQLAlchemy 2 declarative). Alembic migrations must agree with this metadata (`alembic check`).

Column names are plain on purpose: people run SQL on the zoo. Every table and column carries a comment (the views,
defined in the migrations, too); `zoo db docs` renders them into docs/schema.md.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    Text,
    func,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from pgvector.sqlalchemy import Vector
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


def _now(comment: str) -> Mapped[datetime]:
    """A timestamp set by the database when the row is written."""
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False, comment=comment)


class ModelRaw(Base):
    """Every /models item exactly as received (JSONB), keyed by model id: schema drift never loses data."""

    __tablename__ = "models_raw"
    __table_args__ = {"comment": "Every Civitai /models item exactly as received, keyed by model id"}
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False,
        comment="Civitai model id")
    raw: Mapped[dict] = mapped_column(JSONB, nullable=False,
        comment="the /models item as received (JSON)")
    raw_sha: Mapped[str] = mapped_column(Text, nullable=False, comment="blake2b of the item's canonical JSON")
    source_sha: Mapped[str] = mapped_column(
        Text, nullable=False, index=True,
        comment="blake2b of the bytes as received (a dump line), so an unchanged dump line is skipped unparsed")
    source: Mapped[str] = mapped_column(Text, nullable=False, comment="'api' or 'dump:<file name>'")
    first_fetched_at: Mapped[datetime] = _now(comment="when the zoo first stored this model")
    fetched_at: Mapped[datetime] = _now(comment="when this model was last received from a crawl or dump")
    normalised_sha: Mapped[str | None] = mapped_column(Text, comment="raw_sha of the last normalisation attempt")
    normalise_error: Mapped[str | None] = mapped_column(Text,
        comment="why the last normalisation failed; null when it succeeded")
    deleted_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), comment="when Civitai stopped listing the model (404 or not in a complete crawl)")


class Model(Base):
    __tablename__ = "models"
    __table_args__ = {"comment": "Civitai models normalised from models_raw; deleted ones are marked, never dropped"}
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False,
        comment="Civitai model id")
    name: Mapped[str] = mapped_column(Text, nullable=False,
        comment="model name as shown on Civitai")
    type: Mapped[str] = mapped_column(Text, nullable=False, index=True,
        comment="Civitai model type: Checkpoint, LORA, LoCon, DoRA, TextualInversion, ...")
    description_text: Mapped[str] = mapped_column(Text, nullable=False, server_default="",
        comment="the model card (HTML description) as plain text")
    creator: Mapped[str | None] = mapped_column(Text,
        comment="the creator's Civitai username")
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}",
        comment="Civitai tags")
    schema_era: Mapped[str] = mapped_column(Text, nullable=False, comment="'2023' or '2024+' API shape")
    nsfw_flag: Mapped[bool] = mapped_column(Boolean, nullable=False, comment="the API's nsfw flag as given")
    nsfw_level: Mapped[int | None] = mapped_column(Integer, comment="the API's nsfwLevel bitmask (2024+)")
    nsfw: Mapped[bool] = mapped_column(Boolean, nullable=False, comment="the zoo's decision (crawlers.nsfw)")
    nsfw_reason: Mapped[str] = mapped_column(Text, nullable=False,
        comment="why the model is or is not NSFW (flag, level or images rule, crawlers.nsfw)")
    poi: Mapped[bool | None] = mapped_column(Boolean,
        comment="the API's poi flag: depicts a real person")
    content_level: Mapped[int | None] = mapped_column(
        Integer, comment="how far the model goes, like Civitai's browsing levels: 1 PG, 2 PG-13, 4 R, 8 X, 16 XXX")
    content_level_reason: Mapped[str | None] = mapped_column(Text, comment="what set the content level")
    minor: Mapped[bool | None] = mapped_column(Boolean,
        comment="the API's minor flag")
    mode: Mapped[str | None] = mapped_column(Text, comment="Archived / TakenDown when moderated")
    availability: Mapped[str | None] = mapped_column(Text,
        comment="the API's availability (Public, EarlyAccess, Private, ...)")
    allow_commercial_use: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}",
        comment="commercial uses the licence permits (Image, RentCivit, Rent, Sell); empty: none")
    allow_no_credit: Mapped[bool | None] = mapped_column(Boolean,
        comment="licence: may be used without crediting the creator")
    allow_derivatives: Mapped[bool | None] = mapped_column(Boolean,
        comment="licence: derivatives (merges, fine-tunes) may be shared")
    allow_different_license: Mapped[bool | None] = mapped_column(Boolean,
        comment="licence: derivatives may carry a different licence")
    download_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0",
        comment="downloads of all versions (Civitai stats)")
    favorite_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0",
        comment="favourites (Civitai stats)")
    thumbs_up_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0",
        comment="thumbs-up reviews (Civitai stats)")
    comment_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0",
        comment="comments (Civitai stats)")
    rating: Mapped[float | None] = mapped_column(Float,
        comment="mean rating, 0-5 (Civitai stats, 2023 era)")
    rating_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0",
        comment="number of ratings (Civitai stats)")
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
        comment="when Civitai stopped listing the model (404 or not in a complete crawl); null while listed")
    updated_at: Mapped[datetime] = _now(comment="when this row was last written")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = {"comment": "Versions of each model (Civitai modelVersions), with base model and trained words"}
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False,
        comment="Civitai model version id")
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), nullable=False, index=True,
        comment="the model the version belongs to")
    position: Mapped[int] = mapped_column(Integer, nullable=False, comment="0 = the model's newest version")
    name: Mapped[str] = mapped_column(Text, nullable=False,
        comment="version name as shown on Civitai")
    base_model: Mapped[str | None] = mapped_column(Text, index=True,
        comment="Civitai baseModel, e.g. SD 1.5, SDXL 1.0, Pony, Flux.1 D")
    base_model_type: Mapped[str | None] = mapped_column(Text,
        comment="Civitai baseModelType, e.g. Standard, Inpainting")
    base_model_family: Mapped[str] = mapped_column(Text, nullable=False, index=True,
        comment="architecture family of base_model (crawlers.taxonomy): SD1.x, SDXL, Flux.1, ...; unknown when none")
    trained_words: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}",
        comment="trigger words the creator gave (trainedWords)")
    description_text: Mapped[str] = mapped_column(Text, nullable=False, server_default="",
        comment="the version's notes (HTML) as plain text")
    nsfw_level: Mapped[int | None] = mapped_column(Integer,
        comment="the API's nsfwLevel bitmask of the version (2024+)")
    download_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0",
        comment="downloads of this version (Civitai stats)")
    rating: Mapped[float | None] = mapped_column(Float,
        comment="mean rating of this version, 0-5 (Civitai stats, 2023 era)")
    rating_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0",
        comment="number of ratings of this version")
    thumbs_up_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0",
        comment="thumbs-up reviews of this version")
    download_url: Mapped[str | None] = mapped_column(Text,
        comment="Civitai download URL of the version's primary file")
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
        comment="when the version was created on Civitai")
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
        comment="when the version was published on Civitai; null in most 2023 data")
    removed_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), comment="when the version stopped appearing in its model's listing"
    )


class ModelFile(Base):
    """Files of a version with every hash kind Civitai gives, upper-cased and indexed for lookups."""

    __tablename__ = "model_files"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False,
        comment="Civitai file id")
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False, index=True,
        comment="the version the file belongs to")
    name: Mapped[str] = mapped_column(Text, nullable=False,
        comment="file name as uploaded")
    name_stem: Mapped[str] = mapped_column(Text, nullable=False, comment="lower-case name without extension, for <lora:...> tags")
    type: Mapped[str | None] = mapped_column(Text,
        comment="Civitai file type: Model, Pruned Model, VAE, Training Data, Config, ...")
    is_primary: Mapped[bool] = mapped_column(Boolean, nullable=False,
        comment="the version's primary file (the one that is downloaded and served)")
    size_kb: Mapped[float | None] = mapped_column(Float,
        comment="file size in KiB")
    format: Mapped[str | None] = mapped_column(Text,
        comment="file format from the API metadata: SafeTensor, PickleTensor, ...")
    fp: Mapped[str | None] = mapped_column(Text,
        comment="precision from the API metadata: fp16, fp32, bf16")
    pickle_scan: Mapped[str | None] = mapped_column(Text,
        comment="Civitai's pickle scan result (Success, Danger, Pending, ...)")
    virus_scan: Mapped[str | None] = mapped_column(Text,
        comment="Civitai's virus scan result")
    download_url: Mapped[str | None] = mapped_column(Text,
        comment="Civitai download URL of this file")
    sha256: Mapped[str | None] = mapped_column(Text, index=True,
        comment="SHA256 of the file, upper-case hex")
    autov1: Mapped[str | None] = mapped_column(Text, index=True,
        comment="A1111 AutoV1 hash (8 hex, of a slice of the file), upper-case")
    autov2: Mapped[str | None] = mapped_column(Text, index=True,
        comment="A1111 AutoV2 hash (first 10 hex of SHA256), upper-case")
    autov3: Mapped[str | None] = mapped_column(Text, index=True,
        comment="AutoV3 hash (safetensors tensor data), upper-case")
    crc32: Mapped[str | None] = mapped_column(Text, index=True,
        comment="CRC32 of the file, upper-case hex")
    blake3: Mapped[str | None] = mapped_column(Text, index=True,
        comment="BLAKE3 of the file, upper-case hex")

    __table_args__ = (Index("ix_model_files_name_stem", "name_stem"),
                      {"comment": "Files of each version with every hash kind Civitai gives (upper-case hex)"})


class Image(Base):
    """An example image as listed in a version's gallery (one image can be posted to several galleries)."""

    __tablename__ = "images"
    __table_args__ = {"comment": "Example images as listed in a version's gallery, with their generation metadata"}
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False,
                                    comment="Civitai image id (from the URL when the API omits it)")
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True,
                                            index=True,
        comment="the version whose gallery lists the image")
    model_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True,
        comment="the model of that version")
    position: Mapped[int] = mapped_column(Integer, nullable=False,
        comment="order in the gallery, from 0")
    url: Mapped[str | None] = mapped_column(Text,
        comment="Civitai CDN URL of the image")
    width: Mapped[int | None] = mapped_column(Integer,
        comment="width in pixels")
    height: Mapped[int | None] = mapped_column(Integer,
        comment="height in pixels")
    nsfw_level: Mapped[int | None] = mapped_column(Integer, comment="1 PG, 2 PG13, 4 R, 8 X, 16 XXX, 32 Blocked; null unrated")
    nsfw: Mapped[bool] = mapped_column(Boolean, nullable=False, comment="never used for descriptions or embeddings")
    has_meta: Mapped[bool] = mapped_column(Boolean, nullable=False,
        comment="the image came with generation metadata")
    prompt: Mapped[str | None] = mapped_column(Text,
        comment="the generation prompt (meta prompt)")
    negative_prompt: Mapped[str | None] = mapped_column(Text,
        comment="the negative prompt (meta negativePrompt)")
    sampler: Mapped[str | None] = mapped_column(Text,
        comment="sampler name (meta sampler)")
    steps: Mapped[int | None] = mapped_column(Integer,
        comment="sampling steps (meta steps)")
    cfg_scale: Mapped[float | None] = mapped_column(Float,
        comment="classifier-free guidance scale (meta cfgScale)")
    seed: Mapped[int | None] = mapped_column(BigInteger,
        comment="generation seed (meta seed)")
    checkpoint_name: Mapped[str | None] = mapped_column(Text, comment="meta Model")
    checkpoint_hash: Mapped[str | None] = mapped_column(Text, comment="meta 'Model hash' or hashes.model, upper-case")


class ImageResource(Base):
    """Each resource an image names (or the gallery it was posted to), and the version it resolved to, if any."""

    __tablename__ = "image_resources"
    image_id: Mapped[int] = mapped_column(BigInteger, primary_key=True,
        comment="the image (images.id)")
    version_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, comment="the gallery the image is listed in")
    position: Mapped[int] = mapped_column(Integer, primary_key=True, comment="0 is the gallery itself")
    role: Mapped[str] = mapped_column(Text, nullable=False, comment="checkpoint, lora, embedding, hypernetwork, vae")
    sources: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False,
        comment="where the image names it: civitaiResources, resources, model_hash, hashes, addnet, prompt_tag, "
                "or gallery")
    name: Mapped[str | None] = mapped_column(Text,
        comment="resource name as the image gives it (e.g. the <lora:name> stem)")
    hash: Mapped[str | None] = mapped_column(Text,
        comment="resource hash as the image gives it, upper-case")
    ref_version_id: Mapped[int | None] = mapped_column(BigInteger, comment="version id the image itself gives")
    weight: Mapped[float | None] = mapped_column(Float,
        comment="strength the image used it at (e.g. <lora:name:0.8>)")
    resolved_version_id: Mapped[int | None] = mapped_column(BigInteger, index=True,
        comment="the catalogued version the resource resolved to; null when unresolved")
    resolved_by: Mapped[str | None] = mapped_column(Text, comment="version_id, hash, file_name or gallery")

    __table_args__ = (
        ForeignKeyConstraint(["image_id", "version_id"], ["images.id", "images.version_id"], ondelete="CASCADE"),
        {"comment": "Resources an example image names, and its gallery, resolved to versions where possible"},
    )


class AdapterCheckpointLink(Base):
    """Co-usage evidence: images that used an adapter version together with a checkpoint version."""

    __tablename__ = "adapter_checkpoint_links"
    __table_args__ = {"comment": "Co-usage: example images that used an adapter version with a checkpoint version"}
    adapter_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True,
        comment="the adapter version (LoRA, LoCon, DoRA, LyCORIS, embedding, hypernetwork)")
    checkpoint_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True, index=True,
        comment="the checkpoint version used with it")
    image_count: Mapped[int] = mapped_column(Integer, nullable=False,
        comment="example images that used both")
    sfw_image_count: Mapped[int] = mapped_column(Integer, nullable=False,
        comment="of those, images that are not NSFW")
    avg_weight: Mapped[float | None] = mapped_column(Float, comment="mean adapter strength where images give one")
    weighted_image_count: Mapped[int] = mapped_column(Integer, nullable=False,
        comment="of those, images that give the adapter's strength")
    adapter_family: Mapped[str] = mapped_column(Text, nullable=False,
        comment="base-model family of the adapter version")
    checkpoint_family: Mapped[str] = mapped_column(Text, nullable=False,
        comment="base-model family of the checkpoint version")
    family_compatible: Mapped[bool] = mapped_column(Boolean, nullable=False,
        comment="the two versions share a base-model family")


class CrawlState(Base):
    """Where a crawl of one listing stands; written in the same transaction as each page's items."""

    __tablename__ = "crawl_state"
    __table_args__ = {"comment": "Where the crawl of one listing stands: its cursor and counts"}
    key: Mapped[str] = mapped_column(Text, primary_key=True, comment="source and filters of the listing")
    params: Mapped[dict] = mapped_column(JSONB, nullable=False,
        comment="the listing's query parameters")
    next_url: Mapped[str | None] = mapped_column(Text, comment="the page to fetch next; null once finished")
    pages_done: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0",
        comment="pages fetched so far")
    items_seen: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0",
        comment="items received so far")
    stale_pages: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0",
                                             comment="pages in a row that listed no model new to this crawl")
    started_at: Mapped[datetime] = _now(comment="when this crawl of the listing started")
    updated_at: Mapped[datetime] = _now(comment="when the last page was stored")
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
        comment="when the crawl reached the listing's end; null while running")


class CrawlSeenModel(Base):
    """The models the current crawl of a listing has listed so far (for the deletion check after a complete crawl,
    and to notice pages that bring nothing new); emptied when the crawl starts and when it finishes."""

    __tablename__ = "crawl_seen_models"
    __table_args__ = {"comment": "Models the current crawl of a listing has seen (for the deletion check)"}
    key: Mapped[str] = mapped_column(ForeignKey("crawl_state.key", ondelete="CASCADE"), primary_key=True,
        comment="the listing (crawl_state.key)")
    model_id: Mapped[int] = mapped_column(BigInteger, primary_key=True,
        comment="a model the listing returned")


class CrawlSeenPage(Base):
    """The pages the current crawl of a listing has fetched, by the md5 of their URL: a next page that was fetched
    before is a cursor cycle."""

    __tablename__ = "crawl_seen_pages"
    __table_args__ = {"comment": "Pages the current crawl of a listing has fetched (to detect cursor cycles)"}
    key: Mapped[str] = mapped_column(ForeignKey("crawl_state.key", ondelete="CASCADE"), primary_key=True,
        comment="the listing (crawl_state.key)")
    url_md5: Mapped[str] = mapped_column(Text, primary_key=True, comment="md5 of the page's URL (its cursor)")
    page: Mapped[int] = mapped_column(Integer, nullable=False, comment="its number in the crawl, from 1")


class CrawlRun(Base):
    __tablename__ = "crawl_runs"
    __table_args__ = {"comment": "One row per crawl or dump ingest: what was asked, how it ended, what it counted"}
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True,
        comment="run number")
    source: Mapped[str] = mapped_column(Text, nullable=False,
        comment="api or dump:<file name>")
    params: Mapped[dict] = mapped_column(JSONB, nullable=False,
        comment="what the run was asked to fetch (listing filters, limits, dump path)")
    status: Mapped[str] = mapped_column(Text, nullable=False, comment="running, succeeded, failed")
    started_at: Mapped[datetime] = _now(comment="when the run started")
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
        comment="when the run ended; null while running")
    pages: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0",
        comment="pages fetched (API) or read (dump)")
    items_received: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0",
        comment="model items received")
    models_new: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0",
        comment="models stored for the first time")
    models_changed: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0",
        comment="models whose raw JSON changed")
    models_unchanged: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0",
        comment="models received again unchanged")
    models_deleted: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0",
        comment="models marked deleted by this run")
    quarantined: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0",
        comment="items quarantined by this run")
    error: Mapped[str | None] = mapped_column(Text,
        comment="why the run failed; null otherwise")


class Quarantine(Base):
    """Items that could not be stored or normalised: the error and the payload as received."""

    __tablename__ = "quarantine"
    __table_args__ = {"comment": "Items that could not be stored or normalised, with the error and payload"}
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True,
        comment="quarantine entry number")
    payload_sha: Mapped[str] = mapped_column(Text, nullable=False, unique=True,
        comment="hash of the payload (one entry per distinct payload)")
    stage: Mapped[str] = mapped_column(Text, nullable=False, comment="crawl (no usable id) or normalise")
    source: Mapped[str] = mapped_column(Text, nullable=False,
        comment="api or dump:<file name>")
    model_id: Mapped[int | None] = mapped_column(BigInteger, index=True,
        comment="the model id when the payload had a usable one")
    error: Mapped[str] = mapped_column(Text, nullable=False,
        comment="why the item was quarantined")
    payload: Mapped[dict | None] = mapped_column(JSONB,
        comment="the item as received, when it was valid JSON")
    payload_text: Mapped[str | None] = mapped_column(Text, comment="when the payload was not valid JSON")
    created_at: Mapped[datetime] = _now(comment="when the item was quarantined")




class DerivedStamp(Base):
    """Which state of the catalogue a derived table was last computed from, so unchanged inputs skip the work."""

    __tablename__ = "derived_stamps"
    __table_args__ = {"comment": "The catalogue state each derived table was last computed from"}
    name: Mapped[str] = mapped_column(Text, primary_key=True,
        comment="the derived table (image_resources, adapter_checkpoint_links)")
    stamp: Mapped[str] = mapped_column(Text, nullable=False,
        comment="fingerprint of the inputs it was computed from")
    updated_at: Mapped[datetime] = _now(comment="when it was last computed")


class Description(Base):
    """What a describer said about a model version; cached by (version, describer, prompt version, inputs)."""

    __tablename__ = "descriptions"
    __table_args__ = {"comment": "What a describer said about a version: text, kind, trigger words, weight"}
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True,
        comment="the described model version")
    describer: Mapped[str] = mapped_column(Text, primary_key=True,
        comment="the describer that wrote it (card-text, openai:<model>, vlm:<model>)")
    prompt_version: Mapped[str] = mapped_column(Text, primary_key=True,
        comment="version of the describer's prompt; a new one re-describes")
    input_sha: Mapped[str] = mapped_column(Text, nullable=False, comment="hash of the card the description was made from")
    text: Mapped[str] = mapped_column(Text, nullable=False,
        comment="what the model does, in a few sentences")
    kind: Mapped[str] = mapped_column(Text, nullable=False, index=True,
        comment="style, character, object, concept (adapters), or checkpoint")
    trigger_words: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}",
        comment="words to put in the prompt to activate the adapter")
    recommended_weight: Mapped[float] = mapped_column(Float, nullable=False,
        comment="suggested adapter strength (from <lora:name:w> in example prompts, else a default)")
    created_at: Mapped[datetime] = _now(comment="when the description was stored")


class PreferredDescriber(Base):
    """The describer key the version_cards view applies db/descriptions.py's rule with: a view takes no
    parameters, so the describe step records the key it ran with here (one row)."""

    __tablename__ = "preferred_describer"
    __table_args__ = (CheckConstraint("singleton", name="preferred_describer_one_row"),
                      {"comment": "The describer whose descriptions version_cards shows (one row, set by the describe "
                                  "step)"})
    singleton: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=true(),
                                            comment="always true: the table holds one row")
    describer: Mapped[str] = mapped_column(Text, nullable=False, comment="the configured describer's name")
    prompt_version: Mapped[str] = mapped_column(Text, nullable=False, comment="its prompt version")
    fallback: Mapped[str] = mapped_column(Text, nullable=False,
                                          comment="the describer whose description stands in where it failed")
    fallback_version: Mapped[str] = mapped_column(Text, nullable=False, comment="the fallback's prompt version")
    recorded_at: Mapped[datetime] = _now(comment="when a describe step last set it")


class Embedding(Base):
    """One vector per (version, embedding space): [text || image], halves L2-normalised.

    The column has no fixed dimension so several spaces share it; retrieval casts to the space's dimension, which
    is what the per-space partial HNSW indexes (built by the retrieval_index asset) are defined on.
    """

    __tablename__ = "embeddings"
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True,
        comment="the embedded model version")
    space: Mapped[str] = mapped_column(Text, primary_key=True, comment="encoder(s) and dimensions, e.g. minilm-l6-v2|384+0")
    role: Mapped[str] = mapped_column(Text, nullable=False, comment="checkpoint or adapter: each has its own index")
    base_model_family: Mapped[str] = mapped_column(Text, nullable=False, server_default="unknown",
                                                   comment="the version's base-model family (per-family HNSW indexes)")
    emb: Mapped[list[float]] = mapped_column(Vector(), nullable=False,
        comment="[text || image] vector; its dimension is text_dim + image_dim")
    text_dim: Mapped[int] = mapped_column(Integer, nullable=False,
        comment="dimensions of the text half")
    image_dim: Mapped[int] = mapped_column(Integer, nullable=False,
        comment="dimensions of the image half (0 without an image encoder)")
    images_embedded: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0",
        comment="SFW example images averaged into the image half (0: image half is zero)")
    input_sha: Mapped[str] = mapped_column(Text, nullable=False, comment="hash of the embedded text, image URLs and encoder")
    lexemes: Mapped[str | None] = mapped_column(TSVECTOR, comment="the embedded text's words (BM25 in retrieval)")
    lexical_length: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0",
                                                comment="how many words the embedded text has (BM25's length)")
    created_at: Mapped[datetime] = _now(comment="when the vector was stored")

    __table_args__ = (Index("ix_embeddings_lexemes", "lexemes", postgresql_using="gin"),
                      {"comment": "One vector per (version, embedding space): [text || image], halves L2-normalised"})


class LexicalTerm(Base):
    """In how many embedded texts of a space and role a word occurs: the IDF of retrieval's BM25 (rebuilt by the
    retrieval_index asset)."""

    __tablename__ = "lexical_terms"
    __table_args__ = {"comment": "Document frequency of each word per space and role (BM25 IDF)"}
    space: Mapped[str] = mapped_column(Text, primary_key=True,
        comment="the embedding space (embeddings.space)")
    role: Mapped[str] = mapped_column(Text, primary_key=True,
        comment="checkpoint or adapter")
    lexeme: Mapped[str] = mapped_column(Text, primary_key=True, comment="a word as to_tsvector('english') stems it")
    documents: Mapped[int] = mapped_column(Integer, nullable=False,
        comment="embedded texts that contain the word")


class LexicalCorpus(Base):
    """How many embedded texts a space and role has, and their mean length in words (BM25's N and avgdl)."""

    __tablename__ = "lexical_corpus"
    __table_args__ = {"comment": "Embedded texts per space and role and their mean length (BM25 N, avgdl)"}
    space: Mapped[str] = mapped_column(Text, primary_key=True,
        comment="the embedding space (embeddings.space)")
    role: Mapped[str] = mapped_column(Text, primary_key=True,
        comment="checkpoint or adapter")
    documents: Mapped[int] = mapped_column(Integer, nullable=False,
        comment="embedded texts of this space and role")
    average_length: Mapped[float] = mapped_column(Float, nullable=False,
        comment="their mean length in words")


class VersionRole(Base):
    """What search answers a served version as: checkpoint, content (answers a prompt), enhancer (a detail or
    quality tweak used with any prompt) or negative (an embedding for the negative prompt); decided from usage."""

    __tablename__ = "version_roles"
    __table_args__ = {"comment": "What search answers a served version as, decided from usage"}
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True,
        comment="the served model version")
    role: Mapped[str] = mapped_column(Text, nullable=False, comment="checkpoint, content, enhancer or negative")
    reason: Mapped[str] = mapped_column(Text, nullable=False, comment="the evidence the role was decided from")
    decided_at: Mapped[datetime] = _now(comment="when the role was decided")


class SearchIndexGeneration(Base):
    """One build of a space's in-memory search index (written by the retrieval_index asset): serving processes
    load the newest generation and reload when a newer one appears (NOTIFY zoo_search_index)."""

    __tablename__ = "search_index_generations"
    __table_args__ = {"comment": "Builds of the in-memory search index, one per space and generation"}
    space: Mapped[str] = mapped_column(Text, primary_key=True, comment="the embedding space the index serves")
    generation: Mapped[int] = mapped_column(BigInteger, primary_key=True, comment="increases with every build")
    built_at: Mapped[datetime] = _now(comment="when the generation was built")
    versions: Mapped[int] = mapped_column(Integer, nullable=False, comment="served versions the index holds")
    bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="size of its stored parts")
    manifest: Mapped[dict] = mapped_column(JSONB, nullable=False,
                                           comment="the arrays (name, dtype, shape) and settings the parts hold")


class SearchIndexPart(Base):
    """The bytes of one array of a search-index generation, in chunks (a bytea value holds at most 1 GB)."""

    __tablename__ = "search_index_parts"
    space: Mapped[str] = mapped_column(Text, primary_key=True,
        comment="the generation's space")
    generation: Mapped[int] = mapped_column(BigInteger, primary_key=True,
        comment="the generation's number")
    part: Mapped[str] = mapped_column(Text, primary_key=True, comment="the array's name in the manifest")
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True, comment="0, 1, ...: concatenated in order")
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False,
        comment="the chunk's bytes")

    __table_args__ = (ForeignKeyConstraint(["space", "generation"], ["search_index_generations.space",
                                                                     "search_index_generations.generation"],
                                           ondelete="CASCADE"),
                      {"comment": "The bytes of each array of a search-index generation, in chunks"})


class StudioJob(Base):
    """A generate or edit request made over HTTP, its inputs and its result. The queue (procrastinate_jobs, see
    serving/http/queue.py) dispatches it to one server process and holds its status; this row holds what that
    process needs and what it made, so any process answers the job's status and image."""

    __tablename__ = "studio_jobs"
    __table_args__ = {"comment": "Generate and edit requests made over HTTP: inputs, result image and error"}
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
    created_at: Mapped[datetime] = _now(comment="when the job was queued")
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
        comment="when a server process started it")
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
        comment="when it succeeded or failed")


class RetrievalRanker(Base):
    """A ranker learned from usage (one LightGBM lambdarank model per search level), trained by the retrieval_ranker
    asset on one index generation and read by every search engine of the space."""

    __tablename__ = "retrieval_rankers"
    __table_args__ = {"comment": "Rankers learned from usage (LightGBM lambdarank), one row per training run"}
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True,
        comment="ranker number; the newest of a space is used")
    space: Mapped[str] = mapped_column(Text, nullable=False, index=True, comment="the embedding space it ranks in")
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False, comment="the index generation it was trained on")
    trained_at: Mapped[datetime] = _now(comment="when it was trained")
    features: Mapped[list] = mapped_column(JSONB, nullable=False, comment="the feature columns, in order")
    checkpoint_model: Mapped[str | None] = mapped_column(Text, comment="LightGBM model text of level 1")
    adapter_model: Mapped[str | None] = mapped_column(Text, comment="LightGBM model text of level 2")
    metrics: Mapped[dict] = mapped_column(JSONB, nullable=False, comment="training data, validation against hand weights")


class ModelChange(Base):
    """What one refresh run changed about one model (db/history.py records it as models_raw is written)."""

    __tablename__ = "model_changes"
    __table_args__ = (
        CheckConstraint("change IN ('added', 'changed', 'deleted', 'restored')", name="ck_model_changes_change"),
        Index("ix_model_changes_changed_at", "changed_at"),
        {"comment": "What each refresh run changed, per model: added, changed (which fields), deleted or restored"},
    )
    run_id: Mapped[int] = mapped_column(ForeignKey("crawl_runs.id", ondelete="CASCADE"), primary_key=True,
                                        comment="the refresh run that saw the change (crawl_runs.id)")
    model_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True,
                                          comment="Civitai model id (models_raw.id)")
    change: Mapped[str] = mapped_column(Text, nullable=False, comment="added, changed, deleted or restored")
    fields: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default="{}",
        comment="what changed: description, files, images, licence, nsfw, other, status, versions (empty for added "
                "and deleted; counts alone are not history)")
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False,
                                                 comment="when the change was stored")


class ModelRawHistory(Base):
    """The raw item a change replaced: models_raw holds the current one, so together they give any past state."""

    __tablename__ = "models_raw_history"
    __table_args__ = (
        ForeignKeyConstraint(["run_id", "model_id"], ["model_changes.run_id", "model_changes.model_id"],
                             ondelete="CASCADE"),
        {"comment": "Each /models item as it was before a refresh run changed it (models_raw holds the current one)"},
    )
    run_id: Mapped[int] = mapped_column(BigInteger, primary_key=True,
                                        comment="the refresh run that replaced this item (crawl_runs.id)")
    model_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, comment="Civitai model id")
    raw: Mapped[dict] = mapped_column(JSONB, nullable=False, comment="the item as it was (JSON)")
    raw_sha: Mapped[str] = mapped_column(Text, nullable=False, comment="blake2b of the item's canonical JSON")
    source: Mapped[str] = mapped_column(Text, nullable=False, comment="where the item came from: 'api' or 'dump:<file>'")
    fetched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False,
                                                 comment="when this content was received: it held from then until "
                                                         "replaced_at")
    replaced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False,
                                                  comment="when the refresh run replaced it")
