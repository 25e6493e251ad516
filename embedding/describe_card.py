"""The card-text describer: deterministic rules over the model card, tags, trained words and example prompts.

It needs no model, so it is the lite default and the fallback of every model backend: whatever happens to a VLM or
an endpoint, each card still gets a description. The rules are written against community cards as they are: long,
empty, full of links, marketing, settings tables, emoji, control characters and the odd prompt-injection attempt.
Every regular expression is bounded (no nested quantifiers), and inputs are cut before parsing, so a hostile card
costs linear time.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

from crawlers.a1111 import ANGLE_TAG, MODEL_TAG
from crawlers.taxonomy import role_of_type
from embedding.description import MAX_TEXT_CHARS, AdapterCard, Description

log = logging.getLogger(__name__)

CARD_TEXT_NAME = "card-text"
CARD_TEXT_PROMPT_VERSION = "card-2"  # bump when a rule below changes what is written

# Input bounds: what a card can cost, whatever its size.
_MAX_CARD_CHARS = 20_000
_MAX_PROMPTS = 64
_MAX_PROMPT_CHARS = 4_000
_MAX_TRAINED_WORDS = 200
_MAX_TRAINED_WORD_CHARS = 2_000
# Output bounds.
_CARD_PART_CHARS = 420
_CARD_SENTENCES = 3
_SENTENCE_CHARS = 300
_MAX_PHRASES = 8
_MAX_PHRASE_CHARS = 60
_MAX_PHRASE_WORDS = 8
MAX_TRIGGER_CHARS = 64
_MAX_TRIGGER_WORDS = 8
MAX_TRIGGERS = 32
WEIGHT_LIMIT = 2.0

# Invisible and unsafe characters: C0/C1 controls (not \t \n), zero-width and bidi controls, BOM, lone surrogates
# (which cannot even be encoded to UTF-8 for an HTTP request).
_INVISIBLE = re.compile(
    r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\ud800-\udfff]"
)
_ANSI = re.compile(r"\x1b\[[0-9;?]{0,32}[ -/]{0,4}[@-~]")  # terminal colour codes pasted from a console
_EMOJI = re.compile(r"[\u2190-\u21ff\u2300-\u23ff\u2460-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff\ufe0f]")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
CHAT_TOKEN = re.compile(r"<\|[^<>|]{0,40}\|>")  # chat-template control tokens: <|im_end|>, <|image_pad|>, ...
_SPACES = re.compile(r"[ \t\r\f\v\u00a0\u3000]+")
_SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])\s+")
_LETTER = re.compile(r"[^\W\d_]")

# Sentences that say nothing about what the adapter looks like.
_NOISE = re.compile(
    r"\b(?:please|pls|plz)\b.{0,40}\b(?:like|review|rate|follow|support|share|subscribe|comment|heart|donate|buzz)"
    r"|\b(?:like|rate)\s+(?:and|&)\s+(?:review|rate|share|comment|follow)"
    r"|\b(?:leave|post|give)\s+(?:me\s+)?(?:a\s+)?(?:review|like|rating|heart|thumbs)"
    r"|\bbuy\s+me\s+a\s+coffee|\bko-?fi\b|\bpatreon\b|\bdiscord\b|\bsubscribe\b|\bdonat(?:e|ions?)\b"
    r"|\bcommissions?\b|\bbuzz\b|\bfollow\s+me\b|\bcheck\s+out\s+my\b|\bmy\s+other\s+(?:models?|loras?|works?)\b"
    r"|\bif\s+you\s+(?:like|enjoy|want)\b|\bthanks?\s+(?:you\s+)?(?:for|to)\b|\bdon'?t\s+forget\b"
    r"|\bsupport\s+(?:me|my)\b|\btwitter\b|\binstagram\b|\benjoy\b",
    re.IGNORECASE,
)
# Text addressed to a language model rather than to a reader: never repeated into a description.
_INJECTION = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b.{0,40}\b(?:instructions?|prompts?|rules|above|previous)\b"
    r"|\bsystem\s+prompt\b|\byou\s+are\s+now\b|\bfrom\s+now\s+on\b|\bnew\s+instructions\b|\bpretend\s+to\b"
    r"|\byou\s+are\s+(?:an?\s+)?(?:ai|assistant|language\s+model|chatgpt|gpt|llm)\b"
    r"|\b(?:assistant|system)\s*:|\bjson\b",
    re.IGNORECASE,
)
# Settings, changelogs and licences: useful to a user, not to a search index.
_SETTINGS = re.compile(
    r"^\W*(?:trigger|trained|training|activation|keywords?|recommended|weights?|strength|sampler|steps|cfg"
    r"|clip\s*skip|hires|upscal|denois|negative|resolution|seed|vae|changelog|update[sd]?|version|v\d|dataset"
    r"|epochs?|usage|how\s+to\s+use|settings|licen[cs]e|credits?|tested|works\s+(?:best|well)|use\s+(?:it|with|at))\b",
    re.IGNORECASE,
)

# Generic quality and rating tokens that every prompt carries and that say nothing about an adapter.
_QUALITY = frozenset({
    "masterpiece", "best quality", "high quality", "highest quality", "top quality", "amazing quality",
    "great quality", "good quality", "normal quality", "ultra quality", "quality", "very aesthetic", "aesthetic",
    "best aesthetic", "absurdres", "absurd res", "incredibly absurdres", "highres", "hires", "high res",
    "high resolution", "ultra high res", "ultra-detailed", "ultra detailed", "extremely detailed", "very detailed",
    "highly detailed", "hyperdetailed", "hyper detailed", "insanely detailed", "intricate details",
    "intricate detail", "intricate", "detailed", "uhd", "hd", "hdr", "raw photo", "sharp focus", "official art",
    "award winning", "award-winning", "trending on artstation", "extremely detailed cg unity 8k wallpaper",
    "unity 8k wallpaper", "8k wallpaper", "wallpaper", "newest", "perfect", "beautiful", "best", "high detail",
    "ultra high quality", "professional", "film grain",
})
_QUALITY_PATTERN = re.compile(r"^(?:\d+k(?:\s+\w+)?|score_\d\w*|source_\w+|rating_\w+|\d+)$")
_WEIGHT = re.compile(r":\s*-?\d+(?:\.\d+)?")
_BRACKETS = re.compile(r"[()\[\]{}\\]")
_PHRASE_SPLIT = re.compile(r"[,\n|;]|\bBREAK\b")
_TRIGGER_SPLIT = re.compile(r"[,\n;|]")
_TRIGGER_STRIP = " \t\"'`.:;!?*"
_BRACKET_PAIRS = {"(": ")", "[": "]", "{": "}"}
_CLOSING = {close: open_ for open_, close in _BRACKET_PAIRS.items()}
_ESCAPED_BRACKET = re.compile(r"\\([()\[\]{}])")

# Civitai category tags (and common community tags) and the kind each one means.
_TAG_KINDS: dict[str, str] = {
    **dict.fromkeys(("style", "styles", "art style", "artstyle", "artist", "artist style", "painting style",
                     "illustration style", "photography style", "aesthetic", "art"), "style"),
    **dict.fromkeys(("character", "characters", "anime character", "game character", "video game character",
                     "cartoon character", "movie character", "celebrity", "real person", "person", "waifu",
                     "original character", "oc", "vtuber"), "character"),
    **dict.fromkeys(("clothing", "clothes", "outfit", "outfits", "costume", "costumes", "fashion", "dress",
                     "uniform", "armor", "armour", "swimsuit", "accessories", "accessory", "hat", "shoes"),
                    "clothing"),
    **dict.fromkeys(("object", "objects", "item", "items", "vehicle", "vehicles", "car", "cars", "weapon",
                     "weapons", "food", "props", "prop", "assets", "animal", "animals", "furniture"), "object"),
    **dict.fromkeys(("pose", "poses", "posing", "action", "gesture"), "pose"),
    **dict.fromkeys(("background", "backgrounds", "scenery", "landscape", "buildings", "building", "architecture",
                     "environment", "interior", "location", "city", "cityscape"), "background"),
    # Civitai's 'tool' category holds utility adapters (detail sliders, fixers), not depicted tools.
    **dict.fromkeys(("concept", "concepts", "tool", "tools", "slider", "effect", "effects", "lighting",
                     "utility", "enhancer", "negative", "negative embedding"), "concept"),
}
_NAME_KINDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind) for pattern, kind in (
        (r"\b(?:art\s*)?styles?\b|\bartist\b|\baesthetic\b", "style"),
        (r"\bcharacters?\b|\bwaifu\b|\bvtuber\b", "character"),
        (r"\b(?:outfits?|clothes|clothing|costumes?|dress(?:es)?|uniforms?|armou?r|swimsuits?|kimono|hoodie"
         r"|jacket|bikini)\b", "clothing"),
        (r"\bposes?\b|\bposing\b", "pose"),
        (r"\b(?:backgrounds?|scenery|landscapes?|environments?|interiors?|architecture|buildings?|cityscape)\b",
         "background"),
        (r"\b(?:concept|slider|detail(?:er)?|tweaker|enhancer|lighting|effect|negative)\b", "concept"),
        (r"\b(?:vehicles?|cars?|objects?|weapons?|items?|props?)\b", "object"),
    )
)
_CARD_KIND = re.compile(
    r"\b(style|character|outfit|clothing|costume|concept|pose|background|scenery|object|vehicle)\s+"
    r"(?:lora|lycoris|locon|dora|lyco|model|embedding|adapter|hypernetwork)\b",
    re.IGNORECASE,
)
_CARD_WORD_KINDS = {"outfit": "clothing", "costume": "clothing", "scenery": "background", "vehicle": "object"}
# When evidence ties, the more specific kind wins.
_KIND_PRIORITY = ("character", "clothing", "pose", "background", "object", "style", "concept")
_TYPE_KINDS = {"Checkpoint": "checkpoint", "Poses": "pose"}


def strip_invisible(text: str) -> str:
    """Text without terminal escapes, control, zero-width, bidi and surrogate characters, NFKC-normalised
    (full-width -> ASCII)."""
    return unicodedata.normalize("NFKC", _INVISIBLE.sub("", _ANSI.sub("", text)))


def clean_text(text: object, limit: int = _MAX_CARD_CHARS) -> str:
    """One line of readable text: invisible characters, URLs, prompt tags, chat-template tokens, emoji and repeated
    whitespace removed."""
    if not isinstance(text, str):
        return ""
    text = strip_invisible(text[:limit])
    text = _EMOJI.sub("", CHAT_TOKEN.sub(" ", MODEL_TAG.sub(" ", _URL.sub(" ", text))))
    return _SPACES.sub(" ", text.replace("\n", " ")).strip()


def cap_text(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at a word boundary, marked with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "\u2026"


def card_sentences(card_text: object) -> list[str]:
    """The first informative sentences of a card: no marketing, settings, links or text aimed at a model."""
    if not isinstance(card_text, str):
        return []
    sentences: list[str] = []
    used = 0
    for line in strip_invisible(card_text[:_MAX_CARD_CHARS]).splitlines():
        for raw in _SENTENCE_END.split(line):
            sentence = clean_text(raw)
            if not _informative(sentence):
                continue
            sentence = cap_text(sentence, _SENTENCE_CHARS)
            if sentences and used + len(sentence) + 1 > _CARD_PART_CHARS:
                return sentences
            if sentence[-1] not in ".!?\u2026":
                sentence += "."
            sentences.append(sentence)
            used += len(sentence) + 1
            if len(sentences) == _CARD_SENTENCES:
                return sentences
    return sentences


def _informative(sentence: str) -> bool:
    if len(sentence.split()) < 3 or len(_LETTER.findall(sentence)) < 12:
        return False
    return not (_NOISE.search(sentence) or _INJECTION.search(sentence) or _SETTINGS.search(sentence))


def _phrase(raw: str) -> str:
    phrase = _BRACKETS.sub(" ", _WEIGHT.sub("", raw)).replace("_", " ")
    return _SPACES.sub(" ", phrase).strip(" .:-'\"").lower()


def prompt_phrases(prompts: Sequence[object], exclude: Iterable[str] = ()) -> list[str]:
    """The phrases the example prompts share most often, without tags, weights, quality tokens or `exclude`.

    Counted once per prompt; with three or more prompts a phrase must recur to count, ties keep first appearance.
    """
    excluded = {word.lower() for word in exclude}
    counts: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    usable = [p for p in prompts[:_MAX_PROMPTS] if isinstance(p, str)]
    for prompt in usable:
        text = ANGLE_TAG.sub(" ", strip_invisible(prompt[:_MAX_PROMPT_CHARS]))
        seen: set[str] = set()
        for raw in _PHRASE_SPLIT.split(text):
            phrase = _phrase(raw)
            if (not phrase or phrase in seen or phrase in excluded or phrase in _QUALITY
                    or _QUALITY_PATTERN.match(phrase) or not _LETTER.search(phrase)
                    or len(phrase) > _MAX_PHRASE_CHARS or len(phrase.split()) > _MAX_PHRASE_WORDS
                    or _URL.search(phrase) or _INJECTION.search(phrase)):
                continue
            seen.add(phrase)
            counts[phrase] += 1
            first_seen.setdefault(phrase, len(first_seen))
    min_count = 2 if len(usable) >= 3 else 1
    ranked = sorted((p for p, n in counts.items() if n >= min_count), key=lambda p: (-counts[p], first_seen[p]))
    return ranked[:_MAX_PHRASES]


def kind_from_label(label: object) -> str | None:
    """The kind a tag or a model's answer names ('art style' -> 'style', 'outfit' -> 'clothing'), else None."""
    if not isinstance(label, str):
        return None
    key = _SPACES.sub(" ", strip_invisible(label[:100]).replace("_", " ")).strip().lower()
    if key in ("checkpoint", "other"):
        return key
    return _TAG_KINDS.get(key)


