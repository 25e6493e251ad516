"""Liveness and readiness for load balancers and orchestrators: `/healthz` answers while the process serves
requests; `/readyz` only once the search engine's generation is loaded (503 before), with the generation and how
many versions it holds, so a replica joins the pool only when it can answer searches."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from serving.http.errors import ProblemError, responses
from serving.http.schemas import Health
from serving.http.state import ServerState, server

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=responses(503))
def readyz(state: ServerState = Depends(server)) -> Health:
    live = state.retriever.live
    engine = live._current  # noqa: SLF001 - loaded or not, without loading it here
    if engine is None:
        raise ProblemError(503, "the search index is still loading")
    return Health(status="ready", generation=live.generation, versions=len(engine.index))
