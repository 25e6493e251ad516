"""The two-level search, answered in memory from a loaded SearchIndex (embedding/search_index.py).

Each level gathers a candidate pool and scores it. The pool: the rows nearest the query vector (level 1 among
checkpoints; level 2 among the chosen checkpoint's family's adapters), the most downloaded versions (of the family),
the versions whose texts hold the query's rarest words, the versions the nearest example prompts vote for and, at
level 2, the adapters most used with the chosen checkpoint. The evidence (serving/search/scoring.py) becomes one
score by a ranker learned from usage when one is loaded (serving/search/ranker.py), else by hand-set weights.
Semantic similarity alone finds few right answers on real data (bench/retrieval_quality.py); usage and the prompt's
literal words carry most of it. The only hard restriction besides the user's filters is the base-model family at
level 2; what a person then sees (one version per model, few enhancers) is serving/search/selection.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np

from crawlers.nsfw import LEVEL_NAMES
from embedding.search_index import SearchIndex
from serving.search.lexical import NO_TERMS, Lexicon, Terms
from serving.search.nearest import NearestNeighbours
from serving.search.results import Filters, Hit, SearchResult
from serving.search.scoring import Features, Weights, hand_scores
from serving.search.selection import Invitations, adjacent_pairs, select
from serving.search.votes import NO_VOTES, PromptNeighbours, Votes

POPULAR_DOWNLOADS = 1_000_000.0  # popularity reaches 1 at this many downloads (log scale)
CO_USED_IMAGES = 50.0  # co-usage reaches 1 at this many images made with the chosen checkpoint (log scale)
LORA_FAMILY = ("LORA", "LoCon", "DoRA", "LyCORIS")  # what the adapter list holds unless a search asks for types
NEGATIVES = 3  # negative embeddings a search suggests for the chosen checkpoint
_HIT_FIELDS = {f.name for f in fields(Hit)}


@dataclass(frozen=True)
class PoolSizes:
    """How many candidates each source adds to a level's pool."""

    similar: int = 100  # level 1 (and level 2 without a checkpoint): nearest rows
    family_similar: int = 40  # level 2: nearest adapters of the family (at least twice the answers asked for)
    popular: int = 50
    co_used: int = 50
    lexical: int = 50
    voted: int = 50


@dataclass
class Query:
    """What a search knows of its query once: the vector, the words (stemmed), the example prompts' votes. A
    training query also says which evidence is its own (`discount`: adapters whose co-usage with its checkpoint
    counts its own image)."""

    q: np.ndarray
    lexemes: list[tuple[str, str]]
    votes: Votes = NO_VOTES
    discount: frozenset[int] = frozenset()
    terms: dict[str, Terms] = field(default_factory=dict)
    pairs: frozenset[frozenset[str]] = frozenset()  # neighbouring lexemes (selection.adjacent_pairs): names typed


@dataclass
class Pool:
    """A level's candidates (rows), their evidence, and what the hits show of it."""

    rows: np.ndarray
    features: Features
    tf: np.ndarray  # [query terms, rows]
    terms: Terms
    co_images: np.ndarray
    named: np.ndarray  # per row: the prompt names it outright (a character or likeness; selection.Invitations)


