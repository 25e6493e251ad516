"""The two-level search, answered in memory from a loaded SearchIndex (embedding/search_index.py).

Each level gathers a candidate pool and scores it. The pool: the rows nearest the query vector (level 1 among
checkpoints; level 2 among the chosen checkpoint's family's adapters), the most downloaded versions (of the family),
the versions whose texts hold the query's rarest words and, at level 2, the adapters most used with the chosen
checkpoint. The score: similarity + popularity (log downloads) + co-usage with the chosen checkpoint (log images; a
boost, never a filter) + BM25 of the query's words relative to the pool's best. Semantic similarity alone finds
few right answers on real data (bench/retrieval_quality.py); downloads are the strongest single signal; the prompt's
literal words find what popularity cannot (characters, objects, named styles). The only hard restriction besides
the user's filters is the base-model family at level 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from crawlers.a1111 import plain_text
from crawlers.nsfw import LEVEL_NAMES
from embedding.search_index import SearchIndex
from serving.search.nearest import NearestNeighbours
from serving.search.selection import Invitations, select
from serving.search.results import Filters, Hit, SearchResult
from serving.search.words import query_terms

BM25_K1, BM25_B = 1.5, 0.75  # rank_bm25's BM25Okapi defaults (the benchmark's baseline)
RARE_TERMS = 8  # the query's rarest words pick the lexical candidates
RARE_SHARE = 0.05  # a word in more than this share of a role's texts picks none (BM25 still counts it)
POPULAR_DOWNLOADS = 1_000_000.0  # popularity reaches 1 at this many downloads (log scale)
CO_USED_IMAGES = 50.0  # co-usage reaches 1 at this many images made with the chosen checkpoint (log scale)
LORA_FAMILY = ("LORA", "LoCon", "DoRA", "LyCORIS")  # what the adapter list holds unless a search asks for types
NEGATIVES = 3  # negative embeddings a search suggests for the chosen checkpoint
_HIT_FIELDS = {f.name for f in fields(Hit)}


@dataclass(frozen=True)
class Weights:
    """How evidence combines: score = similarity + popularity * log-downloads + co_usage * log-images
    + lexical * relative BM25."""

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


@dataclass(frozen=True)
class PoolSizes:
    """How many candidates each source adds to a level's pool."""

    similar: int = 100  # level 1 (and level 2 without a checkpoint): nearest rows
    family_similar: int = 40  # level 2: nearest adapters of the family (at least twice the answers asked for)
    popular: int = 50
    co_used: int = 50
    lexical: int = 50


@dataclass
class _Pool:
    """A level's candidates (rows) and their evidence, position by position."""

    rows: np.ndarray
    similarity: np.ndarray
    tf: np.ndarray  # [query terms, rows]
    lexical: np.ndarray  # BM25 relative to the pool's best
    co_images: np.ndarray  # images made with the chosen checkpoint (level 2)


@dataclass(frozen=True)
class _Terms:
    """The query's words as one role's corpus knows them: term ids, the word typed, how often, IDF."""

    ids: np.ndarray
    words: list[str]
    counts: np.ndarray
    documents: np.ndarray
    idf: np.ndarray


