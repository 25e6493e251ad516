"""A search as a user states it, checked against what the zoo holds: filter values it knows (an unknown one is
answered with the allowed ones), a content level no higher than the server's, a bounded query; and the adapters for
a checkpoint the user already has (A1111/ComfyUI users have one loaded). The CLI and the HTTP API both call these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from config import Settings
from config.settings import CONTENT_LEVELS
from serving.search.results import Filters, Hit

MAX_QUERY_CHARS = 4000  # a prompt longer than this is not a prompt; A1111's own limit is far below
COMMERCIAL_USES = ("Image", "Rent", "RentCivit", "Sell")  # Civitai's allowCommercialUse values


class BadRequest(ValueError):
    """A search parameter the zoo cannot take: `field` names it, `allowed` lists what it can be (when finite)."""

    def __init__(self, field: str, message: str, allowed: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.field, self.allowed = field, list(allowed)


def content_levels(settings: Settings) -> list[str]:
    """The content levels a request may ask for: up to the server's ZOO_MAX_CONTENT_LEVEL."""
    return [name for name, level in CONTENT_LEVELS.items() if level <= settings.max_content_level]


def allowed_values(index, settings: Settings) -> dict[str, list[str]]:
    """What each filter can be on this zoo: its types and base models, the licences' commercial uses, the levels."""
    return {"type": sorted(name for name in index.codes["model_type"] if name),
            "base_model": sorted(name for name in index.codes["base_model"] if name),
            "commercial_use": list(COMMERCIAL_USES), "max_content_level": content_levels(settings)}


def check_query(query: str | None) -> str | None:
    """The query, or BadRequest for one too long or holding NUL bytes (None or blank: no text query)."""
    if query is None or not query.strip():
        return None
    if len(query) > MAX_QUERY_CHARS:
        raise BadRequest("q", f"the query is {len(query)} characters long; at most {MAX_QUERY_CHARS}")
    if "\x00" in query:
        raise BadRequest("q", "the query holds a NUL character")
    return query


@dataclass(frozen=True)
class FilterRequest:
    """Filters as given: names that must be checked against the zoo."""

    base_models: Sequence[str] = ()
    types: Sequence[str] = ()
    commercial_use: str | None = None
    min_downloads: int = 0
    max_content_level: str | None = None


def check_filters(request: FilterRequest, index, settings: Settings) -> Filters:
    """The engine's Filters for a request; BadRequest naming the allowed values for any value the zoo lacks. The
    content level is the server's unless the request asks for less."""
    allowed = allowed_values(index, settings)
    for field, values in (("base_model", request.base_models), ("type", request.types),
                          ("commercial_use", [request.commercial_use] if request.commercial_use else []),
                          ("max_content_level", [request.max_content_level] if request.max_content_level else [])):
        unknown = [value for value in values if value not in allowed[field]]
        if unknown:
            raise BadRequest(field, f"{field} {', '.join(map(repr, unknown))} is not one this zoo holds or the "
                                    f"server serves", allowed[field])
    if request.min_downloads < 0:
        raise BadRequest("min_downloads", "min_downloads must be at least 0")
    level = CONTENT_LEVELS[request.max_content_level] if request.max_content_level else settings.max_content_level
    return Filters(base_models=tuple(request.base_models), types=tuple(request.types),
                   commercial_use=request.commercial_use, min_downloads=request.min_downloads,
                   max_content_level=min(level, settings.max_content_level))


def served_checkpoint(retriever, version_id: int) -> Hit | None:
    """A served checkpoint version as a hit (the studio's catalogue lookup, limited to what the index serves)."""
    from serving.studio.catalogue import Catalogue

    if retriever.search_engine.index.row_of.get(int(version_id)) is None:
        return None
    hit = Catalogue(retriever.db, retriever.describer_key).hits([version_id]).get(int(version_id))
    return hit if hit is not None and hit.type == "Checkpoint" else None


def adapters_for_checkpoint(retriever, version_id: int, query: str | None, *, top_k: int = 10,
                            filters: Filters = Filters()) -> tuple[Hit, list[Hit], list[Hit]]:
    """The checkpoint, its adapters ranked for `query` (without one: by usage with it and popularity) and the
    negative embeddings that suit it. BadRequest when the version is not a served checkpoint."""
    checkpoint = served_checkpoint(retriever, version_id)
    if checkpoint is None:
        raise BadRequest("version_id", f"version {version_id} is not a checkpoint this zoo serves")
    q = retriever.query_vector(query) if query else np.zeros(retriever.dimension, dtype=np.float32)
    adapters = retriever.adapters(q, checkpoint, top_k, filters, words=query)
    return checkpoint, adapters, retriever.search_engine.negatives(checkpoint, filters)
