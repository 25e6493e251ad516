"""The rows nearest a query vector within a slice of the index (a role, or a family's adapters).

Each (role, family) slice is searched on its own: through its ANN graph when the index has one (slices of at least
embedding.ann.MIN_ROWS rows), else exactly by a matrix-vector product; a slice spanning several families merges
their answers by exact similarity.
"""

from __future__ import annotations

import numpy as np

from embedding.ann import Graph
from embedding.search_index import SearchIndex


class NearestNeighbours:
    """Top-n rows by inner product within a contiguous slice of the index's rows."""

    def __init__(self, index: SearchIndex) -> None:
        self.index = index
        self._parts = [(rows, Graph(index.graphs[f"{role}:{family}"]) if f"{role}:{family}" in index.graphs
                        else None) for role, family, rows in index.segments()]

    def top(self, segment: slice, q: np.ndarray, n: int) -> np.ndarray:
        """The `n` rows of `segment` with the largest inner product with `q`, best first."""
        if segment.stop <= segment.start or n <= 0:
            return np.zeros(0, dtype=np.int64)
        q = np.asarray(q, dtype=np.float32)
        found = [self._part_top(rows, graph, q, n) for rows, graph in self._parts
                 if segment.start <= rows.start and rows.stop <= segment.stop]
        candidates = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
        return _best(candidates, self.index.vectors[candidates] @ q, n)

    def _part_top(self, rows: slice, graph: Graph | None, q: np.ndarray, n: int) -> np.ndarray:
        if graph is not None:
            return graph.top(q, n) + rows.start
        return _best(np.arange(rows.start, rows.stop), self.index.vectors[rows] @ q, n)


def _best(rows: np.ndarray, similarity: np.ndarray, n: int) -> np.ndarray:
    """The n rows of largest similarity, best first."""
    if n < len(rows):
        keep = np.argpartition(-similarity, n - 1)[:n]
        rows, similarity = rows[keep], similarity[keep]
    return rows[np.argsort(-similarity, kind="stable")].astype(np.int64)
