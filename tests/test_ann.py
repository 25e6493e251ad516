"""The ANN graphs of the search index: stored bytes load back, and their answers match exact search."""

from __future__ import annotations

import numpy as np

from embedding.ann import Graph, build_graph
from serving.search.nearest import NearestNeighbours


def clustered(rng: np.random.Generator, n: int, d: int = 48) -> np.ndarray:
    centres = rng.standard_normal((40, d))
    x = centres[rng.integers(0, 40, n)] + 0.1 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_a_graph_from_bytes_finds_what_exact_search_finds() -> None:
    rng = np.random.default_rng(0)
    vectors, queries = clustered(rng, 4000), clustered(rng, 50)
    graph = Graph(build_graph(vectors))
    recalls = []
    for q in queries:
        exact = set(np.argsort(-(vectors @ q))[:10].tolist())
        recalls.append(len(exact & set(graph.top(q, 40)[:40].tolist())) / 10)
    assert np.mean(recalls) >= 0.95  # tight synthetic clusters; bench/ann_choice.py measures 0.999 on its data


def test_a_slice_of_several_families_merges_their_answers() -> None:
    """Rows 0..2999 one family with a graph, 3000..3099 another searched exactly: the merge is the exact top n."""
    rng = np.random.default_rng(1)
    vectors = clustered(rng, 3100)

    class Index:
        codes = {"family": ["big", "small"]}
        graphs = {"adapter:big": build_graph(vectors[:3000])}

        def __init__(self) -> None:
            self.vectors = vectors

        def segments(self):
            return [("adapter", "big", slice(0, 3000)), ("adapter", "small", slice(3000, 3100))]

    nearest = NearestNeighbours(Index())
    q = vectors[3050]
    found = nearest.top(slice(0, 3100), q, 20)
    exact = np.argsort(-(vectors @ q))[:20]
    assert found[0] == 3050 and len(set(found.tolist()) & set(exact.tolist())) >= 19
    assert set(nearest.top(slice(3000, 3100), q, 5).tolist()) <= set(range(3000, 3100))
