"""The query's terms for the lexical (BM25) signal, in Python: what Postgres makes of them, without a round trip.

The stored side is `embeddings.lexemes = to_tsvector('english', text)` (db/lexicon.py). A query (A1111-free,
`crawlers.a1111.plain_text`) is split as SQL's `regexp_split_to_table(words, '[\\s,]+')` splits it, and each piece's
lexemes are those of `to_tsvector('english', piece)`, so every lexeme keeps the piece it came from:

* the split: Postgres' `\\s` is the C library's `iswspace` (glibc, database ctype C.UTF-8): the ASCII blanks plus
  U+1680, U+2000-U+2006, U+2008-U+200A, U+2028, U+2029, U+205F and U+3000, but not the no-break spaces (U+00A0,
  U+2007, U+202F) nor U+0085 or U+001C-U+001F, which Python's `\\s` also takes;
* the default text-search parser (serving/search/tsearch/parser.py, character classes in tsearch/chars.py);
* the `english` configuration's dictionaries (tsearch/english.py: stop words, Snowball stem, lower case);
* each piece's lexemes come out sorted and without repeats, as `unnest(tsvector)` gives them.

Agreement (tests/test_query_terms.py, bench/query_terms_agreement.py): every distinct word of the dump's first
50,000 prompts, the fixtures' vocabulary and 410,000 random strings of prompt, markup, host and path pieces. Gaps
left, none seen in those: the parser's `wanthost` flag when an `@` sits inside the host of an e-mail address or of a
URL that is read again, and the `<script>`/`<style>` test firing on attribute text; the tables are those of
PostgreSQL 16 with glibc 2.36 and database ctype C.UTF-8 (a server with ctype C takes every non-ASCII character for
a letter; another Postgres may ship another Snowball), and of Python 3.11's Unicode 14. Text Postgres can't hold
never raises: NUL splits pieces like a blank, a lone surrogate is a non-word character. A piece costs about the same
as one of Postgres' (each distinct word ~30 µs uncached on a loaded 2-core machine, 2-5 µs cached); the parser
remembers the scans Postgres repeats, so any text costs linear time.
"""

from __future__ import annotations

import re
from functools import lru_cache

from serving.search.tsearch.english import lexeme
from serving.search.tsearch.parser import STEMMED, tokens

__all__ = ["clear_caches", "lexemes", "prompt_terms", "query_terms"]

# Splitting the query into pieces: regexp_split_to_table(words, '[\s,]+') with glibc's iswspace.
_SPLIT = re.compile("[\t\n\v\f\r \u1680\u2000-\u2006\u2008-\u200a\u2028\u2029\u205f\u3000,\x00]+")

_CACHED_LENGTH = 256  # longer pieces and tokens are not cached: a hostile query must not fill memory
_lexeme_cached = lru_cache(maxsize=1 << 16)(lexeme)


def _lexeme(kind: int, token: str) -> str | None:
    return _lexeme_cached(kind, token) if len(token) <= _CACHED_LENGTH else lexeme(kind, token)


# Pieces that only hold ASCII letters and characters that are blanks to the parser (no digits right after which an
# exponent could start, none of the characters that start or join tokens) are read with one regular expression.
_PLAIN = re.compile(r"[^.\-_@:/~+&<0-9\x80-\U0010ffff]*")
_WORD = re.compile(r"[A-Za-z]+")


def _piece_lexemes(piece: str) -> tuple[str, ...]:
    if _PLAIN.fullmatch(piece):
        found = {_lexeme(STEMMED, token) for token in _WORD.findall(piece)}
    else:
        found = {_lexeme(kind, token) for kind, token in tokens(piece)}
    found.discard(None)
    return tuple(sorted(found))  # type: ignore[arg-type]


_piece_lexemes_cached = lru_cache(maxsize=1 << 16)(_piece_lexemes)


def lexemes(text: str) -> tuple[str, ...]:
    """The lexemes of `to_tsvector('english', text)`, sorted as unnest gives them (any text, not only a piece)."""
    return _piece_lexemes_cached(text) if len(text) <= _CACHED_LENGTH else _piece_lexemes(text)


def clear_caches() -> None:
    """Forget cached pieces and tokens (benchmarks time cold queries with it)."""
    _piece_lexemes_cached.cache_clear()
    _lexeme_cached.cache_clear()


def query_terms(text: str) -> list[tuple[str, str]]:
    """(lexeme, piece) for each lexeme of each piece of the query, in order: what SQL's
    `regexp_split_to_table(words, '[\\s,]+')` and `unnest(to_tsvector('english', word))` give for `text` (the
    query already stripped of A1111 syntax, see `prompt_terms`)."""
    terms = []
    for piece in _SPLIT.split(text):
        if piece:
            for term in lexemes(piece):
                terms.append((term, piece))
    return terms


def prompt_terms(prompt: str) -> list[tuple[str, str]]:
    """`query_terms` of an A1111 prompt's plain words (`crawlers.a1111.plain_text`), as the retriever passes them."""
    from crawlers.a1111 import plain_text

    return query_terms(plain_text(prompt))
