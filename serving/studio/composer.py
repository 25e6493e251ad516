"""The composer: from retrieved (or reranked) adapters and the prompt, the final adapter set with weights and
trigger words.

It composes search hits (`serving.search.results.Hit`), or anything with the fields it reads (`Composable`).
Rules, in the order they apply (adapters are taken best score first: the reranker's score when there is one):
- every adapter serves prompt keywords: the ones the caller names for it (`keywords`, e.g. the image's style for the
  style LoRA retrieved from an image), else the ones an optional LLM mapper gives it, else the overlap between the
  prompt's words and its name, description and trigger words; an adapter that serves no keyword is not used;
- one adapter per keyword, unless they agree (same kind, both scores at least `agree_score`): an adapter that
  conflicts on a keyword keeps only its other keywords;
- an enhancer (role "enhancer": a detail or quality tweak) serves the whole image, not a keyword: at most
  `max_enhancers` of them;
- at most `max_styles` style adapters, at most `max_adapters` in all;
- no character adapter unless the prompt names that character: its name or a trigger word appears in the prompt,
  or it serves a capitalised proper noun of the prompt ("Hatsune Miku", "portrait of Ada");
- weight = recommended weight / sqrt(k), k the most adapters sharing one of its keywords, so stacked adapters do
  not overdrive the image; trigger words are appended once.
A stored kind the composer has no rule for ('other', 'checkpoint') composes as 'concept'.
The result also comes as an A1111 prompt (`prompt, trigger <lora:name:0.6>`) to paste elsewhere. Deterministic.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Protocol

from embedding.description import KINDS as DESCRIBED_KINDS

log = logging.getLogger(__name__)

KINDS = ("style", "character", "object", "clothing", "concept", "pose", "background")
DEFAULT_WEIGHT = 0.8
MIN_WEIGHT, MAX_WEIGHT = 0.05, 2.0
MAX_PROMPT_CHARS = 4000
MAX_TRIGGERS_PER_ADAPTER = 3
MAX_TRIGGER_CHARS = 60
_TEXT_CHARS = 2000  # of an adapter's name/description read for keyword overlap

_WORD = re.compile(r"[^\W_]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SEGMENT = re.compile(r"[,.;:!?\n|()\[\]{}]+")
_STOPWORDS = frozenset("""
a an the of in on at with and or for to by from into onto over under near behind is are be been being this that these
those it its as his her their our your my very some any no not but so than then there here wearing holding
style lora model image picture art artwork masterpiece best quality high highly detailed detail details ultra hd hdr
4k 8k uhd score absurdres resolution
""".split())


class Composable(Protocol):
    """What the composer reads of an adapter (a search `Hit` fits): `recommended_weight` is the card's (None: the
    default), `score` the retrieval score and `rerank_score` the reranker's (None when not reranked)."""

    @property
    def version_id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def trigger_words(self) -> Sequence[str]: ...

    @property
    def recommended_weight(self) -> float | None: ...

    @property
    def score(self) -> float: ...

    @property
    def rerank_score(self) -> float | None: ...

    @property
    def description(self) -> str: ...

    @property
    def file_name(self) -> str | None: ...  # A1111 finds a LoRA by its file stem

    @property
    def role(self) -> str: ...  # "enhancer": a detail or quality tweak, composed without a keyword of its own


KeywordMapper = Callable[[str, Sequence[str], Sequence[Composable]], Mapping[int, Sequence[str]]]


@dataclass(frozen=True)
class Chosen:
    """An adapter in the final set, the prompt keywords it serves, the weight it gets and the kind it was composed
    as."""

    adapter: Composable
    weight: float
    keywords: tuple[str, ...]
    kind: str

    @property
    def lora_name(self) -> str:
        return lora_name(self.adapter)


@dataclass(frozen=True)
class Composition:
    """The final adapter set, the prompt with trigger words, and the same as an A1111 prompt."""

    adapters: list[Chosen] = field(default_factory=list)
    prompt: str = ""
    a1111: str = ""