def detect_kind(card: AdapterCard) -> str:
    """The kind of adapter from its type, Civitai tags, name and card wording; 'other' when nothing says."""
    by_type = _TYPE_KINDS.get(card.model_type)
    if by_type:
        return by_type
    scores: Counter[str] = Counter()
    for kind in {kind_from_label(tag) for tag in card.tags[:100]} - {None, "checkpoint", "other"}:
        scores[kind] += 2
    name = clean_text(card.model_name, 300)
    for pattern, kind in _NAME_KINDS:
        if pattern.search(name):
            scores[kind] += 3
    if isinstance(card.card_text, str):
        for match in _CARD_KIND.finditer(card.card_text[:3_000]):
            word = match.group(1).lower()
            scores[_CARD_WORD_KINDS.get(word, word)] += 1
    if not scores:
        return "other"
    return max(_KIND_PRIORITY, key=lambda kind: (scores[kind], -_KIND_PRIORITY.index(kind)))


def unescape_brackets(text: str) -> str:
    """A1111 prompt syntax escapes literal brackets (`alice \\(nikke\\)`); the unescaped form is the name."""
    return _ESCAPED_BRACKET.sub(r"\1", text)


def _unbalanced_brackets(piece: str) -> set[int]:
    """Positions of brackets without a partner: emphasis syntax cut apart by a comma split ('((sexy')."""
    stack: list[int] = []
    unmatched: set[int] = set()
    for position, char in enumerate(piece):
        if char in _BRACKET_PAIRS:
            stack.append(position)
        elif char in _CLOSING:
            if stack and piece[stack[-1]] == _CLOSING[char]:
                stack.pop()
            else:
                unmatched.add(position)
    return unmatched | set(stack)


