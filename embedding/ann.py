"""Approximate nearest neighbours for the search index: FAISS HNSW over fp16-quantised vectors, inner product.

Chosen by bench/ann_choice.py (FAISS, hnswlib and usearch at 6.7k-40k vectors of 384 and 1,536 dims): HNSW-SQ fp16
at M=16, efConstruction=128, efSearch=max(100, n) answers a 40k set in ~0.4 ms with recall@10 0.999 against exact
search, in half the memory of float32 graphs; exact numpy search is faster only below ~1.7k vectors (384 dims).
A graph takes ~26 s per 40k vectors to build, too slow for a serving process's load, so the retrieval_index asset
builds it and stores its bytes with the index generation; loading deserialises it in milliseconds.
"""

from __future__ import annotations

import numpy as np

MIN_ROWS = 2000  # below this, exact search over the rows is as fast and exact
M, EF_CONSTRUCTION, EF_SEARCH = 16, 128, 100


def build_graph(vectors: np.ndarray) -> bytes:
    """The serialised HNSW graph over `vectors` (row i of the graph is row i of `vectors`)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexHNSWSQ(vectors.shape[1], faiss.ScalarQuantizer.QT_fp16, M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.train(vectors)
    index.add(vectors)
    return faiss.serialize_index(index).tobytes()


class Graph:
    """A loaded graph: the top n rows (relative to the vectors it was built on) for a query vector."""

    def __init__(self, blob: bytes) -> None:
        import faiss

        self._index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        self._faiss = faiss
        self._params: dict[int, object] = {}  # efSearch -> its (read-only, shareable) search parameters

    def top(self, q: np.ndarray, n: int) -> np.ndarray:
        ef = max(EF_SEARCH, n)
        params = self._params.get(ef)
        if params is None:
            params = self._faiss.SearchParametersHNSW()
            params.efSearch = ef
            self._params[ef] = params
        _, rows = self._index.search(np.asarray(q, dtype=np.float32)[None, :], n, params=params)
        return rows[0][rows[0] >= 0].astype(np.int64)
