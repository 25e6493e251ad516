"""The HTTP application: `create_app(settings)` builds the FastAPI app over one retriever (its live engine swaps in
each new search-index generation while serving), the studio and the job queue; tests inject their own objects.
`app_from_env()` is what `zoo serve` hands uvicorn (each worker process builds its own app from the environment)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi

from config import Settings
from serving.http import catalogue_routes, errors, gallery_routes, health, job_routes, metrics, search_routes
from serving.http.errors import PROBLEM_TYPE
from serving.http.limits import BodyLimit
from serving.http.queue import JobQueue
from serving.http.security import allow_origins
from serving.http.state import Reranker, ServerState
from serving.http.studio_jobs import run_job
from serving.http.studio_status import studio_problem

log = logging.getLogger(__name__)
ROUTERS = (search_routes.router, catalogue_routes.router, job_routes.router, health.router, metrics.router,
           gallery_routes.router)


def create_app(settings: Settings, *, retriever=None, studio=None, reranker: Reranker | None = None,
               routers: Sequence[APIRouter] = (), run_worker: bool = True) -> FastAPI:
    """The app. Without `retriever`/`studio` they are built here from `settings` (the retriever watching for new
    generations); `routers` are added after the server's own (the API and the gallery page at `/`);
    `run_worker=False` queues jobs without working them in this process."""
    state = _state(settings, retriever, studio, reranker)
    app = FastAPI(title="zoo", version="1", lifespan=_lifespan(state, owns_retriever=retriever is None,
                                                                   run_worker=run_worker),
                  description="Search Stable Diffusion checkpoints and adapters, read their cards, resolve files "
                              "and images to them, and generate or edit images with them. Errors are "
                              "application/problem+json.")
    app.state.zoo, app.state.settings = state, settings
    app.state.retriever, app.state.db = state.retriever, state.db
    app.state.metrics = metrics.Metrics(state)
    errors.install(app)
    for router in (*ROUTERS, *routers):
        app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(metrics.MetricsMiddleware, metrics=app.state.metrics)
    allow_origins(app, settings.cors_origins)
    app.openapi = lambda: _openapi(app)
    return app


def app_from_env() -> FastAPI:
    """The server's top: settings read once from the environment (uvicorn's factory in every worker process)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(Settings.from_env())


def _state(settings: Settings, retriever, studio, reranker) -> ServerState:
    if retriever is None:
        from serving.search import open_retriever

        retriever = open_retriever(settings, watch=True)
    problem = "generation is switched off on this server (ZOO_STUDIO=off)" if not settings.studio else None
    if studio is None and problem is None:
        problem = studio_problem(settings)
        if problem is None:
            from serving.studio.studio import Studio

            studio = Studio(settings, retriever=retriever)
    if problem:
        log.warning("generate and edit answer 503 here: %s", problem)
    state = ServerState(settings, retriever, retriever.db, studio=studio, studio_problem=problem, reranker=reranker)
    if problem is None:
        state.queue = JobQueue(state.db, lambda job_id: run_job(state.db, state.studio, job_id))
    return state


def _lifespan(state: ServerState, *, owns_retriever: bool, run_worker: bool):
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(asyncio.to_thread(_load_engine, state))
        if state.queue is not None:
            await _start_queue(state, run_worker)
        try:
            yield
        finally:
            if state.queue is not None:
                await state.queue.close()
            with contextlib.suppress(Exception):
                await loading
            if owns_retriever:
                state.retriever.live.close()

    return lifespan


def _load_engine(state: ServerState) -> None:
    try:
        state.retriever.search_engine  # noqa: B018 - loads the newest generation
    except Exception:  # noqa: BLE001 - /readyz stays 503; searches retry the load
        log.exception("loading the search index failed")


async def _start_queue(state: ServerState, run_worker: bool) -> None:
    try:
        await state.queue.open()
        if run_worker:
            await state.queue.start_worker()
    except Exception as error:  # noqa: BLE001 - the queue's database trouble: generate/edit answer 503
        log.exception("the job queue could not start")
        state.studio_problem = f"the job queue could not start ({type(error).__name__})"


def _openapi(app: FastAPI) -> dict:
    """OpenAPI with every error response as application/problem+json (FastAPI declares them as JSON)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for status, response in operation.get("responses", {}).items():
                    if status[:1] in "45":
                        response["content"] = {PROBLEM_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
                operation.get("responses", {}).pop("default", None)
        schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
        schema.get("components", {}).get("schemas", {}).pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema
