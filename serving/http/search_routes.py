"""`/v1/search` (GET by text, POST with an uploaded image too) and `/v1/checkpoints/{id}/adapters`: the same hits
as `zoo search --json`, each with its Civitai page and (LoRA-family adapters) the `<lora:...>` tag to paste, the
checkpoint the adapters were chosen for, and the negative embeddings for it. Handlers are plain functions run in
the thread pool: a search is CPU work (encoding, scoring) that must not block the event loop."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, Query, UploadFile
from pydantic import Field

from crawlers.nsfw import LEVEL_NAMES
from serving.catalogue.served import civitai_url, paste_tag
from serving.http.errors import ProblemError, responses
from serving.http.schemas import AppliedFilters, HitOut, Schema, SearchResponse
from serving.http.state import ServerState, server
from serving.http.uploads import decode_image, upload_bytes
from serving.search.requests import (
    MAX_QUERY_CHARS,
    FilterRequest,
    adapters_for_checkpoint,
    check_filters,
    check_query,
)
from serving.search.results import Filters, Hit, SearchResult

router = APIRouter(prefix="/v1", tags=["search"])
MAX_TOP_K, MAX_CHECKPOINTS = 200, 100
VERSION_ID = Path(ge=1, le=2**63 - 1, description="a model version id")


class FilterParams(Schema):
    base_model: list[str] = Field(default_factory=list, max_length=50, description="repeatable, e.g. 'SD 1.5'")
    type: list[str] = Field(default_factory=list, max_length=20, description="repeatable, e.g. LORA")
    commercial_use: str | None = Field(None, description="the licence must allow it: Image, Rent, RentCivit, Sell")
    min_downloads: int = Field(0, ge=0, le=10**15)
    max_content_level: str | None = Field(None, description="PG or PG-13 (never above the server's)")
    top_k: int = Field(10, ge=1, le=MAX_TOP_K, description="adapters to return")
    rerank: bool = Field(False, description="reorder the adapters with the tree reranker (slow on a CPU)")


class SearchParams(FilterParams):
    q: str | None = Field(None, max_length=MAX_QUERY_CHARS, description="the prompt")
    checkpoints: int = Field(3, ge=0, le=MAX_CHECKPOINTS, description="checkpoints to return")


def _filters(params: FilterParams, state: ServerState, engine) -> Filters:
    request = FilterRequest(base_models=params.base_model, types=params.type, commercial_use=params.commercial_use,
                            min_downloads=params.min_downloads, max_content_level=params.max_content_level)
    return check_filters(request, engine.index, state.settings)


def hit_out(hit: Hit, base_url: str) -> HitOut:
    return HitOut(**hit.as_dict(), civitai_url=civitai_url(base_url, hit.model_id, hit.version_id),
                  lora_tag=paste_tag(hit.type, hit.name, hit.file_name, hit.version_id, hit.recommended_weight))


def _answer(state: ServerState, engine, query: str | None, filters: Filters, result: SearchResult,
            chosen_for: Hit | None) -> SearchResponse:
    base = state.settings.civitai_base_url
    applied = AppliedFilters(base_model=list(filters.base_models), type=list(filters.types),
                             commercial_use=filters.commercial_use, min_downloads=filters.min_downloads,
                             max_content_level=LEVEL_NAMES.get(filters.max_content_level or 0, ""))
    return SearchResponse(query=query, generation=engine.index.generation, filters=applied,
                          adapters_for=hit_out(chosen_for, base) if chosen_for else None,
                          checkpoints=[hit_out(h, base) for h in result.checkpoints],
                          adapters=[hit_out(h, base) for h in result.adapters],
                          negatives=[hit_out(h, base) for h in result.negatives])


def run_search(state: ServerState, params: SearchParams, image=None) -> SearchResponse:
    """A checked search and its answer (the API's and the gallery's); ProblemError/BadRequest for bad input."""
    query = check_query(params.q)
    if query is None and image is None:
        raise ProblemError(422, "give a text query (q), an image, or both")
    if image is not None and state.retriever.image_encoder is None:
        raise ProblemError(422, f"this server's preset ({state.settings.preset}) has no image encoder: search by text")
    engine = state.engine()
    filters = _filters(params, state, engine)
    result = state.retriever.search(query, image, top_k=params.top_k, top_checkpoints=params.checkpoints,
                                    filters=filters)
    if params.rerank and query:
        result.adapters = state.rerank(query, result.adapters)
    return _answer(state, engine, query, filters, result, result.checkpoints[0] if result.checkpoints else None)


@router.get("/search", response_model=SearchResponse, responses=responses(422, 503))
def search(params: Annotated[SearchParams, Query()], state: ServerState = Depends(server)) -> SearchResponse:
    """The best checkpoints for a prompt, then the adapters for the first of them (by kind and role), and the
    negative embeddings that suit it."""
    return run_search(state, params)


@router.post("/search", response_model=SearchResponse, responses=responses(400, 413, 422, 503))
def search_upload(params: Annotated[SearchParams, Form()], image: UploadFile | None = File(None),
                  state: ServerState = Depends(server)) -> SearchResponse:
    """As GET, with an optional uploaded image to search by (presets that embed images)."""
    data = upload_bytes(image)
    return run_search(state, params, decode_image(data, "image") if data else None)


@router.get("/checkpoints/{version_id}/adapters", response_model=SearchResponse,
            responses=responses(404, 422, 503))
def checkpoint_adapters(version_id: Annotated[int, VERSION_ID], params: Annotated[FilterParams, Query()],
                        q: Annotated[str | None, Query(max_length=MAX_QUERY_CHARS)] = None,
                        state: ServerState = Depends(server)) -> SearchResponse:
    """Adapters for a checkpoint you already have (its base-model family), ranked for `q`; without `q` by use with
    it and popularity."""
    return run_checkpoint_search(state, version_id, params, q)


def run_checkpoint_search(state: ServerState, version_id: int, params: FilterParams,
                          q: str | None) -> SearchResponse:
    """Adapters for one served checkpoint (the API's and the gallery's); 404 when the version is not served."""
    query = check_query(q)
    engine = state.engine()
    if engine.index.row_of.get(version_id) is None:
        raise ProblemError(404, f"version {version_id} is not served by this zoo")
    filters = _filters(params, state, engine)
    checkpoint, adapters, negatives = adapters_for_checkpoint(state.retriever, version_id, query,
                                                              top_k=params.top_k, filters=filters)
    if params.rerank and query:
        adapters = state.rerank(query, adapters)
    return _answer(state, engine, query, filters, SearchResult([], adapters, negatives), checkpoint)