ENHANCER_KEYWORD = "whole image"  # what an enhancer serves


def composed_kind(kind: str) -> str:
    """The kind an adapter composes as: its own when the composer has rules for it, else 'concept'."""
    return kind if kind in KINDS else "concept"


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(adapter: Composable) -> None:
    """Refuse what the composer cannot read: wrong types, or a kind that no describer stores."""
    if not isinstance(getattr(adapter, "version_id", None), int) or isinstance(adapter.version_id, bool):
        raise TypeError(f"an adapter needs an int version_id, got {type(adapter).__name__}")
    for name in ("name", "kind", "description"):
        if not isinstance(getattr(adapter, name, None), str):
            raise TypeError(f"adapter {adapter.version_id}: {name} must be a str")
    if not isinstance(adapter.file_name, (str, type(None))):
        raise TypeError(f"adapter {adapter.version_id}: file_name must be a str or None")
    if adapter.kind not in DESCRIBED_KINDS:
        raise ValueError(f"adapter {adapter.version_id}: kind must be one of {', '.join(DESCRIBED_KINDS)}, got "
                         f"{adapter.kind!r}")
    triggers = adapter.trigger_words
    if isinstance(triggers, str) or not all(isinstance(item, str) for item in triggers):
        raise TypeError(f"adapter {adapter.version_id}: trigger_words must be a sequence of str")
    optional = (adapter.recommended_weight, adapter.rerank_score)
    if not _number(adapter.score) or not all(value is None or _number(value) for value in optional):
        raise TypeError(f"adapter {adapter.version_id}: score, recommended_weight and rerank_score must be numbers")


def _score(adapter: Composable) -> float:
    """The reranker's score when it has one, else the retrieval score."""
    return adapter.score if adapter.rerank_score is None else adapter.rerank_score


def _rank_score(adapter: Composable) -> float:
    """The score adapters are taken in: non-finite ones last."""
    score = _score(adapter)
    return score if math.isfinite(score) else -math.inf


def _clean(text: str, limit: int) -> str:
    return re.sub(r"\s+", " ", _CONTROL.sub(" ", text[:limit])).strip()


def _stem(word: str) -> str:
    """Lower case and a crude singular, so 'Cats' meets 'cat' and 'cities' meets 'city'."""
    word = word.lower()
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "is", "us")):
        return word[:-1]
    return word


def _words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text) if len(w) > 1 and _stem(w) not in _STOPWORDS}


def _normalise_keyword(keyword: str) -> str:
    return " ".join(_stem(w) for w in _WORD.findall(keyword))


def prompt_keywords(prompt: str) -> list[str]:
    """The prompt's content words, stemmed, in order of first appearance (stop words and quality tags dropped)."""
    seen: list[str] = []
    for word in _WORD.findall(_clean(prompt, MAX_PROMPT_CHARS)):
        stem = _stem(word)
        if len(word) > 1 and stem not in _STOPWORDS and stem not in seen:
            seen.append(stem)
    return seen


def proper_nouns(prompt: str) -> set[str]:
    """Stems of capitalised words that look like names: not the first word of a comma/sentence segment (where
    SD prompts capitalise anything), or next to another capitalised word ('Hatsune Miku'). Acronyms excluded."""
    found: set[str] = set()
    for segment in _SEGMENT.split(_clean(prompt, MAX_PROMPT_CHARS)):
        words = _WORD.findall(segment)
        capital = [w[:1].isupper() and not (w.isupper() and len(w) <= 4) and _stem(w) not in _STOPWORDS
                   for w in words]
        for i, word in enumerate(words):
            neighbour = (i > 0 and capital[i - 1]) or (i + 1 < len(words) and capital[i + 1])
            if capital[i] and (i > 0 or neighbour):
                found.add(_stem(word))
    return found


