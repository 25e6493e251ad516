"""The Python API of search: what the CLI, the HTTP server and applications embedding retrieval call.

    from config import Settings
    from serving.search import open_retriever, open_reranker, rerank_hits

    retriever = open_retriever(Settings.from_env())      # models and database opened once; reuse it
    result = retriever.search("watercolor lighthouse at dusk", top_k=10, top_checkpoints=3)
    result.checkpoints[0].name, [hit.name for hit in result.adapters]
    reranked = rerank_hits("watercolor lighthouse at dusk", result.adapters, open_reranker(settings))
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from PIL import Image

from config import Settings
from db.engine import get_engine
from db.migrate import ensure_migrated
from embedding.presets import ModelChoice, build_describer, build_query_encoders
from embedding.refresh import describer_key
from serving.search.results import Hit
from serving.search.retriever import Retriever

MAX_QUERY_IMAGE_PIXELS = 40_000_000


def open_retriever(settings: Settings, *, watch: bool = False) -> Retriever:
    """A retriever in the preset's embedding space: encoders loaded once, the newest search-index generation loaded
    on first use. `watch` keeps it on the newest generation from a background thread (long-lived processes)."""
    choice = ModelChoice.from_settings(settings)
    text_encoder, image_encoder = build_query_encoders(choice)
    db = ensure_migrated(get_engine(settings))
    return Retriever(db, text_encoder, image_encoder, describer=describer_key(build_describer(choice)), watch=watch)


def open_reranker(settings: Settings) -> tuple:
    """SmolLM2-135M-Instruct (the lite reranker), converted once under ZOO_HOME, then loaded in about a second."""
    from serving.search.llm import smollm2_dir

    return _load_reranker(smollm2_dir(settings.zoo_home))


@lru_cache(maxsize=1)
def _load_reranker(folder: Path) -> tuple:
    from serving.search.llm import load_smollm2

    return load_smollm2(folder)


def rerank_hits(prompt: str, hits: list[Hit], reranker: tuple) -> list[Hit]:
    """The hits in tree-rerank order, each with its rerank score and the round that last scored it. A hit with no
    description is read by its `why`."""
    from serving.search.rerank import tree_rerank

    if not hits:
        return []
    model, tok = reranker
    read = [hit if hit.description else replace(hit, description=hit.why) for hit in hits]
    given = {id(candidate): hit for candidate, hit in zip(read, hits, strict=True)}
    ranked = tree_rerank(model, tok, prompt, read)
    return [replace(given[id(r.candidate)], rerank_score=round(float(r.score), 6), rerank_round=r.round)
            for r in ranked]


def load_query_image(path: str | Path) -> Image.Image:
    """Open a query image, refusing decompression bombs and non-images with a clear error."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_QUERY_IMAGE_PIXELS:
                raise ValueError(f"{path}: image of {image.width}x{image.height} is too large")
            return image.convert("RGB")
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error
