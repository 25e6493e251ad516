"""Training the learned ranker from the catalogue's own evidence (the retrieval_ranker asset runs this).

Every SFW example image with resolved resources is a query: its prompt without A1111 syntax and without the trigger
words of the LoRAs it used (as a user who does not know the answer writes it); the LoRAs it used are the relevant
adapters and the checkpoint it names the relevant checkpoint. Candidates and their evidence come from the engine
itself (SearchEngine.pool), so training and serving read identical features.

Leakage guards: images posted to the gallery of a LoRA they used are not queries (that LoRA's card embeds their
prompts); a level-1 query is dropped when its image is in its checkpoint's gallery; an image's own galleries may not
vote for it (hold-out by image and by gallery); its own co-usage count is taken off its checkpoint's links; images
on a hold-out list (the quality benchmark's test half), and any image sharing one's prompt, are never used.
Validation splits queries by creator (of the gallery they were posted to), so a creator's style cannot leak across.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Connection, Engine, text

from crawlers.a1111 import plain_text, without_phrases
from embedding.encoders import TextEncoder
from embedding.search_index import load_search_index
from serving.search.engine import LORA_FAMILY, SearchEngine
from serving.search.ranker import LEVELS, LearnedRanker, store_ranker
from serving.search.results import Filters
from serving.search.scoring import FEATURES, Weights
from serving.search.selection import select

log = logging.getLogger(__name__)
MAX_QUERIES = 3000
MIN_QUERIES = 20  # per level: fewer and a ranker would learn noise
VALIDATION_SHARE = 0.2
TOP = 10
PARAMETERS = {"objective": "lambdarank", "metric": "ndcg", "ndcg_eval_at": [10], "learning_rate": 0.05,
              "num_leaves": 15, "min_data_in_leaf": 20, "feature_fraction": 0.9, "lambdarank_truncation_level": 20,
              "deterministic": True, "num_threads": 1, "seed": 0, "verbose": -1}
ROUNDS = 150

_QUERY_IMAGES = """
    SELECT i.id, min(i.prompt) AS prompt, array_agg(DISTINCT i.version_id) AS galleries,
           array_agg(DISTINCT r.resolved_version_id) FILTER (WHERE r.role = 'lora' AND r.position > 0) AS loras,
           min(r.resolved_version_id) FILTER (WHERE r.role = 'checkpoint' AND r.position > 0) AS checkpoint,
           min(m.creator) AS creator
    FROM images i JOIN image_resources r ON r.image_id = i.id AND r.version_id = i.version_id
    JOIN model_versions g ON g.id = i.version_id JOIN models m ON m.id = g.model_id
    WHERE NOT i.nsfw AND i.prompt IS NOT NULL AND r.resolved_version_id IS NOT NULL
    GROUP BY i.id ORDER BY i.id"""


@dataclass
class TrainingQuery:
    image_id: int
    text: str
    galleries: frozenset[int]
    adapters: frozenset[int]  # rows of the LoRAs the image used
    checkpoint: int | None  # row of its checkpoint, when one counts for level 1
    creator: str
    vector: np.ndarray | None = None


@dataclass
class LevelData:
    """One level's training rows: features, labels, and query groups (rows per query, in order)."""

    features: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    hand: list[np.ndarray] = field(default_factory=list)  # the hand weights' scores, for comparison
    rows: list[np.ndarray] = field(default_factory=list)
    creators: list[str] = field(default_factory=list)


def training_queries(conn: Connection, engine: SearchEngine, hold_out: Iterable[int] = (),
                     limit: int = MAX_QUERIES) -> list[TrainingQuery]:
    """Queries from the catalogue's example images, leak-guarded, deduplicated, a deterministic sample."""
    index, held = engine.index, set(hold_out)
    lora_family = {index.code("model_type", name) for name in LORA_FAMILY}
    rows = conn.execute(text(_QUERY_IMAGES)).mappings().all()
    held_prompts = {row["prompt"] for row in rows if row["id"] in held}
    found: dict[str, TrainingQuery] = {}
    for row in sorted(rows, key=lambda r: _stable(r["id"])):
        galleries = frozenset(row["galleries"])
        used = {index.row_of.get(v, -1) for v in row["loras"] or ()} - {-1}
        used = {r for r in used if int(index.arrays["model_type"][r]) in lora_family}
        if (row["id"] in held or row["prompt"] in held_prompts or not used
                or galleries & set(row["loras"] or ())):
            continue
        triggers = [word for r in used for word in index.details["trigger_words"][r]]
        query_text = without_phrases(plain_text(row["prompt"]), triggers)[:4000]
        if len(query_text.split()) < 3 or query_text in found:
            continue
        checkpoint = index.row_of.get(row["checkpoint"]) if row["checkpoint"] in index.row_of else None
        if checkpoint is not None and int(index.version_ids[checkpoint]) in galleries:
            checkpoint = None  # its card embeds this very prompt
        found[query_text] = TrainingQuery(row["id"], query_text, galleries, frozenset(used), checkpoint,
                                          row["creator"] or "")
        if len(found) >= limit:
            break
    return list(found.values())