def _contains_phrase(prompt_lower: str, phrase: str) -> bool:
    phrase = _clean(phrase, MAX_TRIGGER_CHARS).lower()
    return bool(phrase) and re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", prompt_lower) is not None


def _overlap_keywords(adapter: Composable, keywords: Sequence[str]) -> tuple[str, ...]:
    text = " ".join([adapter.name[:_TEXT_CHARS], adapter.description[:_TEXT_CHARS],
                     *(t[:MAX_TRIGGER_CHARS] for t in adapter.trigger_words[:MAX_TRIGGERS_PER_ADAPTER * 4])])
    words = _words(text)
    return tuple(k for k in keywords if k in words)


def _mapped_keywords(prompt: str, keywords: list[str], adapters: Sequence[Composable],
                     mapper: KeywordMapper | None, given: Mapping[int, Sequence[str]]) -> dict[int, tuple[str, ...]]:
    """version id -> the prompt keywords the adapter serves: those `given` for it, else an LLM mapper's (kept only
    where well formed: known version ids, keywords of this prompt), else word overlap (also when the mapper
    fails)."""
    mapped: dict[int, tuple[str, ...]] = {}
    if mapper is not None:
        try:
            answer = mapper(prompt, list(keywords), list(adapters))
            known = set(keywords)
            for version_id, served in dict(answer).items():
                if type(version_id) is int and not isinstance(served, str) and isinstance(served, Sequence):
                    mapped[version_id] = tuple(dict.fromkeys(
                        _normalise_keyword(k) for k in served if isinstance(k, str) and _normalise_keyword(k) in known))
        except Exception:  # an LLM mapper is a convenience: the rules below do not need it
            log.warning("keyword mapper failed; using keyword overlap", exc_info=True)
            mapped = {}
    result = {}
    for adapter in adapters:
        own = tuple(dict.fromkeys(k for k in map(_normalise_keyword, given.get(adapter.version_id, ())) if k))
        result[adapter.version_id] = own or mapped.get(adapter.version_id) or _overlap_keywords(adapter, keywords)
    return result


def _weight(adapter: Composable) -> float:
    """The recommended weight, kept within [MIN_WEIGHT, MAX_WEIGHT] (the default when it is missing or not usable)."""
    value = DEFAULT_WEIGHT if adapter.recommended_weight is None else float(adapter.recommended_weight)
    return min(MAX_WEIGHT, max(MIN_WEIGHT, value)) if math.isfinite(value) and value > 0 else DEFAULT_WEIGHT


def _agree(a: Composable, b: Composable, threshold: float) -> bool:
    return composed_kind(a.kind) == composed_kind(b.kind) and _score(a) >= threshold and _score(b) >= threshold


def _names_character(adapter: Composable, prompt_lower: str, nouns: set[str], served: Sequence[str]) -> bool:
    named = [adapter.name, *adapter.trigger_words[:MAX_TRIGGERS_PER_ADAPTER * 4]]
    return any(_contains_phrase(prompt_lower, text) for text in named) or any(k in nouns for k in served)


def lora_name(adapter: Composable) -> str:
    """The name inside `<lora:NAME:w>`: the file's stem, as A1111 looks LoRAs up by file name, else the adapter's
    name made filename-safe; never empty and never holding the tag's own ':', '<' or '>'."""
    stem = re.sub(r"[:<>\s]+", " ", PurePath((adapter.file_name or "").replace("\\", "/")).stem).strip()
    if stem:
        return stem[:MAX_TRIGGER_CHARS * 2]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", adapter.name[:MAX_TRIGGER_CHARS * 2]).strip("_.-")
    return name or f"lora_{adapter.version_id}"


def lora_tag(adapter: Composable, weight: float | None = None) -> str:
    """`<lora:NAME:w>` as A1111 reads it: the adapter's file stem at `weight` (its recommended weight, kept in
    [MIN_WEIGHT, MAX_WEIGHT], when none is given): the tag a user pastes into a prompt."""
    return f"<lora:{lora_name(adapter)}:{_format_weight(_weight(adapter) if weight is None else weight)}>"