def _wraps_whole(piece: str) -> bool:
    """Whether the first character is an opening bracket whose partner is the last character: '(word)'."""
    if len(piece) < 2 or piece[0] not in _BRACKET_PAIRS or piece[-1] != _BRACKET_PAIRS[piece[0]]:
        return False
    depth = 0
    for position, char in enumerate(piece):
        depth += char in _BRACKET_PAIRS
        depth -= char in _CLOSING
        if depth == 0:
            return position == len(piece) - 1
    return False


def _trigger_piece(raw: str) -> str:
    """One trigger as a user types it into a diffusers prompt: weights, emphasis brackets around the whole and
    unpaired brackets removed, escaped brackets kept as literal ones ('character \\(series\\)' -> 'character
    (series)')."""
    piece = unescape_brackets(_WEIGHT.sub("", raw))
    unmatched = _unbalanced_brackets(piece)
    piece = "".join(char for position, char in enumerate(piece) if position not in unmatched)
    piece = _SPACES.sub(" ", piece).strip(_TRIGGER_STRIP)
    while _wraps_whole(piece):
        piece = piece[1:-1].strip(_TRIGGER_STRIP)
    return piece


def _is_quality_token(piece: str) -> bool:
    key = piece.lower()
    return key in _QUALITY or _QUALITY_PATTERN.match(key) is not None