class SearchEngine:
    """Answers both levels from one SearchIndex; immutable once built, so any number of threads may query it."""

    def __init__(self, index: SearchIndex, weights: Weights = Weights(), pools: PoolSizes = PoolSizes(),
                 ranker=None, *, gate_uninvited: bool = True) -> None:
        """`weights` score when no learned `ranker` is given (and whenever a query passes its own weights).
        `gate_uninvited=False` lists characters and likenesses by score alone, named, invited or not (the quality
        bench measures what the gate costs)."""
        self.index, self.weights, self.pools, self.ranker = index, weights, pools, ranker
        self.gate_uninvited = gate_uninvited
        self.nearest = NearestNeighbours(index)
        self.lexicon = Lexicon(index)
        self.neighbours = PromptNeighbours(index)
        self.invitations = Invitations(index)
        arrays, code = index.arrays, index.code
        self._popularity = np.minimum(1.0, np.log1p(arrays["downloads"]) / math.log(POPULAR_DOWNLOADS))
        self._lora_family = [code("model_type", name) for name in LORA_FAMILY]
        self._negative, self._enhancer = code("serving_role", "negative"), code("serving_role", "enhancer")
        self._detail_fields = [name for name in index.details if name in _HIT_FIELDS]  # what a hit shows
        self._popular: dict[tuple[str, str | None], np.ndarray] = {}
        order = np.lexsort((-index.version_ids, arrays["model_id"]))
        self._versions_of: dict[int, list[int]] = {}
        for row in order.tolist():
            self._versions_of.setdefault(int(arrays["model_id"][row]), []).append(int(index.version_ids[row]))

    # ---- the two levels ---------------------------------------------------------------------------------------

    def query(self, q: np.ndarray, words: str | None, exclude_prompts: np.ndarray | None = None) -> Query:
        """The query's vector, words and prompt-neighbour votes (`exclude_prompts`: prompts that may not vote)."""
        lexemes = self.lexicon.lexemes(words)
        stems = [lexeme for lexeme, _ in lexemes]
        return Query(np.asarray(q, dtype=np.float32), lexemes, self.neighbours.votes(stems, exclude_prompts),
                     pairs=adjacent_pairs(stems))

    def search(self, q: np.ndarray, words: str | None, *, top_k: int = 10, top_checkpoints: int = 3,
               filters: Filters = Filters(), weights: Weights | None = None) -> SearchResult:
        """Both levels and the negative embeddings for the chosen checkpoint, from one generation of the index."""
        query = self.query(q, words)
        checkpoints = self.rank_checkpoints(query, top_checkpoints, filters, weights) if top_checkpoints else []
        checkpoint = checkpoints[0] if checkpoints else None
        return SearchResult(checkpoints, self.rank_adapters(query, checkpoint, top_k, filters, weights),
                            self.negatives(checkpoint, filters) if checkpoint else [])

    def checkpoints(self, q: np.ndarray, top_k: int = 5, filters: Filters = Filters(),
                    weights: Weights | None = None, *, words: str | None = None) -> list[Hit]:
        """Level 1 for a query vector and its words."""
        return self.rank_checkpoints(self.query(q, words), top_k, filters, weights)

    def adapters(self, q: np.ndarray, checkpoint: Hit | None, top_k: int = 10, filters: Filters = Filters(),
                 weights: Weights | None = None, *, words: str | None = None) -> list[Hit]:
        """Level 2 for a query vector and its words."""
        return self.rank_adapters(self.query(q, words), checkpoint, top_k, filters, weights)

    def rank_checkpoints(self, query: Query, top_k: int = 5, filters: Filters = Filters(),
                         weights: Weights | None = None) -> list[Hit]:
        """Level 1: the best checkpoints for the query."""
        pool = self.pool("checkpoint", query, None, filters)
        scores = self.scores("checkpoint", pool, weights)
        chosen = select(self.index, pool.rows, scores, top_k, enhancer_cap=None, near_duplicate=None,
                        **self._gate(pool))
        return [self._hit(pool, i, scores[i], None) for i in chosen]

    def rank_adapters(self, query: Query, checkpoint: Hit | None, top_k: int = 10, filters: Filters = Filters(),
                      weights: Weights | None = None) -> list[Hit]:
        """Level 2: adapters of the checkpoint's family, boosted by co-usage with it (any family without one)."""
        pool = self.pool("adapter", query, checkpoint, filters, top_k)
        scores = self.scores("adapter", pool, weights)
        chosen = select(self.index, pool.rows, scores, top_k, **self._gate(pool))
        return [self._hit(pool, i, scores[i], checkpoint) for i in chosen]

    def negatives(self, checkpoint: Hit, filters: Filters = Filters(), k: int = NEGATIVES) -> list[Hit]:
        """The negative embeddings of the checkpoint's family that suit it: used with it most, then most
        downloaded (they do not depend on the prompt)."""
        segment = self.index.segment("adapter", checkpoint.base_model_family)
        rows = np.arange(segment.start, segment.stop)
        rows = rows[(self.index.arrays["serving_role"][rows] == self._negative) & self._passes(rows, filters)]
        co_images = self._co_images(checkpoint, rows, frozenset())
        scores = np.log1p(co_images) / math.log(CO_USED_IMAGES) + self._popularity[rows]
        pool = Pool(rows, Features({}), np.zeros((0, len(rows))), NO_TERMS, co_images, np.zeros(len(rows), bool))
        return [self._hit(pool, i, scores[i], checkpoint)
                for i in select(self.index, rows, scores, k, enhancer_cap=None, near_duplicate=None)]

    def _gate(self, pool: Pool) -> dict[str, np.ndarray]:
        """What `select` is told of invitations: which candidates the prompt invites (the others wait) and names
        (listed even when their scores are not among the best); nothing when the gate is off."""
        return {"invited": pool.features["invited"] > 0, "named": pool.named} if self.gate_uninvited else {}

    def scores(self, level: str, pool: Pool, weights: Weights | None) -> np.ndarray:
        """The learned ranker's scores when it is loaded and no weights are asked for, else the hand weights'."""
        if weights is None and self.ranker is not None and self.ranker.serves(level):
            return self.ranker.scores(level, pool.features)
        return hand_scores(level, pool.features, weights or self.weights)

    # ---- pools and their evidence -----------------------------------------------------------------------------

    def pool(self, level: str, query: Query, checkpoint: Hit | None, filters: Filters, top_k: int = 10) -> Pool:
        """A level's candidates from every source, filtered, with their evidence."""
        family = checkpoint.base_model_family if checkpoint is not None else None
        segment = self.index.segment(level, family)
        if level not in query.terms:  # the query's words as this role's corpus knows them, looked up once
            query.terms[level] = self.lexicon.terms(query.lexemes, level)
        terms = query.terms[level]
        near = self.pools.family_similar if checkpoint is not None else self.pools.similar
        sources = [self.nearest.top(segment, query.q, max(near, 2 * top_k)), self.popular(level, family),
                   self.lexicon.rare_candidates(terms, segment, level, self.pools.lexical),
                   query.votes.best(segment, self.pools.voted)]
        if checkpoint is not None:
            adapters, _ = self.index.co_used(checkpoint.version_id)
            sources.append(self._rows_of(adapters[: self.pools.co_used], "adapter"))
        rows = _union(*sources)
        keep = self._passes(rows, replace(filters, types=()) if level == "checkpoint" else filters)
        if level == "adapter":
            keep &= self.index.arrays["serving_role"][rows] != self._negative
            if not filters.types:
                keep &= np.isin(self.index.arrays["model_type"][rows], self._lora_family)
            if family is not None:
                keep &= self.index.arrays["family"][rows] == self.index.code("family", family)
        return self._evidence(rows[keep], query, terms, level, checkpoint)

    def _evidence(self, rows: np.ndarray, query: Query, terms: Terms, level: str, checkpoint: Hit | None) -> Pool:
        arrays = self.index.arrays
        tf = self.lexicon.frequencies(terms, rows)
        bm25 = self.lexicon.bm25(rows, terms, level, tf)
        similarity = (self.index.vectors[rows] @ query.q).astype(np.float64)
        co_images = self._co_images(checkpoint, rows, query.discount) if checkpoint else np.zeros(len(rows))
        votes = query.votes.of(rows)
        rare = frozenset(self.index.lexemes[int(t)] for t in terms.ids[self.lexicon.rare(terms, level)])
        invited, named = self.invitations.of(rows, similarity, votes, query.pairs, rare)
        order = np.argsort(-votes, kind="stable")
        vote_rank = np.zeros(len(rows))
        vote_rank[order] = 1.0 / (1 + np.arange(len(rows)))
        features = Features({
            "similarity": similarity, "popularity": self._popularity[rows],
            "co_usage": np.minimum(1.0, np.log1p(co_images) / math.log(CO_USED_IMAGES)),
            "lexical": bm25 / bm25.max() if len(bm25) and bm25.max() > 0 else bm25, "bm25": np.log1p(bm25),
            "votes": votes, "vote_rank": np.where(votes > 0, vote_rank, 0.0),
            "kind": arrays["kind"][rows].astype(np.float64),
            "enhancer": (arrays["serving_role"][rows] == self._enhancer).astype(np.float64),
            "needs_invitation": self.invitations.needs_invitation[rows].astype(np.float64),
            "invited": invited.astype(np.float64), "examples": np.log1p(arrays["examples"][rows]),
            "age_days": arrays["age_days"][rows].astype(np.float64),
            "text_length": arrays["lexical_length"][rows].astype(np.float64)})
        return Pool(rows, features, tf, terms, co_images, named)

    def popular(self, role: str, family: str | None = None) -> np.ndarray:
        """The most downloaded rows of a role (and family): candidates whatever their similarity, because usage is
        the strongest evidence on real data and a walk by similarity alone rarely reaches them."""
        key = (role, family)
        if key not in self._popular:
            segment = self.index.segment(role, family)
            rows = np.arange(segment.start, segment.stop)
            order = np.lexsort((self.index.version_ids[rows], -self.index.arrays["downloads"][rows]))
            self._popular[key] = rows[order[: self.pools.popular]]
        return self._popular[key]

    def _co_images(self, checkpoint: Hit, rows: np.ndarray, discount: frozenset[int]) -> np.ndarray:
        """Images made with the checkpoint and each row's adapter (one fewer for a training query's own)."""
        adapters, counts = self.index.co_used(checkpoint.version_id)
        images = dict(zip(adapters.tolist(), counts.tolist(), strict=True))
        versions = self.index.version_ids[rows].tolist()
        return np.array([max(0, images.get(v, 0) - (v in discount)) for v in versions], dtype=np.float64)

    def _rows_of(self, version_ids: np.ndarray, role: str) -> np.ndarray:
        """The rows of the given versions that the index holds in `role`."""
        segment = self.index.segment(role)
        rows = [self.index.row_of.get(int(v), -1) for v in version_ids.tolist()]
        return np.asarray([r for r in rows if segment.start <= r < segment.stop], dtype=np.int64)

    def _passes(self, rows: np.ndarray, filters: Filters) -> np.ndarray:
        arrays, code, keep = self.index.arrays, self.index.code, np.ones(len(rows), dtype=bool)
        if filters.base_models:
            keep &= np.isin(arrays["base_model"][rows], [code("base_model", name) for name in filters.base_models])
        if filters.types:
            keep &= np.isin(arrays["model_type"][rows], [code("model_type", t) for t in filters.types])
        if filters.commercial_use:
            bit = code("licence", filters.commercial_use)
            keep &= (arrays["licence"][rows] & (1 << bit)) != 0 if bit >= 0 else False
        if filters.min_downloads:
            keep &= arrays["downloads"][rows] >= filters.min_downloads
        if filters.max_content_level:
            keep &= arrays["content_level"][rows] <= filters.max_content_level
        if filters.families:
            keep &= np.isin(arrays["family"][rows], [code("family", f) for f in filters.families])
        return keep

    # ---- hits -------------------------------------------------------------------------------------------------

    def _hit(self, pool: Pool, i: int, score: float, checkpoint: Hit | None) -> Hit:
        index, row, terms = self.index, int(pool.rows[i]), pool.terms
        matched = np.flatnonzero(pool.tf[:, i] > 0) if len(pool.tf) else np.zeros(0, dtype=int)
        words = [terms.words[j] for j in sorted(matched.tolist(), key=lambda j: (-terms.idf[j], terms.words[j]))]
        downloads, co_images = int(index.arrays["downloads"][row]), int(pool.co_images[i])
        similarity = float(pool.features["similarity"][i]) if pool.features.values else 0.0
        lexical = float(pool.features["lexical"][i]) if pool.features.values else 0.0
        why = [f"similarity {similarity:.3f}", f"{downloads:,} downloads"]
        if pool.named[i]:
            why.insert(0, "named in the prompt")
        if words:
            why.append("words: " + ", ".join(words))
        if pool.features.values and pool.features["votes"][i] > 0:
            why.append(f"{pool.features['votes'][i]:.0%} of similar prompts' votes")
        if checkpoint is not None:
            why.append(f"{co_images} image{'s' if co_images != 1 else ''} with {checkpoint.name}" if co_images
                       else f"compatible with {checkpoint.base_model_family}")
        values = {name: index.details[name][row] for name in self._detail_fields}
        values.update(model_id=int(index.arrays["model_id"][row]), version_id=int(index.version_ids[row]),
                      score=round(float(score), 6), similarity=round(similarity, 6), downloads=downloads,
                      co_usage_images=co_images, trigger_words=list(values["trigger_words"]),
                      why="; ".join(why), lexical=round(lexical, 6), matched_words=words,
                      role=index.codes["serving_role"][int(index.arrays["serving_role"][row])],
                      content_level=LEVEL_NAMES.get(int(index.arrays["content_level"][row]), ""),
                      other_versions=[v for v in self._versions_of[int(index.arrays["model_id"][row])]
                                      if v != int(index.version_ids[row])])
        return Hit(**values)


def _union(*sources: np.ndarray) -> np.ndarray:
    """The distinct rows of all sources."""
    arrays = [np.asarray(source, dtype=np.int64) for source in sources if len(source)]
    return np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, dtype=np.int64)
