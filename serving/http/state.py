"""What a server process holds, built once at start-up and shared by every request: the settings, the retriever
(its live engine swaps generations while serving), the database engine, the studio (or why it cannot run), the
reranker and the job queue. Routes reach it through `server(request)`; the gallery reads app.state.retriever,
app.state.settings and app.state.db directly."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy import Engine

from config import Settings
from serving.http.errors import ProblemError
from serving.search.results import Hit

Reranker = Callable[[str, list[Hit]], list[Hit]]


@dataclass
class ServerState:
    settings: Settings
    retriever: Any
    db: Engine
    studio: Any = None
    studio_problem: str | None = None  # why generate/edit cannot run here (answered as 503), None when they can
    reranker: Reranker | None = None
    queue: Any = None  # serving.http.queue.JobQueue once started
    _rerank_lock: threading.Lock = field(default_factory=threading.Lock)

    def engine(self):
        """The live search engine (one generation: take it once per request)."""
        return self.retriever.search_engine

    def rerank(self, prompt: str, hits: list[Hit]) -> list[Hit]:
        """The hits in the reranker's order; 503 when the reranker cannot be loaded here."""
        with self._rerank_lock:
            if self.reranker is None:
                self.reranker = _default_reranker(self.settings)
        try:
            return self.reranker(prompt, hits)
        except (ImportError, OSError, RuntimeError) as error:
            raise ProblemError(503, f"the reranker cannot run on this server: {error}") from error

    def need_studio(self):
        """The studio; 503 with the reason when its models are not available here."""
        if self.studio_problem or self.studio is None:
            raise ProblemError(503, self.studio_problem or "generation is not available on this server")
        return self.studio


def _default_reranker(settings: Settings) -> Reranker:
    """Tree rerank with the preset's LM (SmolLM2-135M in the lite preset), loaded on first use."""
    from serving.search import open_reranker, rerank_hits

    def rerank(prompt: str, hits: list[Hit]) -> list[Hit]:
        return rerank_hits(prompt, hits, open_reranker(settings))

    return rerank


def server(request: Request) -> ServerState:
    return request.app.state.zoo
