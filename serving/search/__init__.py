"""Search: the two-level retriever (checkpoints, then adapters compatible with the chosen one), the tree reranker,
and the Python API that the CLI, the HTTP server and embedding applications call.

Names are imported on first use (PEP 562): `zoo --help` and `zoo db ...` read this package's light modules without
paying for torch, which the query encoders bring in."""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "load_query_image": "serving.search.api", "open_reranker": "serving.search.api",
    "open_retriever": "serving.search.api", "rerank_hits": "serving.search.api",
    "Filters": "serving.search.results", "Hit": "serving.search.results", "SearchResult": "serving.search.results",
    "PoolSizes": "serving.search.engine", "Weights": "serving.search.scoring", "Retriever": "serving.search.retriever",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'serving.search' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
