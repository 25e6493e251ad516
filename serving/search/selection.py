"""What a person sees: from a scored pool, the list of hits. One version per model (the best-scoring one), at most a
couple of enhancers (detail tweakers answer every prompt and would otherwise fill every list), and no near-identical
look twice (two adapters of one kind whose vectors almost coincide: the second waits until the list has room).

Characters and real-person likenesses are invited, not imposed: `invited` says whether a prompt asks for one (its
name or trigger words, a prompt very close to its text, or a share of the votes of the example prompts nearest
the prompt); one the prompt does not ask for waits behind every invited candidate, whatever its score.
"""

from __future__ import annotations

import numpy as np

from embedding.search_index import SearchIndex
from serving.search.words import query_terms

ENHANCERS_PER_LIST = 2
NEAR_DUPLICATE = 0.95  # cosine of two adapters' vectors at or above which they are the same look
INVITING_SIMILARITY = 0.6  # a prompt this close to a character's text asks for it without naming it
# Or this share of the votes of the example prompts nearest the query (they used it for prompts like this one).
# Chosen on the quality bench's dev half (bench/retrieval_quality.py, one query set, the ranker retrained per
# threshold): at 0.03 the dev half's character answers keep their hit@10 (0.30, as without the gate) and character
# slots on prompts naming none fall from 618 to 330 of 5,000; 0.05 cut them to 218 but lost a third of the dev
# character answers, 0.1 two thirds.
INVITING_VOTES = 0.03
INVITED_KINDS = frozenset({"character"})
# Characters the prompt names that the ranker left out of the list take its last places, not its first: on the
# quality bench putting them first lowered adapter MRR from 0.542 to 0.525 (a prompt often names a character whose
# LoRA its image did not use), while leaving them to the ranker listed the two Hatsune Miku LoRAs 20th and 30th for
# "Hatsune Miku singing on stage" (its training prompts have their trigger words, often names, stripped).
NAMED_PER_LIST = 2


def select(index: SearchIndex, rows: np.ndarray, scores: np.ndarray, k: int, *, one_per_model: bool = True,
           enhancer_cap: int | None = ENHANCERS_PER_LIST, near_duplicate: float | None = NEAR_DUPLICATE,
           invited: np.ndarray | None = None, named: np.ndarray | None = None) -> list[int]:
    """Positions (into `rows`) of the list to show: best score first (ties: lower version id), under the rules
    above; uninvited candidates (`invited` False), near-duplicates and enhancers over the cap fill remaining places
    only if nothing else does; candidates the prompt names (`named`) that did not make the list take its last
    places (at most NAMED_PER_LIST)."""
    order = np.lexsort((index.version_ids[rows], -scores))
    enhancer = index.code("serving_role", "enhancer")
    models, kinds = index.arrays["model_id"][rows].tolist(), index.arrays["kind"][rows].tolist()
    enhancers_at = (index.arrays["serving_role"][rows] == enhancer).tolist()
    chosen: list[int] = []
    waiting: list[int] = []
    chosen_of_kind: dict[int, list[int]] = {}  # kind -> rows chosen
    seen_models: set[int] = set()
    enhancers = 0
    for position in order.tolist():
        if len(chosen) >= k:
            break
        if one_per_model and models[position] in seen_models:
            continue
        seen_models.add(models[position])
        row, same_kind = int(rows[position]), chosen_of_kind.setdefault(kinds[position], [])
        is_enhancer = enhancers_at[position]
        if (invited is not None and not invited[position]) or (
                is_enhancer and enhancer_cap is not None and enhancers >= enhancer_cap) or (
                near_duplicate is not None and _repeats(index, row, same_kind, near_duplicate)):
            waiting.append(position)
            continue
        enhancers += is_enhancer
        chosen.append(position)
        same_kind.append(row)
    listed = (chosen + waiting)[:k]
    if named is None or not named.any():
        return listed
    listed_models, added = {models[p] for p in listed}, []
    for position in order[named[order]].tolist():
        if len(added) == min(NAMED_PER_LIST, k):
            break
        if models[position] not in listed_models:
            added.append(position)
            listed_models.add(models[position])
    return listed[: k - len(added)] + added


def _repeats(index: SearchIndex, row: int, same_kind: list[int], threshold: float) -> bool:
    """Whether `row`'s vector almost equals that of a chosen row of its kind."""
    return bool(same_kind) and bool((index.vectors[same_kind] @ index.vectors[row] >= threshold).any())


class Invitations:
    """Whether a prompt asks for a character or a likeness: a rare word of the prompt (`rare_lexemes`) is one of
    its name's or trigger words' lexemes, the prompt is very close to its text, or the example prompts nearest the
    prompt voted for it; and whether the prompt names it outright (then it is listed even when its score is not
    among the best: a ranker learned from prompts stripped of their trigger words cannot know that a name typed out
    is strong evidence)."""

    def __init__(self, index: SearchIndex) -> None:
        self.index = index
        self._names: dict[int, tuple[frozenset[str], tuple[frozenset[str], ...], frozenset[frozenset[str]]]] = {}
        invited = [index.code("kind", kind) for kind in INVITED_KINDS]
        self.needs_invitation = np.isin(index.arrays["kind"], invited) | index.arrays["likeness"]

    def of(self, rows: np.ndarray, similarity: np.ndarray, votes: np.ndarray, pairs: frozenset[frozenset[str]],
           rare_lexemes: frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per row, (invited, named). Invited: True unless it needs an invitation and the prompt gives none. Named:
        the prompt types its name out, two neighbouring words of its name side by side in the prompt (`pairs`, see
        adjacent_pairs), one of them rare ("hatsune miku"), or its one-word name is a rare word of the prompt. Not
        two words of its name anywhere in the prompt: descriptive names ("Medieval Style Armor Suit") would be named
        by every prompt about their subject. Not its trigger words: a character's often describe its outfit ("red
        kimono")."""
        invited, named = np.ones(len(rows), dtype=bool), np.zeros(len(rows), dtype=bool)
        for i in np.flatnonzero(self.needs_invitation[rows]).tolist():
            name, triggers, name_pairs = self._lexemes(int(rows[i]))
            invited[i] = (similarity[i] >= INVITING_SIMILARITY or votes[i] >= INVITING_VOTES
                          or bool(name.union(*triggers) & rare_lexemes))
            named[i] = (len(name) == 1 and name <= rare_lexemes) or any(
                pair & rare_lexemes for pair in name_pairs & pairs)
        return invited, named

    def _lexemes(self, row: int) -> tuple[frozenset[str], tuple[frozenset[str], ...], frozenset[frozenset[str]]]:
        """The lexemes of a row's name, of each of its trigger words, and the name's neighbouring pairs."""
        if row not in self._names:
            details = self.index.details
            name = _lexemes_of(details["name"][row])
            triggers = tuple(frozenset(_lexemes_of(word)) for word in details["trigger_words"][row])
            self._names[row] = (frozenset(name), triggers, adjacent_pairs(name))
        return self._names[row]


def adjacent_pairs(lexemes: list[str]) -> frozenset[frozenset[str]]:
    """Each two neighbouring lexemes of a text, unordered: how a name is typed out ("hatsune miku", "miku hatsune")."""
    return frozenset(frozenset(pair) for pair in zip(lexemes, lexemes[1:], strict=False) if pair[0] != pair[1])


def _lexemes_of(text: str) -> list[str]:
    """A text's lexemes in order (neighbours stay neighbours, for adjacent_pairs)."""
    return [lexeme for lexeme, _ in query_terms(text)]
