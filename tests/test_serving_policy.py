"""What serving shows and how: content levels from flags, images and tags; roles from usage evidence; and the list
a person reads (one version per model, enhancers capped, near-identical looks held back)."""

from __future__ import annotations

import numpy as np
import pytest

from crawlers.nsfw import content_level
from crawlers.roles import Card, PromptCoherence, Usage, decide_roles
from serving.search.selection import INVITING_VOTES, Invitations, adjacent_pairs, select
from serving.search.words import query_terms

SUBJECTS = ["a red fox in snow", "city skyline at dusk", "portrait of an old sailor", "bowl of ramen, steam",
            "medieval castle on a cliff", "robot in a garden", "girl reading in a library", "sports car on a road",
            "lighthouse in a storm", "cat sleeping on a sofa", "mountain lake at sunrise", "astronaut on the moon",
            "market street in the rain", "dragon over a village", "bouquet of tulips", "samurai in bamboo forest"]
FOX = [f"fox spirit kitsune, {detail}, orange fur, nine tails" for detail in
       ("forest", "night", "shrine", "snow", "moon", "river", "autumn", "temple", "field", "mist", "lanterns", "dusk",
        "dawn", "cliff")]
# Everything else people prompted (what "random prompts" are): the fox words must stay rare in it.
OTHERS = [f"{subject}, {look}" for subject in SUBJECTS for look in ("oil painting", "pencil sketch", "photograph",
                                                                       "pixel art", "ukiyo-e print", "3d render")]


@pytest.mark.parametrize(("nsfw", "level", "tags", "images", "expected", "reason"), [
    (False, None, [], [], 1, "default"),
    (False, 3, [], [], 2, "nsfwLevel 3"),
    (False, None, [], [1, 1, 2, 2, 2, 1], 2, "images: 50% of 6 rated at PG-13"),
    (False, None, [], [1, 1, 1, 1, 1, 1, 1, 1, 1, 4], 1, "default"),  # one stray R image does not set the level
    (False, None, ["Sexy", "anime"], [1], 2, "tag 'sexy'"),
    (False, None, ["ecchi"], [1, 2], 4, "tag 'ecchi'"),
    (True, None, [], [], 4, "nsfw model"),
])
def test_content_level(nsfw, level, tags, images, expected, reason) -> None:
    found = content_level(nsfw, level, tags, images)
    assert found.level == expected and found.reason.startswith(reason)


def test_negative_embeddings_are_told_by_where_images_name_them() -> None:
    cards = {1: Card("TextualInversion", "EasyNegative", (), "concept"),
             2: Card("TextualInversion", "Ada Lovelace", (), "character"),
             3: Card("TextualInversion", "fancy negative helper", ("negative",), "concept"),
             4: Card("TextualInversion", "negative space art", (), "style")}
    usage = {1: Usage(in_negative=40, in_positive=1), 2: Usage(in_negative=0, in_positive=12),
             4: Usage(in_negative=0, in_positive=9)}
    roles = decide_roles(cards, usage)
    assert [roles[v].role for v in (1, 2, 3, 4)] == ["negative", "content", "negative", "content"]
    assert "40" in roles[1].reason and "card" in roles[3].reason


def test_enhancers_are_used_with_unrelated_prompts_across_galleries() -> None:
    cards = {1: Card("LORA", "detail tweaker", (), "concept"), 2: Card("LORA", "Kitsune", (), "concept"),
             3: Card("LORA", "Ada", (), "character"), 4: Card("LORA", "rare tweak", (), "concept"),
             5: Card("LORA", "many looks", (), "style")}
    usage = {1: Usage(prompts=tuple(SUBJECTS), galleries=9), 2: Usage(prompts=tuple(FOX), galleries=9),
             3: Usage(prompts=tuple(SUBJECTS), galleries=9), 4: Usage(prompts=tuple(SUBJECTS), galleries=2),
             5: Usage(prompts=tuple(OTHERS), galleries=1)}
    roles = decide_roles(cards, usage)
    assert [roles[v].role for v in (1, 2, 3, 4)] == ["enhancer", "content", "content", "content"]
    coherence = PromptCoherence(SUBJECTS + FOX + OTHERS)
    assert coherence.ratio(SUBJECTS) < 2.3 < coherence.ratio(FOX)
    assert coherence.ratio(FOX) == PromptCoherence(OTHERS + FOX + SUBJECTS).ratio(list(reversed(FOX)))


