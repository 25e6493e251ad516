"""The describers ("the refiner"): the public surface the pipeline uses, and the factory that picks a backend.

Backends: 'card-text' (deterministic rules, no model: the lite default and everyone's fallback), 'openai' (any
OpenAI-compatible chat endpoint) and 'vlm' (a local transformers vision-language model). Descriptions are cached
by (version, describer name, prompt version); a card a model backend failed on carries the card-text describer's
name and prompt version, so a cache keyed on the model backend describes it again on the next refresh.
"""

from __future__ import annotations

from typing import Any

from embedding.describe_card import CardTextDescriber
from embedding.describe_openai import OpenAICompatibleDescriber
from embedding.describe_vlm import TransformersVLMDescriber
from embedding.description import KINDS, AdapterCard, Describer, DescriberError, Description

__all__ = [
    "KINDS", "AdapterCard", "CardTextDescriber", "Describer", "DescriberError", "Description",
    "OpenAICompatibleDescriber", "TransformersVLMDescriber", "make_describer",
]

_BACKENDS: dict[str, type] = {
    "card-text": CardTextDescriber,
    "openai": OpenAICompatibleDescriber,
    "vlm": TransformersVLMDescriber,
}


def make_describer(kind: str, **options: Any) -> Describer:
    """A describer by backend name ('card-text' | 'openai' | 'vlm') with that backend's options."""
    backend = _BACKENDS.get(kind)
    if backend is None:
        raise ValueError(f"unknown describer {kind!r}; expected one of {', '.join(_BACKENDS)}")
    try:
        return backend(**options)
    except TypeError as error:  # an option the backend does not take, or a required one missing
        raise ValueError(f"bad options for the {kind!r} describer: {error}") from error
