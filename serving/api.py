"""The Python API the CLI and the HTTP API call: open a retriever on the configured zoo, search it."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from PIL import Image

from config import Settings
from db.engine import get_engine
from db.migrate import ensure_migrated
from embedding.presets import ModelChoice, build_describer, build_encoders
from serving.retrieval import Filters, Hit, Retriever, SearchResult


def open_retriever(settings: Settings | None = None) -> Retriever:
    """A retriever in the preset's embedding space (models loaded once; reuse it for many queries)."""
    settings = settings or Settings.from_env()
    choice = ModelChoice.from_settings(settings)
    describer = build_describer(choice)
    text_encoder, image_encoder = build_encoders(choice)
    engine = ensure_migrated(get_engine(settings))
    return Retriever(engine, text_encoder, image_encoder, describer=describer.name,
                     prompt_version=describer.prompt_version, ef_search=settings.hnsw_ef_search)


@lru_cache(maxsize=1)
def load_reranker() -> tuple:
    """SmolLM2-135M-Instruct (the lite reranker), converted once under ZOO_HOME, then loaded in about a second."""
    from serving.llm import default_smollm2_dir, load_smollm2

    return load_smollm2(default_smollm2_dir())


def rerank_hits(prompt: str, hits: list[Hit], reranker: tuple | None = None) -> list[Hit]:
    """The hits in tree-rerank order, each with its rerank score and the round that last scored it."""
    from serving.rerank import Candidate, tree_rerank

    if not hits:
        return []
    model, tok = reranker or load_reranker()
    by_id = {str(hit.version_id): hit for hit in hits}
    ranked = tree_rerank(model, tok, prompt,
                         [Candidate(str(h.version_id), h.name, h.kind, h.description or h.why) for h in hits])
    return [replace(by_id[r.candidate.id], rerank_score=round(float(r.score), 6), rerank_round=r.round)
            for r in ranked]


def load_query_image(path: str | Path) -> Image.Image:
    """Open a query image, refusing decompression bombs and non-images with a clear error."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > 40_000_000:
                raise ValueError(f"{path}: image of {image.width}x{image.height} is too large")
            return image.convert("RGB")
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error


def search(query: str | None, image_path: str | None = None, *, top_k: int = 10, top_checkpoints: int = 3,
           filters: Filters = Filters(), retriever: Retriever | None = None) -> SearchResult:
    retriever = retriever or open_retriever()
    image = load_query_image(image_path) if image_path else None
    return retriever.search(query, image, top_k=top_k, top_checkpoints=top_checkpoints, filters=filters)