class SearchEngine:
    """Answers both levels from one SearchIndex; immutable once built, so any number of threads may query it."""

    def __init__(self, index: SearchIndex, weights: Weights = Weights(), pools: PoolSizes = PoolSizes(),
                 nearest: NearestNeighbours | None = None) -> None:
        """`weights` are the default; a query may pass its own."""
        self.index, self.weights, self.pools = index, weights, pools
        self.nearest = nearest or NearestNeighbours(index)
        arrays = index.arrays
        self._popularity = np.minimum(1.0, np.log1p(arrays["downloads"]) / math.log(POPULAR_DOWNLOADS))
        posting_role = arrays["role"][arrays["posting_rows"]]
        starts = arrays["term_start"]
        self._documents = {role: _segment_sums(posting_role == code, starts)
                           for code, role in enumerate(("checkpoint", "adapter"))}
        self._corpus = {}
        for role in ("checkpoint", "adapter"):
            lengths = arrays["lexical_length"][index.segment(role)]
            self._corpus[role] = (len(lengths), float(lengths.mean()) if len(lengths) else 0.0)
        self._popular: dict[tuple[str, str | None], np.ndarray] = {}
        self.invitations = Invitations(index)
        codes = index.code
        self._lora_family = [codes("model_type", name) for name in LORA_FAMILY]
        self._negative = codes("serving_role", "negative")
        order = np.lexsort((-index.version_ids, index.arrays["model_id"]))
        self._versions_of: dict[int, list[int]] = {}
        for row in order.tolist():
            self._versions_of.setdefault(int(index.arrays["model_id"][row]), []).append(int(index.version_ids[row]))

    # ---- the two levels ---------------------------------------------------------------------------------------

    def search(self, q: np.ndarray, words: str | None, *, top_k: int = 10, top_checkpoints: int = 3,
               filters: Filters = Filters(), weights: Weights | None = None) -> SearchResult:
        """Both levels and the negative embeddings for the chosen checkpoint, from one generation of the index."""
        checkpoints = self.checkpoints(q, top_checkpoints, filters, words, weights) if top_checkpoints else []
        checkpoint = checkpoints[0] if checkpoints else None
        return SearchResult(checkpoints, self.adapters(q, checkpoint, top_k, filters, words, weights),
                            self.negatives(checkpoint, filters, weights) if checkpoint else [])

    def checkpoints(self, q: np.ndarray, top_k: int = 5, filters: Filters = Filters(), words: str | None = None,
                    weights: Weights | None = None) -> list[Hit]:
        """Level 1: the best checkpoints by similarity, popularity and the query's words."""
        weights = weights or self.weights
        segment = self.index.segment("checkpoint")
        terms = self._terms(words, "checkpoint")
        rows = _union(self.nearest.top(segment, q, self.pools.similar), self.popular("checkpoint"),
                      self._rare_candidates(terms, segment, "checkpoint"))
        pool = self._pool(rows[self._passes(rows, replace(filters, types=()))], q, terms, "checkpoint")
        scores = (pool.similarity + weights.checkpoint_popularity * self._popularity[pool.rows]
                  + weights.checkpoint_lexical * pool.lexical)
        chosen = select(self.index, pool.rows, scores, top_k, enhancer_cap=None, near_duplicate=None)
        return [self._hit(pool, i, scores[i], terms, None) for i in chosen]

    def adapters(self, q: np.ndarray, checkpoint: Hit | None, top_k: int = 10, filters: Filters = Filters(),
                 words: str | None = None, weights: Weights | None = None) -> list[Hit]:
        """Level 2: adapters of the checkpoint's family, boosted by co-usage with it (any family without one)."""
        weights = weights or self.weights
        family = checkpoint.base_model_family if checkpoint is not None else None
        segment = self.index.segment("adapter", family)
        terms = self._terms(words, "adapter")
        similar = (self.nearest.top(segment, q, max(self.pools.family_similar, 2 * top_k)) if checkpoint
                   else self.nearest.top(segment, q, self.pools.similar))
        images: dict[int, int] = {}
        co_used = np.zeros(0, dtype=np.int64)
        if checkpoint is not None:
            adapters, counts = self.index.co_used(checkpoint.version_id)
            images = dict(zip(adapters.tolist(), counts.tolist(), strict=True))
            co_used = self._rows_of(adapters[: self.pools.co_used], "adapter")
        rows = _union(similar, self.popular("adapter", family), co_used,
                      self._rare_candidates(terms, segment, "adapter"))
        keep = self._passes(rows, filters) & (self.index.arrays["serving_role"][rows] != self._negative)
        if not filters.types:
            keep &= np.isin(self.index.arrays["model_type"][rows], self._lora_family)
        if family is not None:
            keep &= self.index.arrays["family"][rows] == self.index.code("family", family)
        pool = self._pool(rows[keep], q, terms, "adapter")
        pool.co_images = np.array([images.get(v, 0) for v in self.index.version_ids[pool.rows].tolist()],
                                  dtype=np.float64)
        co_usage = np.minimum(1.0, np.log1p(pool.co_images) / math.log(CO_USED_IMAGES))
        invited = self.invitations.invited(pool.rows, pool.similarity, self._rare_lexemes(terms, "adapter"))
        usage = weights.adapter_popularity * self._popularity[pool.rows] + weights.co_usage * co_usage
        scores = pool.similarity + np.where(invited, usage, 0.0) + weights.adapter_lexical * pool.lexical
        return [self._hit(pool, i, scores[i], terms, checkpoint) for i in select(self.index, pool.rows, scores, top_k)]

    def negatives(self, checkpoint: Hit, filters: Filters = Filters(), weights: Weights | None = None,
                  k: int = NEGATIVES) -> list[Hit]:
        """The negative embeddings of the checkpoint's family that suit it: used with it most, then most
        downloaded (they do not depend on the prompt)."""
        weights = weights or self.weights
        segment = self.index.segment("adapter", checkpoint.base_model_family)
        rows = np.arange(segment.start, segment.stop)
        rows = rows[(self.index.arrays["serving_role"][rows] == self._negative) & self._passes(rows, filters)]
        adapters, counts = self.index.co_used(checkpoint.version_id)
        images = dict(zip(adapters.tolist(), counts.tolist(), strict=True))
        co_images = np.array([images.get(v, 0) for v in self.index.version_ids[rows].tolist()], dtype=np.float64)
        pool = _Pool(rows, np.zeros(len(rows)), np.zeros((0, len(rows))), np.zeros(len(rows)), co_images)
        scores = (weights.co_usage * np.minimum(1.0, np.log1p(co_images) / math.log(CO_USED_IMAGES))
                  + self._popularity[rows])
        empty = _Terms(np.zeros(0, dtype=np.int64), [], np.zeros(0), np.zeros(0), np.zeros(0))
        return [self._hit(pool, i, scores[i], empty, checkpoint)
                for i in select(self.index, rows, scores, k, enhancer_cap=None, near_duplicate=None)]

    def _rare_lexemes(self, terms: _Terms, role: str) -> frozenset[str]:
        """The query's words that are rare in the role's texts: the ones that can name something."""
        rare = terms.documents <= RARE_SHARE * self._corpus[role][0]
        return frozenset(self.index.lexemes[int(term)] for term in terms.ids[rare])

    def _pool(self, rows: np.ndarray, q: np.ndarray, terms: _Terms, role: str) -> _Pool:
        """The candidates' evidence: similarity, term frequencies of the query's words, BM25 relative to the best."""
        tf = self._frequencies(terms, rows)
        bm25 = self._bm25(rows, terms, role, tf)
        best = bm25.max() if len(bm25) else 0.0
        return _Pool(rows, self._similarity(rows, q), tf, bm25 / best if best > 0 else bm25, np.zeros(len(rows)))

    # ---- candidate sources ------------------------------------------------------------------------------------

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

    def _rare_candidates(self, terms: _Terms, segment: slice, role: str) -> np.ndarray:
        """Rows of `segment` holding the query's rarest words (up to RARE_TERMS words each in at most RARE_SHARE
        of the role's texts), best first by the IDF they match."""
        if not len(terms.ids) or segment.start == segment.stop:
            return np.zeros(0, dtype=np.int64)
        rare = np.lexsort((terms.ids, terms.documents))  # term ids follow the lexemes' order
        rare = rare[terms.documents[rare] <= RARE_SHARE * self._corpus[role][0]][:RARE_TERMS]
        found, weights = [], []
        for i in rare.tolist():
            rows, _ = self.index.postings(int(terms.ids[i]))
            rows = rows[(rows >= segment.start) & (rows < segment.stop)]
            found.append(rows)
            weights.append(np.full(len(rows), terms.idf[i]))
        if not found:
            return np.zeros(0, dtype=np.int64)
        rows, position = np.unique(np.concatenate(found), return_inverse=True)
        idf = np.bincount(position, weights=np.concatenate(weights))
        order = np.lexsort((self.index.version_ids[rows], -idf))
        return rows[order[: self.pools.lexical]].astype(np.int64)

    def _rows_of(self, version_ids: np.ndarray, role: str) -> np.ndarray:
        """The rows of the given versions that the index holds in `role`."""
        segment = self.index.segment(role)
        rows = [self.index.row_of.get(int(v), -1) for v in version_ids.tolist()]
        return np.asarray([r for r in rows if segment.start <= r < segment.stop], dtype=np.int64)

    # ---- features ---------------------------------------------------------------------------------------------

    def _passes(self, rows: np.ndarray, filters: Filters) -> np.ndarray:
        arrays, keep = self.index.arrays, np.ones(len(rows), dtype=bool)
        if filters.base_models:
            codes = [self.index.code("base_model", name) for name in filters.base_models]
            keep &= np.isin(arrays["base_model"][rows], codes)
        if filters.types:
            keep &= np.isin(arrays["model_type"][rows], [self.index.code("model_type", t) for t in filters.types])
        if filters.commercial_use:
            bit = self.index.code("licence", filters.commercial_use)
            keep &= (arrays["licence"][rows] & (1 << bit)) != 0 if bit >= 0 else False
        if filters.min_downloads:
            keep &= arrays["downloads"][rows] >= filters.min_downloads
        if filters.max_content_level:
            keep &= arrays["content_level"][rows] <= filters.max_content_level
        if filters.families:
            keep &= np.isin(arrays["family"][rows], [self.index.code("family", f) for f in filters.families])
        return keep

    def _similarity(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        return (self.index.vectors[rows] @ np.asarray(q, dtype=np.float32)).astype(np.float64)

    def _terms(self, words: str | None, role: str) -> _Terms:
        """The query's words (A1111 syntax removed, stemmed as the stored texts were) that the role's texts hold,
        with BM25's IDF (Lucene's, never negative); each lexeme keeps the first-sorting word it came from."""
        found: dict[int, list] = {}
        for lexeme, word in query_terms(plain_text(words or "")):
            term = self.index.term_of.get(lexeme)
            if term is None or not self._documents[role][term]:
                continue
            entry = found.setdefault(term, [word, 0])
            entry[0], entry[1] = min(entry[0], word), entry[1] + 1
        ids = np.array(sorted(found), dtype=np.int64)
        documents = self._documents[role][ids].astype(np.float64) if len(ids) else np.zeros(0)
        corpus = self._corpus[role][0]
        return _Terms(ids, [found[int(t)][0] for t in ids], np.array([found[int(t)][1] for t in ids], dtype=float),
                      documents, np.log1p((corpus - documents + 0.5) / (documents + 0.5)))

    def _frequencies(self, terms: _Terms, rows: np.ndarray) -> np.ndarray:
        """[terms, rows]: how often each of the query's terms occurs in each row's text."""
        tf = np.zeros((len(terms.ids), len(rows)))
        for i, term in enumerate(terms.ids.tolist()):
            posting_rows, frequencies = self.index.postings(term)
            if len(posting_rows) and len(rows):
                at = np.minimum(np.searchsorted(posting_rows, rows), len(posting_rows) - 1)
                tf[i] = np.where(posting_rows[at] == rows, frequencies[at], 0)
        return tf

    def _bm25(self, rows: np.ndarray, terms: _Terms, role: str, tf: np.ndarray | None = None) -> np.ndarray:
        """BM25 (Okapi, Lucene's IDF) of the query's words in each row's text, with the role's statistics."""
        if not len(terms.ids) or not len(rows):
            return np.zeros(len(rows))
        tf = self._frequencies(terms, rows) if tf is None else tf
        average = max(self._corpus[role][1], 1.0)
        norm = BM25_K1 * (1 - BM25_B + BM25_B * self.index.arrays["lexical_length"][rows] / average)
        per_term = tf * (BM25_K1 + 1) / (tf + norm)
        return (terms.idf * terms.counts) @ per_term

    # ---- hits -------------------------------------------------------------------------------------------------

    def _hit(self, pool: _Pool, i: int, score: float, terms: _Terms, checkpoint: Hit | None) -> Hit:
        index, row = self.index, int(pool.rows[i])
        matched = np.flatnonzero(pool.tf[:, i] > 0)
        words = [terms.words[j] for j in sorted(matched.tolist(), key=lambda j: (-terms.idf[j], terms.words[j]))]
        downloads, co_images = int(index.arrays["downloads"][row]), int(pool.co_images[i])
        similarity, lexical = float(pool.similarity[i]), float(pool.lexical[i])
        why = [f"similarity {similarity:.3f}", f"{downloads:,} downloads"]
        if words:
            why.append("words: " + ", ".join(words))
        if checkpoint is not None:
            why.append(f"{co_images} images with {checkpoint.name}" if co_images
                       else f"compatible with {checkpoint.base_model_family}")
        values = {name: index.details[name][row] for name in index.details}
        values.update(model_id=int(index.arrays["model_id"][row]), version_id=int(index.version_ids[row]),
                      score=round(float(score), 6), similarity=round(similarity, 6), downloads=downloads,
                      co_usage_images=co_images, trigger_words=list(values["trigger_words"]),
                      why="; ".join(why), lexical=round(lexical, 6), matched_words=words,
                      role=index.codes["serving_role"][int(index.arrays["serving_role"][row])],
                      content_level=LEVEL_NAMES.get(int(index.arrays["content_level"][row]), ""),
                      other_versions=[v for v in self._versions_of[int(index.arrays["model_id"][row])]
                                      if v != int(index.version_ids[row])])
        return Hit(**{name: value for name, value in values.items() if name in _HIT_FIELDS})


def _segment_sums(flags: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per term (CSR `starts`), how many of its postings have `flags` set."""
    cumulative = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    return cumulative[starts[1:]] - cumulative[starts[:-1]]


def _union(*sources: np.ndarray) -> np.ndarray:
    """The distinct rows of all sources."""
    arrays = [np.asarray(source, dtype=np.int64) for source in sources if len(source)]
    return np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, dtype=np.int64)
