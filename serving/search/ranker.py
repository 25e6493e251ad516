"""A ranker learned from how people used the models: one LightGBM lambdarank model per level, stored in Postgres
(`retrieval_rankers`) with its training metrics, loaded by every engine built on the same space.

No diffusion model is trained: a small ranker learned from usage is part of retrieval. Training
(serving/search/training.py) is the retrieval_ranker asset's work; serving only loads and predicts. A ranker reads
exactly the features it was trained on (scoring.FEATURES): one stored with another list is not loaded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Connection, Engine

from db.rankers import insert_ranker, newest_ranker

from embedding.search_index import SearchIndex
from serving.search.scoring import FEATURES, Features

log = logging.getLogger(__name__)
LEVELS = ("checkpoint", "adapter")


@dataclass
class LearnedRanker:
    """Per level, a LightGBM booster scoring the scoring.FEATURES columns; `id` is its row in retrieval_rankers."""

    boosters: dict[str, object]
    id: int = 0
    metrics: dict = field(default_factory=dict)

    def serves(self, level: str) -> bool:
        return level in self.boosters

    def scores(self, level: str, features: Features) -> np.ndarray:
        if not len(features["similarity"]):
            return np.zeros(0)
        return np.asarray(self.boosters[level].predict(features.matrix(), num_threads=1), dtype=np.float64)

    def model_texts(self) -> dict[str, str]:
        return {level: booster.model_to_string() for level, booster in self.boosters.items()}


def store_ranker(conn: Connection, space: str, generation: int, ranker: LearnedRanker) -> int:
    """Write a trained ranker (the caller's transaction commits it); serving processes reload on the notice."""
    ranker.id = insert_ranker(conn, space, generation, FEATURES, ranker.model_texts(), ranker.metrics)
    return ranker.id


def load_ranker(db: Engine, index: SearchIndex) -> LearnedRanker | None:
    """The newest ranker trained for the index's space on today's features, or None (hand weights then)."""
    with db.connect() as conn:
        row = newest_ranker(conn, index.space, FEATURES)
    if row is None:
        return None
    try:
        import lightgbm
    except ImportError:
        log.warning("a learned ranker is stored but lightgbm is not installed: ranking by hand weights")
        return None
    boosters = {level: lightgbm.Booster(model_str=row[f"{level}_model"]) for level in LEVELS if row[f"{level}_model"]}
    return LearnedRanker(boosters, row["id"], dict(row["metrics"]))