def _trigger(word: str) -> str:
    return _clean(word, MAX_TRIGGER_CHARS).replace("<", "").replace(">", "").strip(" ,")


def _a1111_escape(word: str) -> str:
    """A trigger as A1111 prompt syntax reads it literally: its brackets escaped, not taken as emphasis."""
    return re.sub(r"([()\[\]])", r"\\\1", word)


def _format_weight(weight: float) -> str:
    return f"{weight:.2f}".rstrip("0").rstrip(".")


def compose(prompt: str, adapters: Sequence[Composable], *, keywords: Mapping[int, Sequence[str]] | None = None,
            max_styles: int = 2, max_adapters: int = 6, max_enhancers: int = 1, agree_score: float = 0.0,
            mapper: KeywordMapper | None = None) -> Composition:
    """The final adapters (best score first), the prompt with their trigger words, and its A1111 form. `keywords`
    names the prompt keywords some adapters serve (version id -> keywords), over the mapper and word overlap."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    for option, value in (("max_styles", max_styles), ("max_adapters", max_adapters),
                          ("max_enhancers", max_enhancers)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{option} must be an integer >= 0, got {value!r}")
    for adapter in adapters:
        _check(adapter)
    text = _clean(prompt, MAX_PROMPT_CHARS)
    lower, nouns = text.lower(), proper_nouns(text)
    served_by = _mapped_keywords(text, prompt_keywords(text), adapters, mapper, keywords or {})
    ranked = sorted({a.version_id: a for a in adapters}.values(), key=lambda a: (-_rank_score(a), a.version_id))
    owners: dict[str, list[Composable]] = {}
    chosen: list[tuple[Composable, tuple[str, ...]]] = []
    for adapter in ranked:
        if len(chosen) >= max_adapters:
            break
        kind = composed_kind(adapter.kind)
        if adapter.role == "enhancer":  # serves the whole image, not a keyword; a couple at most
            if sum(a.role == "enhancer" for a, _ in chosen) < max_enhancers:
                chosen.append((adapter, (ENHANCER_KEYWORD,)))
                owners.setdefault(ENHANCER_KEYWORD, []).append(adapter)
            continue
        if kind == "style" and sum(composed_kind(a.kind) == "style" for a, _ in chosen) >= max_styles:
            continue
        served = tuple(k for k in served_by[adapter.version_id]
                       if all(_agree(adapter, other, agree_score) for other in owners.get(k, [])))
        if not served or (kind == "character" and not _names_character(adapter, lower, nouns, served)):
            continue
        for keyword in served:
            owners.setdefault(keyword, []).append(adapter)
        chosen.append((adapter, served))
    return render(text, [Chosen(adapter, round(_weight(adapter) / math.sqrt(max(len(owners[k]) for k in served)), 2),
                                served, composed_kind(adapter.kind)) for adapter, served in chosen])


def render(prompt: str, chosen: Sequence[Chosen]) -> Composition:
    """The composition of an adapter set already chosen: the prompt with each adapter's first trigger words appended
    once (those the prompt does not already hold), and the A1111 form with `<lora:NAME:w>` tags."""
    text = _clean(prompt, MAX_PROMPT_CHARS)
    lower = text.lower()
    triggers: list[str] = []
    for item in chosen:
        for word in map(_trigger, item.adapter.trigger_words[:MAX_TRIGGERS_PER_ADAPTER]):
            if word and word.lower() not in (t.lower() for t in triggers) and not _contains_phrase(lower, word):
                triggers.append(word)
    final = ", ".join(part for part in [text, *triggers] if part)
    a1111 = ", ".join(part for part in [text, *map(_a1111_escape, triggers)] if part)
    tags = " ".join(lora_tag(c.adapter, c.weight) for c in chosen)
    return Composition(adapters=list(chosen), prompt=final, a1111=" ".join(part for part in (a1111, tags) if part))
