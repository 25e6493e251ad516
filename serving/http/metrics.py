"""Prometheus metrics at `/metrics`: requests by route template, method and status; latency histograms by route;
the search engine's loaded generation and index swaps; the studio queue's waiting and running jobs (read from the
shared database at scrape time, so every replica reports the same queue). Each app has its own registry; with
`--workers N` each process counts its own requests (scrape each, or run one process per container)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db.jobs import queue_depth
from serving.http.queue import QUEUE
from serving.http.state import ServerState

router = APIRouter(tags=["health"])
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The app's registry and instruments."""

    def __init__(self, state: ServerState) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("zoo_http_requests", "HTTP requests answered", ("route", "method", "status"),
                                registry=registry)
        self.latency = Histogram("zoo_http_request_seconds", "time to answer, by route", ("route", "method"),
                                 buckets=LATENCY_BUCKETS, registry=registry)
        live = state.retriever.live
        Gauge("zoo_search_index_generation", "the search index generation loaded (-1: none yet)",
              registry=registry).set_function(lambda: -1 if live.generation is None else live.generation)
        Gauge("zoo_search_index_swaps", "generations loaded by this process", registry=registry).set_function(
            lambda: live.swaps)
        queued = Gauge("zoo_studio_jobs", "studio jobs in the shared queue", ("state",), registry=registry)
        queued.labels("waiting").set_function(lambda: self._depth(state)[0])
        queued.labels("running").set_function(lambda: self._depth(state)[1])

    @staticmethod
    def _depth(state: ServerState) -> tuple[int, int]:
        try:
            with state.db.connect() as conn:
                return queue_depth(conn, QUEUE)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database blinked
            return -1, -1


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (not its path: ids would explode the labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
