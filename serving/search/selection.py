"""What a person sees: from a scored pool, the list of hits. One version per model (the best-scoring one), at most a
couple of enhancers (detail tweakers answer every prompt and would otherwise fill every list), and no near-identical
look twice (two adapters of one kind whose vectors almost coincide: the second waits until the list has room).

Characters and real-person likenesses are invited, not imposed: `invited` says whether a prompt asks for one (its
name or trigger words, or a prompt very close to its text); one the prompt does not ask for gets no usage boost.
"""

from __future__ import annotations

import numpy as np

from embedding.search_index import SearchIndex
from serving.search.words import query_terms

ENHANCERS_PER_LIST = 2
NEAR_DUPLICATE = 0.95  # cosine of two adapters' vectors at or above which they are the same look
INVITING_SIMILARITY = 0.6  # a prompt this close to a character's text asks for it without naming it
INVITED_KINDS = frozenset({"character"})


def select(index: SearchIndex, rows: np.ndarray, scores: np.ndarray, k: int, *, one_per_model: bool = True,
           enhancer_cap: int | None = ENHANCERS_PER_LIST, near_duplicate: float | None = NEAR_DUPLICATE) -> list[int]:
    """Positions (into `rows`) of the list to show: best score first (ties: lower version id), under the rules
    above; near-duplicates and enhancers over the cap fill remaining places only if nothing else does."""
    order = np.lexsort((index.version_ids[rows], -scores))
    enhancer = index.code("serving_role", "enhancer")
    chosen: list[int] = []
    waiting: list[int] = []
    models: set[int] = set()
    enhancers = 0
    for position in order.tolist():
        if len(chosen) >= k:
            break
        row = int(rows[position])
        model = int(index.arrays["model_id"][row])
        if one_per_model and model in models:
            continue
        models.add(model)
        is_enhancer = int(index.arrays["serving_role"][row]) == enhancer
        if (is_enhancer and enhancer_cap is not None and enhancers >= enhancer_cap) or (
                near_duplicate is not None and _repeats(index, row, [int(rows[p]) for p in chosen], near_duplicate)):
            waiting.append(position)
            continue
        enhancers += is_enhancer
        chosen.append(position)
    return (chosen + waiting)[:k]


def _repeats(index: SearchIndex, row: int, chosen: list[int], threshold: float) -> bool:
    """Whether `row` is of the same kind as a chosen row and its vector almost the same."""
    same_kind = [other for other in chosen if index.arrays["kind"][other] == index.arrays["kind"][row]]
    if not same_kind:
        return False
    return bool((index.vectors[same_kind] @ index.vectors[row] >= threshold).any())


class Invitations:
    """Whether a prompt asks for a character or a likeness: a rare word of the prompt (`rare_lexemes`) is one of
    its name's or trigger words' lexemes, or the prompt is very close to its text."""

    def __init__(self, index: SearchIndex) -> None:
        self.index = index
        self._lexemes: dict[int, frozenset[str]] = {}
        invited = [index.code("kind", kind) for kind in INVITED_KINDS]
        self.needs_invitation = np.isin(index.arrays["kind"], invited) | index.arrays["likeness"]

    def invited(self, rows: np.ndarray, similarity: np.ndarray, rare_lexemes: frozenset[str]) -> np.ndarray:
        """Per row: True unless it needs an invitation and the prompt gives none."""
        result = np.ones(len(rows), dtype=bool)
        for i in np.flatnonzero(self.needs_invitation[rows]).tolist():
            row = int(rows[i])
            result[i] = similarity[i] >= INVITING_SIMILARITY or bool(self._named_by(row) & rare_lexemes)
        return result

    def _named_by(self, row: int) -> frozenset[str]:
        if row not in self._lexemes:
            details = self.index.details
            text = " ".join([details["name"][row], *details["trigger_words"][row]])
            self._lexemes[row] = frozenset(lexeme for lexeme, _ in query_terms(text))
        return self._lexemes[row]


