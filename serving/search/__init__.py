"""Search: the two-level retriever (checkpoints, then adapters compatible with the chosen one), the tree reranker,
and the Python API that the CLI, the HTTP server and embedding applications call."""

from serving.search.api import load_query_image, open_reranker, open_retriever, rerank_hits
from serving.search.results import Filters, Hit, SearchResult
from serving.search.engine import PoolSizes
from serving.search.scoring import Weights
from serving.search.retriever import Retriever

__all__ = ["Filters", "Hit", "PoolSizes", "Retriever", "SearchResult", "Weights", "load_query_image", "open_reranker",
           "open_retriever", "rerank_hits"]
