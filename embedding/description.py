"""The types every describer shares: what goes in (a card), what comes out (a description), and the protocol.

Kept apart from the backends so the pipeline, the cache and the serving side can import them without pulling in
requests, torch or transformers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

KINDS: tuple[str, ...] = (
    "style", "character", "object", "clothing", "concept", "pose", "background", "checkpoint", "other",
)
MAX_TEXT_CHARS = 600


@dataclass(frozen=True)
class AdapterCard:
    """What the catalogue knows about one model version (built by the caller from SQL; SFW examples only)."""

    version_id: int
    model_name: str
    version_name: str
    model_type: str  # 'LORA', 'LoCon', 'DoRA', 'TextualInversion', 'Hypernetwork', 'Checkpoint', ...
    base_model: str | None
    card_text: str  # model card + version notes as plain text; may be long or ''
    tags: tuple[str, ...]
    trained_words: tuple[str, ...]
    example_prompts: tuple[str, ...]  # prompts of SFW example images; may hold <lora:x:0.7> tags
    example_image_urls: tuple[str, ...]  # SFW image URLs (for VLM backends)
    example_weights: tuple[float, ...]  # this adapter's strengths as used in its example images


@dataclass(frozen=True)
class Description:
    """What an adapter does, as stored and embedded; validated so a bad backend cannot store nonsense."""

    text: str  # what it does, visually: 1-4 sentences, at most ~MAX_TEXT_CHARS characters
    kind: str  # one of KINDS
    trigger_words: tuple[str, ...]
    recommended_weight: float
    describer: str  # backend name: 'card-text', 'openai:<model>', 'vlm:<model>'
    prompt_version: str  # part of the cache key (version, describer, prompt_version)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not math.isfinite(self.recommended_weight):
            raise ValueError(f"recommended_weight must be finite, got {self.recommended_weight!r}")
        if not isinstance(self.trigger_words, tuple):
            raise TypeError("trigger_words must be a tuple of strings")


class DescriberError(RuntimeError):
    """The backend cannot work at all (credentials, endpoint, model): not one card's problem, so it is raised."""


@runtime_checkable
class Describer(Protocol):
    """A backend that describes cards in batches: one Description per card, in order, never raising for one card."""

    name: str
    prompt_version: str

    def describe(self, cards: Sequence[AdapterCard]) -> list[Description]: ...
