"""What each served version is for, from how people used it: the role search answers it in.

- `checkpoint`: a checkpoint.
- `negative`: a textual inversion people put in the NEGATIVE prompt (EasyNegative, bad-hands embeddings): where the
  example images that used it name it, and, for one with no such evidence, its card. It goes to the negative
  prompt, never into an adapter slot.
- `enhancer`: a LoRA-family adapter used across many unrelated prompts and checkpoints (detail tweakers, noise
  offsets, contrast fixes): the prompts of the images that used it, outside its own gallery, share no more words
  than random prompts do (the coherence ratio below), it was used in several galleries, and its card does not call
  it a character, an object or clothing.
- `content`: everything else (styles, characters, objects, concepts...): what answers a prompt.

Measured on the 2023 dump (prompts of SFW images using a LoRA outside its gallery): detail tweakers and noise offsets
have coherence ratios 1.2-2.2 against random pairs of prompts, most character, object and style LoRAs 2.5-20
(a style used as a general look, such as "KIDS ILLUSTRATION" at 2.48, stays content).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from crawlers.a1111 import plain_text

LORA_FAMILY = frozenset({"LORA", "LoCon", "DoRA", "LyCORIS"})
# Negative: at least this many images name it in the negative prompt, and this many times more than in the prompt.
NEGATIVE_MIN_USES, NEGATIVE_RATIO = 2, 3
_NEGATIVE_CARD = re.compile(r"\bnegative\b", re.IGNORECASE)
# Enhancer: enough usage to judge, spread over galleries, prompts no more alike than random ones.
ENHANCER_MIN_PROMPTS, ENHANCER_MIN_GALLERIES, ENHANCER_MAX_COHERENCE = 12, 5, 2.3
CONTENT_KINDS = frozenset({"character", "object", "clothing"})  # what a card says is never an enhancer
_SAMPLE_PROMPTS, _SAMPLE_PAIRS, _BASELINE_PAIRS = 100, 1000, 5000
_COMMON_SHARE = 0.3  # words in more than this share of all prompts ("masterpiece", "1girl") say nothing
_WORD = re.compile(r"[^\W_]{2,}")


@dataclass(frozen=True)
class Role:
    role: str
    reason: str


@dataclass(frozen=True)
class Usage:
    """What example images say about one version: the distinct prompts of SFW images that used it outside its own
    gallery, the galleries they came from, and (textual inversions) in how many images its name stood in the
    negative and the positive prompt."""

    prompts: tuple[str, ...] = ()
    galleries: int = 0
    in_negative: int = 0
    in_positive: int = 0


@dataclass(frozen=True)
class Card:
    model_type: str
    name: str
    tags: tuple[str, ...]
    kind: str | None  # the describer's kind


def decide_roles(cards: Mapping[int, Card], usage: Mapping[int, Usage]) -> dict[int, Role]:
    """version_id -> role, for every card."""
    coherence = PromptCoherence(prompt for found in usage.values() for prompt in found.prompts)
    return {version: _role(card, usage.get(version, Usage()), coherence) for version, card in cards.items()}


def _role(card: Card, usage: Usage, coherence: PromptCoherence) -> Role:
    if card.model_type == "Checkpoint":
        return Role("checkpoint", "a checkpoint")
    if card.model_type == "TextualInversion":
        return _embedding_role(card, usage)
    if card.model_type in LORA_FAMILY and card.kind not in CONTENT_KINDS:
        if len(usage.prompts) >= ENHANCER_MIN_PROMPTS and usage.galleries >= ENHANCER_MIN_GALLERIES:
            ratio = coherence.ratio(usage.prompts)
            if ratio < ENHANCER_MAX_COHERENCE:
                return Role("enhancer", f"used in {len(usage.prompts)} prompts across {usage.galleries} galleries "
                                        f"that share words like random prompts do (coherence {ratio:.2f})")
    return Role("content", f"a {card.kind or 'content'} adapter")


def _embedding_role(card: Card, usage: Usage) -> Role:
    named = usage.in_negative + usage.in_positive
    if usage.in_negative >= NEGATIVE_MIN_USES and usage.in_negative >= NEGATIVE_RATIO * usage.in_positive:
        return Role("negative", f"named in the negative prompt of {usage.in_negative} images, the prompt of "
                                f"{usage.in_positive}")
    if named < NEGATIVE_MIN_USES and (_NEGATIVE_CARD.search(card.name) or
                                      any(_NEGATIVE_CARD.search(tag) for tag in card.tags)):
        return Role("negative", "its card calls it a negative embedding (no usage evidence)")
    return Role("content", f"an embedding used in prompts ({usage.in_positive} images)")


class PromptCoherence:
    """How alike a set of prompts is: their mean pairwise word-set Jaccard (words common to most prompts left out)
    divided by that of random pairs of all prompts. Deterministic (fixed seeds)."""

    def __init__(self, prompts: Iterable[str]) -> None:
        self._words: dict[str, frozenset[str]] = {}
        for prompt in prompts:
            if prompt not in self._words:
                self._words[prompt] = frozenset(_WORD.findall(plain_text(prompt).lower()))
        frequency = Counter(word for words in self._words.values() for word in words)
        common = {word for word, n in frequency.items() if n > _COMMON_SHARE * max(1, len(self._words))}
        self._words = {prompt: words - common for prompt, words in self._words.items()}
        everything = sorted(self._words)
        rng = random.Random(0)
        pairs = [(rng.choice(everything), rng.choice(everything)) for _ in range(_BASELINE_PAIRS)] if everything else []
        self.baseline = max(_mean_jaccard(self._words, pairs), 1e-6)

    def ratio(self, prompts: Sequence[str]) -> float:
        chosen = sorted(set(prompts), key=_stable_hash)[:_SAMPLE_PROMPTS]  # a spread sample, not one prefix's
        pairs = list(itertools.combinations(chosen, 2))
        random.Random(len(chosen)).shuffle(pairs)
        return _mean_jaccard(self._words, pairs[:_SAMPLE_PAIRS]) / self.baseline


def _stable_hash(text_: str) -> str:
    return hashlib.blake2b(text_.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _mean_jaccard(words: Mapping[str, frozenset[str]], pairs: Sequence[tuple[str, str]]) -> float:
    if not pairs:
        return 0.0
    total = 0.0
    for a, b in pairs:
        union = len(words[a] | words[b])
        total += len(words[a] & words[b]) / union if union else 0.0
    return total / len(pairs)
