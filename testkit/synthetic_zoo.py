"""Synthetic zoos of clustered vectors, for the retrieval benchmark and the index tests.

Real catalogues cluster (many anime LoRAs, many photoreal checkpoints), so vectors are drawn around cluster
centres; every version is a served SFW model with a primary file, in one of a few base-model families.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine

from db.catalogue_store import refresh_statistics
from db.copy import copy_rows
from db.lexicon import rebuild_lexicon
from db.vectors import upsert_embeddings

FAMILIES = (("SD 1.5", "SD1.x"), ("SDXL 1.0", "SDXL"), ("Flux.1 D", "Flux.1"))
VOCABULARY = 20_000  # distinct synthetic words, drawn Zipf-like as in real texts
WORDS_PER_TEXT = 170  # about the mean length of the 2023 dump's embedded texts


@dataclass(frozen=True)
class SyntheticSpace:
    """Stands in for an encoder where only the space's name and size matter (vectors are given directly)."""

    name: str
    text_dim: int

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        raise TypeError("a synthetic space has no text encoder: query it with vectors")


@dataclass
class SyntheticZoo:
    checkpoint_ids: np.ndarray
    checkpoint_vectors: np.ndarray
    checkpoint_families: np.ndarray
    adapter_ids: np.ndarray
    adapter_vectors: np.ndarray
    adapter_families: np.ndarray
    centres: np.ndarray


def clustered_unit_vectors(rng: np.random.Generator, centres: np.ndarray, n: int, spread: float) -> np.ndarray:
    picks = rng.integers(0, len(centres), n)
    vectors = centres[picks] + spread * rng.standard_normal((n, centres.shape[1])).astype(np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def synthetic_words(rng: np.random.Generator, n: int) -> str:
    """n words ('w<rank>') drawn with Zipf-like frequencies: a few very common words and a long tail of rare ones,
    so the lexical part of retrieval has real work (common words in many texts, rare ones in few)."""
    ranks = np.minimum(rng.zipf(1.3, n), VOCABULARY)
    return " ".join(f"w{rank}" for rank in ranks)


def create_synthetic_zoo(engine: Engine, space: str, *, checkpoints: int, adapters: int, dimension: int,
                         clusters: int = 64, spread: float = 0.35, seed: int = 0, first_id: int = 10_000_000,
                         batch: int = 5000) -> SyntheticZoo:
    """Insert served models, versions, primary files, vectors and their texts' words; returns the vectors for exact
    comparisons. Words come from their own random stream, so the vectors are the same as without them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dimension)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    total = checkpoints + adapters
    ids = np.arange(first_id, first_id + total)
    vectors = clustered_unit_vectors(rng, centres, total, spread)
    family_index = rng.integers(0, len(FAMILIES), total)
    downloads = rng.integers(0, 200_000, total)
    types = ["Checkpoint"] * checkpoints + ["LORA"] * adapters
    words_rng = np.random.default_rng(seed + 1_000_003)
    with engine.begin() as conn:
        copy_rows(conn, "models", ("id", "name", "type", "schema_era", "nsfw_flag", "nsfw", "nsfw_reason",
                                   "download_count"),
                  ((int(i), f"synthetic {t} {i}", t, "2024+", False, False, "sfw: synthetic", int(d))
                   for i, t, d in zip(ids, types, downloads)))
        copy_rows(conn, "model_versions", ("id", "model_id", "position", "name", "base_model", "base_model_family"),
                  ((int(i), int(i), 0, "v1", FAMILIES[f][0], FAMILIES[f][1]) for i, f in zip(ids, family_index)))
        copy_rows(conn, "model_files", ("id", "version_id", "name", "name_stem", "is_primary"),
                  ((int(i), int(i), f"synthetic_{i}.safetensors", f"synthetic_{i}", True) for i in ids))
    for start in range(0, total, batch):
        with engine.begin() as conn:
            upsert_embeddings(conn, space, [
                {"version_id": int(ids[j]), "role": "checkpoint" if j < checkpoints else "adapter",
                 "emb": vectors[j], "text_dim": dimension, "image_dim": 0, "images_embedded": 0,
                 "input_sha": "synthetic", "text": synthetic_words(words_rng, WORDS_PER_TEXT)}
                for j in range(start, min(start + batch, total))])
    with engine.begin() as conn:
        rebuild_lexicon(conn, space)
    refresh_statistics(engine)
    families = np.array([FAMILIES[f][1] for f in family_index])
    return SyntheticZoo(ids[:checkpoints], vectors[:checkpoints], families[:checkpoints],
                        ids[checkpoints:], vectors[checkpoints:], families[checkpoints:], centres)
