"""The `english` configuration's dictionaries: what a token of the parser becomes in `to_tsvector('english', ...)`.

`english_stem` reads the word kinds: lower case, `english.stop` stop words give nothing, then the Snowball English
stem (tokens over 1000 bytes are only lower-cased); `simple` (lower case) reads numbers, hosts, paths and mixed words;
tokens of 2047 bytes or more are dropped (Postgres: "word is too long"). Lower case is the C library's one-to-one
`towlower` (no final sigma, `İ` -> `i`).

The stemmer is PyStemmer (Snowball 3.1, C; 4x faster than the pure-Python snowballstemmer, which gives the same
stems). Postgres 16 ships Snowball 2.2, whose English stemmer differs in five places; `stem` undoes them (extra R1
prefixes, `-ogist`, undoubling after a/e/o, `evening`, consonant + `ying`): the same stems as Postgres on all 462,480
distinct letter words of the 2023 Civitai dump (PyStemmer alone: 82 differ).
"""

from __future__ import annotations

import re

import Stemmer

from serving.search.tsearch.state import SIMPLE

__all__ = ["STOP_WORDS", "lexeme", "stem"]

# Postgres' english.stop (Snowball's list), as shipped with PostgreSQL 16.
_ENGLISH_STOP = """
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself it
its itself they them their theirs themselves what which who whom this that these those am is are was were be been
being have has had having do does did doing a an the and but if or because as until while of at by for with about
against between into through during before after above below to from up down in out on off over under again further
then once here there when where why how all any both each few more most other some such no nor not only own same so
than too very s t can will just don should now"""
STOP_WORDS = frozenset(_ENGLISH_STOP.split())

# Postgres 16's english_stem is Snowball 2.2; PyStemmer 3.1 is Snowball 3.1. Undo the five changes.
_STEMMER = Stemmer.Stemmer("english", 0)  # no cache of its own: serving/search/words.py caches tokens
_NEW_PREFIX = re.compile("past|univers|later|emerg|organ|inter")  # Snowball 3 starts R1 after these
_SAME_CLASS = {"p": "b", "u": "a", "l": "b", "e": "a", "o": "a", "i": "a"}  # consonant for consonant, vowel for vowel
_UNDOUBLED = re.compile("[aeo](?:bb|dd|ff|gg|mm|nn|pp|rr|tt)(?:ed|edly|ing|ingly)s?")  # Snowball 2: added -> ad
_C_YING = re.compile("[^aeiou]yings?")  # Snowball 3: vying -> vie; Snowball 2 only dying, lying, tying


def stem(word: str) -> str:
    """Postgres 16's Snowball English stem of a lower-case word."""
    if len(word) > 2:
        if _UNDOUBLED.fullmatch(word):
            return word[:2]
        if word.endswith("ogist"):  # Snowball 3 makes -ogist -og
            return word
        if word.endswith("ogists"):
            return word[:-1]
        if word == "evening" or word == "evenings":
            return "even"
        if _C_YING.fullmatch(word) and word not in ("dying", "lying", "tying"):
            return word[:2]
        if _NEW_PREFIX.match(word):
            # The same letters with a first letter of the same class miss the prefix list; nothing else in the
            # algorithm looks at the first letter of a word this long.
            return word[0] + _STEMMER.stemWord(_SAME_CLASS[word[0]] + word[1:])[1:]
    return _STEMMER.stemWord(word)


_MAX_TOKEN_BYTES = 2047  # to_tsvector skips longer tokens ("word is too long to be indexed")
_MAX_STEM_BYTES = 1000  # english_stem only lower-cases longer ones


def _lower(token: str) -> str:
    """towlower, one character at a time (Python's lower() is context-sensitive for final sigma and makes İ two)."""
    lowered = token.lower()
    if len(lowered) == len(token) and "ς" not in lowered:
        return lowered
    return "".join("i" if c == "\u0130" else c.lower() for c in token)


def lexeme(kind: int, token: str) -> str | None:
    """The lexeme a token of `kind` (state.STEMMED or SIMPLE) gives, or None (a stop word, or too long)."""
    size = len(token) if token.isascii() else len(token.encode("utf-8", "surrogatepass"))
    if size >= _MAX_TOKEN_BYTES:
        return None
    lowered = _lower(token)
    if kind == SIMPLE or size > _MAX_STEM_BYTES:
        return lowered or None
    if not lowered or lowered in STOP_WORDS:
        return None
    return stem(lowered)
