"""Prompt-neighbour votes: the example prompts nearest a query (BM25 over their words) vote for the versions their
images used, each prompt's vote weighted by its score relative to the best neighbour's.

What people actually combined for prompts like this one is evidence no card holds: a LoRA whose card says little but
whose gallery and users' prompts look like the query gets votes. Words in more than NEIGHBOUR_SHARE of the prompts
("masterpiece", "1girl") add little and cost much, so they pick no neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from embedding.search_index import SearchIndex
from serving.search.lexical import BM25_B, BM25_K1

NEIGHBOURS = 50
NEIGHBOUR_SHARE = 0.1


@dataclass(frozen=True)
class Votes:
    """Per voted row, its share of the neighbours' votes (0..1); the neighbours that voted."""

    rows: np.ndarray
    share: np.ndarray
    neighbours: np.ndarray

    def of(self, rows: np.ndarray) -> np.ndarray:
        """The vote share of each of `rows` (0 for rows nobody voted for)."""
        if not len(self.rows):
            return np.zeros(len(rows))
        at = np.minimum(np.searchsorted(self.rows, rows), len(self.rows) - 1)
        return np.where(self.rows[at] == rows, self.share[at], 0.0)

    def best(self, segment: slice, n: int) -> np.ndarray:
        """The n most voted rows within a slice of the index, best first."""
        inside = (self.rows >= segment.start) & (self.rows < segment.stop)
        rows, share = self.rows[inside], self.share[inside]
        return rows[np.lexsort((rows, -share))[:n]].astype(np.int64)


NO_VOTES = Votes(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int64))


class PromptNeighbours:
    """The example-prompt collection of one index, searchable by words."""

    def __init__(self, index: SearchIndex) -> None:
        self.index = index
        arrays = index.arrays
        self.count = len(arrays["prompt_length"]) if "prompt_length" in arrays else 0
        self.average_length = float(arrays["prompt_length"].mean()) if self.count else 0.0
        self._posting_scores = _posting_scores(arrays, self.count, self.average_length) if self.count else None

    @cached_property
    def _term_of(self) -> dict[str, int]:
        return {lexeme: i for i, lexeme in enumerate(self.index.prompt_lexemes)}

    def votes(self, lexemes: list[str], exclude: np.ndarray | None = None, k: int = NEIGHBOURS) -> Votes:
        """Votes of the k prompts nearest the query's words; `exclude` marks prompts that may not vote (a
        training query's own prompt and gallery)."""
        scores = self._bm25(lexemes)
        if scores is None:
            return NO_VOTES
        if exclude is not None:
            scores[exclude] = 0.0
        k = min(k, int(np.count_nonzero(scores)))
        if k == 0:
            return NO_VOTES
        nearest = np.argpartition(-scores, k - 1)[:k]
        weights = scores[nearest] / scores[nearest].max()
        arrays = self.index.arrays
        starts, ends = arrays["prompt_vote_start"][nearest], arrays["prompt_vote_start"][nearest + 1]
        voted = np.concatenate([arrays["prompt_votes"][a:b] for a, b in zip(starts, ends, strict=True)])
        if not len(voted):
            return Votes(NO_VOTES.rows, NO_VOTES.share, nearest)
        each = np.repeat(weights, ends - starts)
        rows, position = np.unique(voted, return_inverse=True)
        share = np.bincount(position, weights=each) / weights.sum()
        return Votes(rows.astype(np.int64), share, nearest)

    def prompts_of_galleries(self, galleries: set[int]) -> np.ndarray:
        """Mask of the prompts posted to any of `galleries` (version ids)."""
        arrays = self.index.arrays
        posted = np.isin(arrays["prompt_galleries"], list(galleries))
        owner = np.repeat(np.arange(self.count), np.diff(arrays["prompt_gallery_start"]))
        mask = np.zeros(self.count, dtype=bool)
        mask[owner[posted]] = True
        return mask

    def _bm25(self, lexemes: list[str]) -> np.ndarray | None:
        if not self.count:
            return None
        arrays, scores, used = self.index.arrays, np.zeros(self.count), False
        for lexeme in dict.fromkeys(lexemes):
            term = self._term_of.get(lexeme)
            if term is None:
                continue
            start, end = arrays["prompt_term_start"][term], arrays["prompt_term_start"][term + 1]
            if end - start > NEIGHBOUR_SHARE * self.count:
                continue
            scores[arrays["prompt_posting_rows"][start:end]] += self._posting_scores[start:end]
            used = True
        return scores if used else None


def _posting_scores(arrays: dict[str, np.ndarray], count: int, average_length: float) -> np.ndarray:
    """Each prompt posting's BM25 term score (idf x saturated, length-normalised tf). It depends on no query, so
    the engine computes it once when it loads and a query only adds up its words' postings."""
    documents = np.diff(arrays["prompt_term_start"])
    idf = np.log1p((count - documents + 0.5) / (documents + 0.5))
    lengths = arrays["prompt_length"][arrays["prompt_posting_rows"]]
    norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths / max(average_length, 1.0))
    tf = arrays["prompt_posting_tf"].astype(np.float64)
    return np.repeat(idf, documents) * tf * (BM25_K1 + 1) / (tf + norm)

