"""AUTOMATIC1111 prompt syntax, read in one place: model tags and emphasis.

Prompts on Civitai are written for A1111's web UI. `<lora:name:0.7>` (also `<lyco:...>`, `<hypernet:...>`) selects a
model file by name at a strength; it is not a word. `(word)` weighs x1.1, `[word]` /1.1, `(word:1.3)` x1.3, `\\(`
is a literal bracket and `BREAK` starts a new 75-token chunk. The crawler reads the tags to know which models an
example image used, the describers and the embedding text drop them, search reads the plain words, and the studio
encodes the weights (serving.studio.prompt_syntax).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

# `[^<>]` keeps matching linear on hostile prompts full of unterminated '<lora:'.
MODEL_TAG = re.compile(r"<(lora|lyco|hypernet):([^<>:]*)(?::([^<>]*))?>", re.IGNORECASE)
ANGLE_TAG = re.compile(r"<[^<>]*>")  # any <...>: model tags and what other UIs put in angle brackets
_NUMBER = re.compile(r"\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))", re.ASCII)
_TAG_WITH_SEPARATOR = re.compile(r"\s*,?\s*" + MODEL_TAG.pattern, re.IGNORECASE)


@dataclass(frozen=True)
class ModelTag:
    """One `<kind:name:weight>` tag of a prompt; `weight` is None when the tag has no readable number."""

    kind: str  # 'lora' (also for <lyco:...>: A1111 loads both as networks) or 'hypernet'
    name: str
    weight: float | None


def leading_number(text: str | None) -> float | None:
    """The finite number a weight field starts with ('0.7', '.7', '0.7:0.5' -> 0.7), or None."""
    match = _NUMBER.match(text or "")
    number = float(match.group(1)) if match else math.nan
    return number if math.isfinite(number) else None


def model_tags(prompt: object) -> list[ModelTag]:
    """The model tags of a prompt in order (a non-string prompt has none)."""
    if not isinstance(prompt, str):
        return []
    tags = []
    for match in MODEL_TAG.finditer(prompt):
        kind, name, rest = match.groups()
        kind = "hypernet" if kind.lower() == "hypernet" else "lora"
        tags.append(ModelTag(kind, name.strip(), leading_number(rest)))
    return tags


def strip_model_tags(prompt: str) -> str:
    """The prompt without its model tags and the commas they leave (the text encoder must not read them)."""
    return re.sub(r"\s{2,}", " ", _TAG_WITH_SEPARATOR.sub("", prompt)).strip().strip(",").strip()


ROUND_BRACKET, SQUARE_BRACKET = 1.1, 1 / 1.1
BREAK = "BREAK"

_ATTENTION = re.compile(r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|    # escaped brackets and backslashes: literal text
\(|\[|                          # an opening bracket
:\s*([+-]?[.\d]+)\s*\)|         # an explicit weight that closes a round bracket
\)|]|                           # a closing bracket
[^\\()\[\]:]+|                  # plain text
:                               # a colon that is not a weight
""", re.X)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_attention(text: str) -> list[tuple[str, float]]:
    """(text, weight) runs of a prompt, as A1111 parses them; a BREAK is the run (BREAK, -1). Unbalanced brackets
    weigh to the end of the prompt; neighbouring runs of equal weight are merged."""
    runs: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_from(start: int, factor: float) -> None:
        for run in runs[start:]:
            run[1] *= factor

    for match in _ATTENTION.finditer(text):
        piece, weight = match.group(0), _number(match.group(1))
        if piece.startswith("\\"):
            runs.append([piece[1:], 1.0])
        elif piece == "(":
            round_open.append(len(runs))
        elif piece == "[":
            square_open.append(len(runs))
        elif weight is not None and round_open:
            multiply_from(round_open.pop(), weight)
        elif piece == ")" and round_open:
            multiply_from(round_open.pop(), ROUND_BRACKET)
        elif piece == "]" and square_open:
            multiply_from(square_open.pop(), SQUARE_BRACKET)
        else:
            for i, part in enumerate(_BREAK.split(piece)):
                if i:
                    runs.append([BREAK, -1.0])
                runs.append([part, 1.0])
    for start in round_open:
        multiply_from(start, ROUND_BRACKET)
    for start in square_open:
        multiply_from(start, SQUARE_BRACKET)
    if not runs:
        runs = [["", 1.0]]
    merged = [runs[0]]
    for run in runs[1:]:
        if run[1] == merged[-1][1]:
            merged[-1][0] += run[0]
        else:
            merged.append(run)
    return [(text_, weight) for text_, weight in merged]


def _number(text: str | None) -> float | None:
    """An explicit weight; a malformed one such as `(x:1.2.3)` is read as text (A1111 would fail on it)."""
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def plain_text(prompt: str) -> str:
    """The prompt's words without A1111 syntax (model tags, brackets, weights, BREAK): what a text search reads."""
    return " ".join(piece for piece, weight in parse_attention(ANGLE_TAG.sub(" ", prompt)) if not is_break(piece, weight))


def is_break(piece: str, weight: float) -> bool:
    return piece == BREAK and weight == -1.0


def without_phrases(text: str, phrases: Iterable[str]) -> str:
    """`text` with every whole-word occurrence of the phrases removed (any case): a prompt without the trigger words
    of the adapters it used, as a user who does not know the answer would write it."""
    cleaned = {" ".join(plain_text(phrase).split()) for phrase in phrases}
    patterns = sorted((re.escape(p).replace(r"\ ", r"\s+") for p in cleaned if len(p) >= 2), key=len, reverse=True)
    if patterns:
        text = re.sub(r"(?<!\w)(?:" + "|".join(patterns) + r")(?!\w)", " ", text, flags=re.IGNORECASE)
    return re.sub(r"\s*(?:,\s*)+", ", ", " ".join(text.split())).strip(" ,")