def clean_trigger_words(words: Iterable[object]) -> tuple[str, ...]:
    """Trigger words as a user types them: comma lists split, tags, weights and emphasis removed, deduplicated.

    Entries that are empty, a single letter or digit (what ':d' or '3' leave), have no letter or digit, hold a URL,
    or are too long to be a trigger (a whole pasted prompt) are dropped; so are quality tokens ('masterpiece', '8k')
    unless nothing else is left; at most MAX_TRIGGERS are kept.
    """
    cleaned: list[str] = []
    seen: set[str] = set()
    for count, word in enumerate(words):
        if count >= _MAX_TRAINED_WORDS or len(cleaned) >= MAX_TRIGGERS:
            break
        if not isinstance(word, str):
            continue
        text = ANGLE_TAG.sub(" ", strip_invisible(word[:_MAX_TRAINED_WORD_CHARS]))
        for raw in _TRIGGER_SPLIT.split(text):
            piece = _trigger_piece(raw)
            key = piece.lower()
            if (key in seen or len(piece) > MAX_TRIGGER_CHARS or len(piece.split()) > _MAX_TRIGGER_WORDS
                    or sum(c.isalnum() for c in piece) < (1 if not piece.isascii() else 2) or _URL.search(piece)):
                continue
            seen.add(key)
            cleaned.append(piece)
            if len(cleaned) >= MAX_TRIGGERS:
                break
    specific = tuple(piece for piece in cleaned if not _is_quality_token(piece))
    return specific or tuple(cleaned)