class _Index:
    """The arrays `select` reads: models, roles, kinds and vectors of six rows."""

    def __init__(self) -> None:
        self.codes = {"serving_role": ["checkpoint", "content", "enhancer", "negative"]}
        self.version_ids = np.arange(100, 106)
        look = np.array([1.0, 0.0, 0.0])
        self.vectors = np.array([look, [0.0, 1.0, 0.0], look, look * 0.999 + [0, 0.04, 0], [0, 0, 1.0], [0, 0, 1.0]],
                                dtype=np.float32)
        self.vectors /= np.linalg.norm(self.vectors, axis=1, keepdims=True)
        self.arrays = {"model_id": np.array([1, 1, 2, 3, 4, 5]), "serving_role": np.array([2, 2, 2, 1, 1, 2]),
                       "kind": np.array([0, 0, 0, 0, 1, 0])}

    def code(self, kind: str, name: str) -> int:
        return self.codes[kind].index(name)


def test_the_list_shows_one_version_per_model_few_enhancers_and_no_look_twice() -> None:
    index = _Index()
    rows, scores = np.arange(6), np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    # row 1 is model 1 again; rows 2 and 5 are enhancers over a cap of 1; row 3 is row 0's look: all wait
    assert select(index, rows, scores, 3, enhancer_cap=1) == [0, 4, 2]
    assert select(index, rows, scores, 6, enhancer_cap=1) == [0, 4, 2, 3, 5]
    assert select(index, rows, scores, 6, enhancer_cap=None, near_duplicate=None) == [0, 2, 3, 4, 5]


@pytest.mark.parametrize(("rule", "mask", "top_3", "all_6"), [
    # row 2 is uninvited: it waits behind every invited row (row 1 is model 1 again throughout)
    ("invited", [True, True, False, True, True, True], [0, 3, 4], [0, 3, 4, 5, 2]),
    # row 4 is named: left out of the top 3 by its score, it takes the last place
    ("named", [False, False, False, False, True, False], [0, 2, 4], [0, 2, 3, 4, 5]),
])
def test_uninvited_candidates_wait_and_named_ones_are_listed(rule, mask, top_3, all_6) -> None:
    index, rows, scores = _Index(), np.arange(6), np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    rules = {rule: np.array(mask), "enhancer_cap": None, "near_duplicate": None}
    assert select(index, rows, scores, 3, **rules) == top_3
    assert select(index, rows, scores, 6, **rules) == all_6


class _Cards:
    """The arrays and details `Invitations` reads: a style, a character and a real person's likeness."""

    def __init__(self) -> None:
        self.codes = {"kind": ["style", "character"]}
        self.arrays = {"kind": np.array([0, 1, 0]), "likeness": np.array([False, False, True])}
        self.details = {"name": ["Watercolor", "Asuka Langley (Evangelion)", "Famous Actress"],
                        "trigger_words": [("watercolor",), ("asuka_langley",), ()]}

    def code(self, kind: str, name: str) -> int:
        return self.codes[kind].index(name)


@pytest.mark.parametrize(("similarity", "votes", "rare", "expected"), [
    ([0.1, 0.1, 0.1], [0.0, 0.0, 0.0], frozenset(), [True, False, False]),  # a style needs no invitation
    ([0.1, 0.1, 0.1], [0.0, 0.0, 0.0], frozenset({"asuka"}), [True, True, False]),  # named by the prompt
    ([0.1, 0.7, 0.1], [0.0, 0.0, 0.0], frozenset(), [True, True, False]),  # the prompt is close to its text
    ([0.1, 0.1, 0.1], [0.0, INVITING_VOTES, INVITING_VOTES / 2], frozenset(), [True, True, False]),  # votes
])
def test_characters_and_likenesses_are_invited_by_name_closeness_or_votes(similarity, votes, rare, expected) -> None:
    invitations = Invitations(_Cards())
    found, _ = invitations.of(np.arange(3), np.array(similarity), np.array(votes), frozenset(), rare)
    assert found.tolist() == expected


@pytest.mark.parametrize(("prompt", "rare", "expected"), [
    ("asuka in a garden", {"asuka", "garden"}, [False, False, False]),  # one word of a three-word name invites it
    ("langley sits beside asuka", {"asuka", "langley"}, [False, False, False]),  # two words of it, apart
    ("asuka langley in a garden", {"asuka", "langley", "garden"}, [False, True, False]),
    ("watercolor of a famous actress", {"watercolor", "actress"}, [False, False, True]),  # a style is never named
])
def test_a_prompt_names_a_character_by_typing_two_neighbouring_words_of_its_name(prompt, rare, expected) -> None:
    pairs = adjacent_pairs([lexeme for lexeme, _ in query_terms(prompt)])
    _, named = Invitations(_Cards()).of(np.arange(3), np.zeros(3), np.zeros(3), pairs, frozenset(rare))
    assert named.tolist() == expected
