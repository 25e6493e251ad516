"""How a level's evidence becomes one score per candidate: hand-set weights, or a ranker learned from usage.

The evidence (`Features`, one array per signal, aligned with the pool's rows) is the same for both: semantic
similarity, popularity (log downloads), co-usage with the chosen checkpoint (log images), BM25 of the query's words
relative to the pool's best (and raw), prompt-neighbour votes, and what the card and usage say about the candidate
(kind, enhancer, whether a character or likeness is invited by the prompt, gallery size, age).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The columns a learned ranker reads, in order (serving/search/ranker.py trains on exactly these).
FEATURES = ("similarity", "popularity", "co_usage", "lexical", "bm25", "votes", "vote_rank", "kind", "enhancer",
            "needs_invitation", "invited", "examples", "age_days", "text_length")


@dataclass(frozen=True)
class Weights:
    """Hand-set: score = similarity + popularity * log-downloads + co_usage * log-images + lexical * relative BM25;
    popularity and co-usage count for characters and likenesses only when invited. Votes are left to the learned
    ranker (it weighs them by level and by the other evidence)."""

    text: float = 1.0
    image: float = 1.0
    # From bench/retrieval_quality.py's 2023-dump queries (lite preset): usage evidence and the prompt's words
    # outweigh MiniLM similarity there. The dev-half grid's best popularity weights (4.0 and 8.0) let popularity
    # override what a prompt asks for ("realistic" -> a pixel-art checkpoint, tests/test_retrieval.py) and lose
    # most "content" answers on the test half; half of each keeps them (README, Benchmarks).
    checkpoint_popularity: float = 2.0
    adapter_popularity: float = 4.0
    co_usage: float = 2.0
    # BM25 of the query's words in the embedded text, divided by the pool's best: what a prompt names literally.
    checkpoint_lexical: float = 1.0
    adapter_lexical: float = 1.0


@dataclass
class Features:
    """One level's evidence, aligned with its pool's rows."""

    values: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def matrix(self) -> np.ndarray:
        """[rows, FEATURES] for a learned ranker."""
        return np.column_stack([self.values[name].astype(np.float64) for name in FEATURES])


def hand_scores(level: str, features: Features, weights: Weights) -> np.ndarray:
    """The hand-weighted score of each candidate at `level` ("checkpoint" or "adapter")."""
    f = features
    if level == "checkpoint":
        return (f["similarity"] + weights.checkpoint_popularity * f["popularity"]
                + weights.checkpoint_lexical * f["lexical"])
    usage = weights.adapter_popularity * f["popularity"] + weights.co_usage * f["co_usage"]
    return f["similarity"] + np.where(f["invited"] > 0, usage, 0.0) + weights.adapter_lexical * f["lexical"]
