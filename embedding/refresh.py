"""The describe and embed steps: only versions whose inputs changed are (re)described or (re)embedded.

A step's unit of work is a shard of served versions (version_id % shards), so Dagster can run shards as
partitions in parallel processes here, or fan them out to GPU workers in production.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import orjson
from sqlalchemy import Connection, Engine

from crawlers.a1111 import MODEL_TAG
from db.cards import served_cards
from db.descriptions import DescriberKey, preferred_description_rows, record_preferred_describer
from db.lexicon import fill_lexemes, versions_without_lexemes
from db.vectors import stored_input_shas, upsert_descriptions, upsert_embeddings
from embedding.describers import AdapterCard, CardTextDescriber, Describer, Description
from embedding.encoders import ImageEncoder, TextEncoder, embed_card_vectors

log = logging.getLogger(__name__)
FALLBACK_DESCRIBER = {"fallback": CardTextDescriber.name, "fallback_version": CardTextDescriber.prompt_version}
EXAMPLE_PROMPTS_EMBEDDED = 6


def _sha(payload: object) -> str:
    return hashlib.blake2b(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def card_from_row(row: dict) -> AdapterCard:
    return AdapterCard(
        version_id=row["version_id"], model_name=row["model_name"], version_name=row["version_name"],
        model_type=row["model_type"], base_model=row["base_model"], card_text=row["card_text"] or "",
        tags=tuple(row["tags"]), trained_words=tuple(row["trained_words"]),
        example_prompts=tuple(row["example_prompts"]), example_image_urls=tuple(row["example_image_urls"]),
        example_weights=tuple(float(w) for w in row["example_weights"]),
    )


def role_of(model_type: str) -> str:
    return "checkpoint" if model_type == "Checkpoint" else "adapter"


@dataclass
class DescribeCounts:
    served: int = 0
    described: int = 0
    cached: int = 0
    seconds_per_item: float = 0.0


def describe_pending(engine: Engine, describer: Describer, shard: int = 0, shards: int = 1,
                     batch_size: int = 64) -> DescribeCounts:
    """Describe served versions whose card changed since this describer (and prompt version) last saw them, and
    record its key as the one the version_cards view applies."""
    counts = DescribeCounts()
    with engine.begin() as conn:
        record_preferred_describer(conn, describer_key(describer))
    with engine.connect() as conn:
        cards = [card_from_row(row) for row in served_cards(conn, shard, shards)]
        stored = stored_input_shas(conn, "descriptions", "describer", describer.name,
                                   f"AND prompt_version = '{describer.prompt_version}'")
    counts.served = len(cards)
    pending = [(card, _sha(asdict(card))) for card in cards]
    pending = [(card, sha) for card, sha in pending if stored.get(card.version_id) != sha]
    counts.cached = counts.served - len(pending)
    started = time.perf_counter()
    for start in range(0, len(pending), batch_size):
        batch = pending[start:start + batch_size]
        descriptions = describer.describe([card for card, _ in batch])
        with engine.begin() as conn:
            upsert_descriptions(conn, [
                {"version_id": card.version_id, "describer": d.describer, "prompt_version": d.prompt_version,
                 "input_sha": sha, "text": d.text, "kind": d.kind, "trigger_words": list(d.trigger_words),
                 "recommended_weight": d.recommended_weight}
                for (card, sha), d in zip(batch, descriptions, strict=True)
            ])
        counts.described += len(batch)
    if counts.described:
        counts.seconds_per_item = round((time.perf_counter() - started) / counts.described, 6)
    return counts


def embedding_text(card: AdapterCard, description: Description) -> str:
    """What the text half encodes: the description, trigger words and the adapter's own example prompts
    (the strongest evidence of what it is for; lora tags removed so the name does not leak into prompts)."""
    prompts = [MODEL_TAG.sub("", p).strip() for p in card.example_prompts[:EXAMPLE_PROMPTS_EMBEDDED]]
    parts = [f"{card.model_name}.", description.text]
    if description.trigger_words:
        parts.append("Trigger words: " + ", ".join(description.trigger_words) + ".")
    if card.tags:
        parts.append("Tags: " + ", ".join(card.tags[:12]) + ".")
    parts.extend(p for p in prompts if p)
    return " ".join(parts)


def describer_key(describer: Describer) -> DescriberKey:
    """Whose stored descriptions a describer's users read: its own, else the card-text fallback stored for cards
    its backend failed on."""
    return DescriberKey(describer.name, describer.prompt_version, **FALLBACK_DESCRIBER)


def preferred_descriptions(conn: Connection, key: DescriberKey) -> dict[int, Description]:
    """version_id -> the stored description that wins under `key` (db/descriptions.py's rule)."""
    return {version_id: Description(text=row["text"], kind=row["kind"], trigger_words=tuple(row["trigger_words"]),
                                    recommended_weight=row["recommended_weight"], describer=row["describer"],
                                    prompt_version=row["prompt_version"])
            for version_id, row in preferred_description_rows(conn, key).items()}


def space_name(text_encoder: TextEncoder, image_encoder: ImageEncoder | None) -> str:
    image_name = getattr(image_encoder, "name", "none") if image_encoder else "none"
    return f"{text_encoder.name}|{image_name}|{text_encoder.text_dim}+{_image_dimension(image_encoder)}"


def space_dimension(text_encoder: TextEncoder, image_encoder: ImageEncoder | None) -> int:
    """The length of the space's [text || image] vectors (no image half without an image encoder)."""
    return text_encoder.text_dim + _image_dimension(image_encoder)


def _image_dimension(image_encoder: ImageEncoder | None) -> int:
    return image_encoder.image_dim if image_encoder else 0


@dataclass
class EmbedCounts:
    served: int = 0
    embedded: int = 0
    unchanged: int = 0
    undescribed: int = 0
    images_embedded: int = 0
    images_skipped: int = 0
    words_added: int = 0  # unchanged vectors stored before their words were
    seconds_per_item: float = 0.0


def embed_pending(engine: Engine, describer: Describer, text_encoder: TextEncoder,
                  image_encoder: ImageEncoder | None = None,
                  fetch_images: Callable[[Sequence[str]], list] | None = None,
                  shard: int = 0, shards: int = 1, batch_size: int = 64, max_images: int = 4) -> EmbedCounts:
    """Embed served versions whose text, image URLs or encoder changed: [text || mean of SFW image vectors]."""
    space = space_name(text_encoder, image_encoder)
    image_dim = _image_dimension(image_encoder)
    counts = EmbedCounts()
    with engine.connect() as conn:
        cards = {row["version_id"]: card_from_row(row) for row in served_cards(conn, shard, shards)}
        descriptions = preferred_descriptions(conn, describer_key(describer))
        stored = stored_input_shas(conn, "embeddings", "space", space)
        wordless = versions_without_lexemes(conn, space)
    counts.served = len(cards)
    pending, words_only = [], {}
    for version_id, card in cards.items():
        description = descriptions.get(version_id)
        if description is None:
            counts.undescribed += 1
            continue
        body = embedding_text(card, description)
        urls = list(card.example_image_urls[:max_images]) if image_encoder else []
        sha = _sha({"text": body, "images": urls, "space": space})
        if stored.get(version_id) == sha:
            counts.unchanged += 1
            if version_id in wordless:
                words_only[version_id] = body
            continue
        pending.append((card, body, urls, sha))
    if words_only:
        with engine.begin() as conn:
            counts.words_added = fill_lexemes(conn, space, words_only)
    started = time.perf_counter()
    for start in range(0, len(pending), batch_size):
        batch = pending[start:start + batch_size]
        text_vectors = text_encoder.encode_text([body for _, body, _, _ in batch])
        image_vectors, image_counts = _mean_image_vectors(batch, image_encoder, fetch_images, counts)
        vectors = embed_card_vectors(text_vectors, image_vectors, image_dim)
        with engine.begin() as conn:
            upsert_embeddings(conn, space, [
                {"version_id": card.version_id, "role": role_of(card.model_type), "emb": vector,
                 "text_dim": text_encoder.text_dim, "image_dim": image_dim, "images_embedded": n_images,
                 "input_sha": sha, "text": body}
                for (card, body, _, sha), vector, n_images in zip(batch, vectors, image_counts, strict=True)
            ])
        counts.embedded += len(batch)
    if counts.embedded:
        counts.seconds_per_item = round((time.perf_counter() - started) / counts.embedded, 6)
    return counts


def _mean_image_vectors(batch, image_encoder: ImageEncoder | None, fetch_images, counts: EmbedCounts):
    """Per item, the mean of its example images' vectors (None when it has none that could be fetched)."""
    if image_encoder is None or fetch_images is None:
        return None, [0] * len(batch)
    image_dim = image_encoder.image_dim
    means = np.zeros((len(batch), image_dim), dtype=np.float32)
    found = np.zeros(len(batch), dtype=bool)
    image_counts = []
    for row, (_, _, urls, _) in enumerate(batch):
        images = [image for image in fetch_images(urls) if image is not None]
        counts.images_skipped += len(urls) - len(images)
        counts.images_embedded += len(images)
        image_counts.append(len(images))
        if images:
            means[row] = image_encoder.encode_images(images).mean(axis=0)
            found[row] = True
    return np.where(found[:, None], means, 0.0), image_counts