def level_data(engine: SearchEngine, queries: list[TrainingQuery]) -> dict[str, LevelData]:
    """Both levels' candidates, evidence and labels for every query (its vector already encoded)."""
    data = {level: LevelData() for level in LEVELS}
    hand = Weights()
    for item in queries:
        query = engine.query(item.vector, item.text, engine.neighbours.prompts_of_galleries(set(item.galleries)))
        pool = engine.pool("checkpoint", query, None, Filters())
        if item.checkpoint is not None and item.checkpoint in set(pool.rows.tolist()):
            _add(data["checkpoint"], pool, pool.rows == item.checkpoint, engine.scores("checkpoint", pool, hand),
                 item.creator)
        chosen = engine.rank_checkpoints(query, 1, weights=hand)
        if not chosen:
            continue
        if item.checkpoint is not None and chosen[0].version_id == int(engine.index.version_ids[item.checkpoint]):
            query.discount = frozenset(int(engine.index.version_ids[r]) for r in item.adapters)
        pool = engine.pool("adapter", query, chosen[0], Filters())
        labels = np.isin(pool.rows, list(item.adapters))
        if labels.any():
            _add(data["adapter"], pool, labels, engine.scores("adapter", pool, hand), item.creator)
    return data


def _add(data: LevelData, pool, labels: np.ndarray, hand: np.ndarray, creator: str) -> None:
    data.features.append(pool.features.matrix())
    data.labels.append(labels.astype(np.float64))
    data.hand.append(hand)
    data.rows.append(pool.rows)
    data.creators.append(creator)


def train(engine: SearchEngine, queries: list[TrainingQuery], min_queries: int = MIN_QUERIES) -> LearnedRanker:
    """A ranker per level from the queries (their vectors encoded)."""
    ranker = fit_levels(engine, level_data(engine, queries), min_queries)
    ranker.metrics["queries"] = len(queries)
    return ranker


def fit_levels(engine: SearchEngine, data: dict[str, LevelData], min_queries: int = MIN_QUERIES) -> LearnedRanker:
    """A ranker per level: validated on held-out creators against the hand weights, then trained on all."""
    import lightgbm

    boosters, metrics = {}, {"features": list(FEATURES)}
    for level, found in data.items():
        if len(found.labels) < min_queries:
            log.info("level %s: %d training queries, too few to learn from: the hand weights rank it", level,
                     len(found.labels))
            continue
        valid = np.array([_stable(creator) % 100 < VALIDATION_SHARE * 100 for creator in found.creators])
        if valid.all() or not valid.any():  # too few creators to split by: every fifth query validates
            valid = np.arange(len(valid)) % round(1 / VALIDATION_SHARE) == 0
        model = _fit(lightgbm, found, ~valid)
        learned = _evaluate(engine, found, valid, lambda x: model.predict(x, num_threads=1))
        hand = _evaluate(engine, found, valid, None)
        serves = learned["mrr"] >= hand["mrr"] and learned["recall_at_10"] >= hand["recall_at_10"]
        metrics[level] = {"training_queries": int((~valid).sum()), "validation_queries": int(valid.sum()),
                          "learned": learned, "hand_weights": hand, "serves": serves}
        if serves:  # a level whose learned order loses to the hand weights on unseen creators keeps the weights
            boosters[level] = _fit(lightgbm, found, np.ones(len(found.labels), dtype=bool))
    return LearnedRanker(boosters, metrics=metrics)


def train_ranker(db: Engine, text_encoder: TextEncoder, space: str, hold_out: Iterable[int] = (),
                 limit: int = MAX_QUERIES) -> LearnedRanker | None:
    """Train on the space's newest index generation and store the ranker (None when no level has enough queries
    or none beats the hand weights): the retrieval_ranker asset's work."""
    index = load_search_index(db, space)
    if index is None:
        raise LookupError(f"no search index generation is stored for {space}: materialise retrieval_index first")
    engine = SearchEngine(index)
    with db.connect() as conn:
        queries = training_queries(conn, engine, hold_out, limit)
    vectors = text_encoder.encode_text([query.text for query in queries]) if queries else []
    for query, vector in zip(queries, vectors, strict=True):
        query.vector = np.zeros(index.vectors.shape[1], dtype=np.float32)
        query.vector[: len(vector)] = vector  # the text half; the image half stays empty, as in a text search
    ranker = train(engine, queries)
    if not ranker.boosters:
        return None
    with db.begin() as conn:
        store_ranker(conn, space, index.generation, ranker)
    return ranker


def _fit(lightgbm, data: LevelData, use: np.ndarray):
    chosen = np.flatnonzero(use)
    features = np.vstack([data.features[i] for i in chosen])
    labels = np.concatenate([data.labels[i] for i in chosen])
    groups = [len(data.labels[i]) for i in chosen]
    dataset = lightgbm.Dataset(features, labels, group=groups, feature_name=list(FEATURES),
                               categorical_feature=["kind"], free_raw_data=False)
    return lightgbm.train(PARAMETERS, dataset, num_boost_round=ROUNDS)


def _evaluate(engine: SearchEngine, data: LevelData, use: np.ndarray,
              predict: Callable[[np.ndarray], np.ndarray] | None) -> dict[str, float]:
    """recall@10 and MRR of the list a person would see (one version per model), on the chosen queries."""
    recalls, reciprocal = [], []
    for i in np.flatnonzero(use):
        scores = data.hand[i] if predict is None else predict(data.features[i])
        shown = data.rows[i][select(engine.index, data.rows[i], scores, TOP)]
        relevant = set(data.rows[i][data.labels[i] > 0].tolist())
        found = [rank for rank, row in enumerate(shown.tolist(), start=1) if row in relevant]
        recalls.append(len(found) / len(relevant))
        reciprocal.append(1.0 / found[0] if found else 0.0)
    return {"recall_at_10": round(float(np.mean(recalls)), 4) if recalls else 0.0,
            "mrr": round(float(np.mean(reciprocal)), 4) if reciprocal else 0.0}


def _stable(value: object) -> int:
    return int.from_bytes(hashlib.blake2b(str(value).encode(), digest_size=8).digest(), "little")
