"""Prompt-neighbour votes: the example prompts nearest a query by BM25 (Lucene IDF, rank_bm25's k1 and b) vote for
the versions their images used. Checked against BM25 written out word by word over the prompts' words."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from serving.search.lexical import BM25_B, BM25_K1
from serving.search.votes import NEIGHBOUR_SHARE, PromptNeighbours

FILLER = [f"scene{i} light" for i in range(30)]  # makes "light" too common to pick neighbours (NEIGHBOUR_SHARE)
PROMPTS = [["fox", "snow", "fox", "forest"], ["fox", "shrine"], ["castle", "cliff", "storm"], ["snow", "castle"],
           *[prompt.split() for prompt in FILLER]]
VOTES = [[0, 1], [1], [2], [0, 2], *[[3]] * len(FILLER)]  # the rows each prompt's image used


def _index(prompts: list[list[str]], votes: list[list[int]]) -> SimpleNamespace:
    """The arrays PromptNeighbours reads: CSR postings of the prompts' words and of their votes."""
    lexemes = sorted({word for prompt in prompts for word in prompt})
    postings = [[(p, Counter(prompt)[word]) for p, prompt in enumerate(prompts) if word in prompt] for word in lexemes]
    starts = np.cumsum([0, *map(len, postings)])
    return SimpleNamespace(prompt_lexemes=lexemes, arrays={
        "prompt_length": np.array([len(p) for p in prompts]), "prompt_term_start": starts,
        "prompt_posting_rows": np.array([p for term in postings for p, _ in term]),
        "prompt_posting_tf": np.array([tf for term in postings for _, tf in term]),
        "prompt_vote_start": np.cumsum([0, *map(len, votes)]),
        "prompt_votes": np.array([row for voted in votes for row in voted])})


def _bm25_by_hand(prompts: list[list[str]], query: list[str]) -> np.ndarray:
    average = sum(map(len, prompts)) / len(prompts)
    scores = np.zeros(len(prompts))
    for word in dict.fromkeys(query):
        documents = sum(word in prompt for prompt in prompts)
        if not documents or documents > NEIGHBOUR_SHARE * len(prompts):
            continue
        idf = math.log(1 + (len(prompts) - documents + 0.5) / (documents + 0.5))
        for p, prompt in enumerate(prompts):
            tf = prompt.count(word)
            scores[p] += idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * len(prompt) / average))
    return scores


@pytest.mark.parametrize("query", [["fox"], ["fox", "snow"], ["snow", "castle", "light"], ["castle", "cliff"]])
def test_the_nearest_prompts_vote_with_their_bm25_relative_to_the_best(query: list[str]) -> None:
    neighbours = PromptNeighbours(_index(PROMPTS, VOTES))
    expected = _bm25_by_hand(PROMPTS, query)
    votes = neighbours.votes(query, k=3)
    nearest = np.argsort(-expected, kind="stable")[: min(3, np.count_nonzero(expected))]
    assert sorted(votes.neighbours.tolist()) == sorted(nearest.tolist())
    weights = expected[nearest] / expected[nearest].max()
    share = Counter()
    for prompt, weight in zip(nearest.tolist(), weights, strict=True):
        for row in VOTES[prompt]:
            share[row] += weight / weights.sum()
    assert dict(zip(votes.rows.tolist(), votes.share.tolist(), strict=True)) == pytest.approx(dict(share))


def test_words_in_too_many_prompts_pick_no_neighbours_and_excluded_prompts_do_not_vote() -> None:
    neighbours = PromptNeighbours(_index(PROMPTS, VOTES))
    assert not neighbours.votes(["light"]).rows.size
    excluded = np.zeros(len(PROMPTS), dtype=bool)
    excluded[0] = True
    votes = neighbours.votes(["fox"], exclude=excluded)
    assert votes.neighbours.tolist() == [1] and votes.rows.tolist() == [1]