def trigger_words_or_trained(described: Sequence[str] | None, trained_words: Sequence[object] | None) -> list[str]:
    """A version's trigger words: the describer's, else its trained words cleaned (not described yet)."""
    return list(described) if described else list(clean_trigger_words(trained_words or ()))


def default_weight(model_type: str) -> float:
    """The strength to use without evidence: 0.8 for LoRA-like adapters, 1.0 for embeddings and checkpoints."""
    return 0.8 if role_of_type(model_type) in ("lora", "hypernetwork") else 1.0


def clamp_weight(weight: float) -> float:
    """A weight within [-WEIGHT_LIMIT, WEIGHT_LIMIT], rounded to two decimals."""
    return round(min(WEIGHT_LIMIT, max(-WEIGHT_LIMIT, weight)), 2)


def example_weight(card: AdapterCard) -> float | None:
    """The median strength of the adapter in its example images (0 = switched off, so ignored), or None."""
    weights = [float(w) for w in card.example_weights
               if isinstance(w, (int, float)) and math.isfinite(w) and w != 0]
    return clamp_weight(statistics.median(weights)) if weights else None


def recommended_weight(card: AdapterCard) -> float:
    """The example images' median strength, else the type's default; always 1.0 for a checkpoint."""
    if card.model_type == "Checkpoint":
        return 1.0
    evidence = example_weight(card)
    return default_weight(card.model_type) if evidence is None else evidence


def _summary_sentence(card: AdapterCard, kind: str) -> str:
    name = cap_text(clean_text(card.model_name, 300), 80) or f"Model version {card.version_id}"
    what = clean_text(card.model_type, 100) or "model"
    if kind not in ("other", "checkpoint"):
        what = f"{kind} {what}"
    base = cap_text(clean_text(card.base_model, 100), 40) if card.base_model else ""
    return f"{name}: a {what}" + (f" for {base}." if base else ".")


def describe_card(card: AdapterCard) -> Description:
    """The card-text description of one card (never raises on odd content)."""
    kind = detect_kind(card)
    triggers = clean_trigger_words(card.trained_words)
    parts = card_sentences(card.card_text) or [_summary_sentence(card, kind)]
    phrases = prompt_phrases(card.example_prompts, exclude=triggers)
    if phrases:
        parts.append("Example images often show: " + ", ".join(phrases) + ".")
    return Description(
        text=cap_text(" ".join(parts), MAX_TEXT_CHARS),
        kind=kind,
        trigger_words=triggers,
        recommended_weight=recommended_weight(card),
        describer=CARD_TEXT_NAME,
        prompt_version=CARD_TEXT_PROMPT_VERSION,
    )


def _last_resort(card: AdapterCard) -> Description:
    """A description from fields that cannot fail, for a card whose content broke a rule."""
    is_checkpoint = getattr(card, "model_type", None) == "Checkpoint"
    name = card.model_name if isinstance(getattr(card, "model_name", None), str) else ""
    return Description(
        text=cap_text(clean_text(name, 300), 80) or "Unnamed model.",
        kind="checkpoint" if is_checkpoint else "other",
        trigger_words=(),
        recommended_weight=1.0 if is_checkpoint else 0.8,
        describer=CARD_TEXT_NAME,
        prompt_version=CARD_TEXT_PROMPT_VERSION,
    )


def safe_describe_card(card: AdapterCard) -> Description:
    """describe_card, but a card whose fields are not what AdapterCard promises still gets a description."""
    try:
        return describe_card(card)
    except Exception:  # the caller built a malformed card; one bad card must not fail a batch
        log.warning("card-text rules failed on version %s", getattr(card, "version_id", "?"), exc_info=True)
        return _last_resort(card)


class CardTextDescriber:
    """The lite describer: deterministic, no model, no network; also every model backend's fallback."""

    name = CARD_TEXT_NAME
    prompt_version = CARD_TEXT_PROMPT_VERSION

    def describe(self, cards: Sequence[AdapterCard]) -> list[Description]:
        """One description per card, in order."""
        return [safe_describe_card(card) for card in cards]
