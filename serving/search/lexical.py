"""The query's words against the versions' texts: BM25 (Okapi, Lucene's IDF) with each role's statistics, and the
versions whose texts hold the query's rarest words (a candidate source: what a prompt names literally — a
character, an object, a named style — that similarity and popularity do not reach)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crawlers.a1111 import plain_text
from embedding.search_index import ROLES, SearchIndex
from serving.search.words import query_terms

BM25_K1, BM25_B = 1.5, 0.75  # rank_bm25's BM25Okapi defaults (the benchmark's baseline)
RARE_TERMS = 8  # the query's rarest words pick the lexical candidates
RARE_SHARE = 0.05  # a word in more than this share of a role's texts picks none (BM25 still counts it)


@dataclass(frozen=True)
class Terms:
    """The query's words as one role's corpus knows them: term ids, the word typed, how often, documents, IDF."""

    ids: np.ndarray
    words: list[str]
    counts: np.ndarray
    documents: np.ndarray
    idf: np.ndarray


NO_TERMS = Terms(np.zeros(0, dtype=np.int64), [], np.zeros(0), np.zeros(0), np.zeros(0))


class Lexicon:
    """BM25 over one index's version texts; per role (checkpoint, adapter) document frequencies and corpus size."""

    def __init__(self, index: SearchIndex) -> None:
        self.index = index
        arrays = index.arrays
        posting_role = arrays["role"][arrays["posting_rows"]]
        starts = arrays["term_start"]
        self.documents = {role: _segment_sums(posting_role == code, starts) for code, role in enumerate(ROLES)}
        self.corpus: dict[str, tuple[int, float]] = {}
        for role in ROLES:
            lengths = arrays["lexical_length"][index.segment(role)]
            self.corpus[role] = (len(lengths), float(lengths.mean()) if len(lengths) else 0.0)

    def lexemes(self, words: str | None) -> list[tuple[str, str]]:
        """(lexeme, word typed) of the query without A1111 syntax, stemmed as the stored texts were."""
        return query_terms(plain_text(words or ""))

    def terms(self, lexemes: list[tuple[str, str]], role: str) -> Terms:
        """The query's words that the role's texts hold; each lexeme keeps the first-sorting word it came from."""
        found: dict[int, list] = {}
        for lexeme, word in lexemes:
            term = self.index.term_of.get(lexeme)
            if term is None or not self.documents[role][term]:
                continue
            entry = found.setdefault(term, [word, 0])
            entry[0], entry[1] = min(entry[0], word), entry[1] + 1
        ids = np.array(sorted(found), dtype=np.int64)
        documents = self.documents[role][ids].astype(np.float64) if len(ids) else np.zeros(0)
        corpus = self.corpus[role][0]
        return Terms(ids, [found[int(t)][0] for t in ids], np.array([found[int(t)][1] for t in ids], dtype=float),
                     documents, np.log1p((corpus - documents + 0.5) / (documents + 0.5)))

    def frequencies(self, terms: Terms, rows: np.ndarray) -> np.ndarray:
        """[terms, rows]: how often each of the query's terms occurs in each row's text."""
        tf = np.zeros((len(terms.ids), len(rows)))
        for i, term in enumerate(terms.ids.tolist()):
            posting_rows, frequencies = self.index.postings(term)
            if len(posting_rows) and len(rows):
                at = np.minimum(np.searchsorted(posting_rows, rows), len(posting_rows) - 1)
                tf[i] = np.where(posting_rows[at] == rows, frequencies[at], 0)
        return tf

    def bm25(self, rows: np.ndarray, terms: Terms, role: str, tf: np.ndarray | None = None) -> np.ndarray:
        """BM25 of the query's words in each row's text, with the role's statistics."""
        if not len(terms.ids) or not len(rows):
            return np.zeros(len(rows))
        tf = self.frequencies(terms, rows) if tf is None else tf
        average = max(self.corpus[role][1], 1.0)
        norm = BM25_K1 * (1 - BM25_B + BM25_B * self.index.arrays["lexical_length"][rows] / average)
        return (terms.idf * terms.counts) @ (tf * (BM25_K1 + 1) / (tf + norm))

    def rare(self, terms: Terms, role: str) -> np.ndarray:
        """Positions in `terms` of the words that can name something: in at most RARE_SHARE of the role's texts."""
        return np.flatnonzero(terms.documents <= RARE_SHARE * self.corpus[role][0])

    def rare_candidates(self, terms: Terms, segment: slice, role: str, n: int) -> np.ndarray:
        """Up to n rows of `segment` holding the query's rarest words (the RARE_TERMS rarest), best first by the
        IDF they match."""
        if not len(terms.ids) or segment.start == segment.stop:
            return np.zeros(0, dtype=np.int64)
        rare = np.lexsort((terms.ids, terms.documents))  # term ids follow the lexemes' order
        rare = rare[terms.documents[rare] <= RARE_SHARE * self.corpus[role][0]][:RARE_TERMS]
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
        return rows[np.lexsort((self.index.version_ids[rows], -idf))[:n]].astype(np.int64)


def _segment_sums(flags: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per term (CSR `starts`), how many of its postings have `flags` set."""
    cumulative = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    return cumulative[starts[1:]] - cumulative[starts[:-1]]
