"""The query's terms for the lexical (BM25) signal, in Python: what Postgres makes of them, without a round trip.

The stored side is `embeddings.lexemes = to_tsvector('english', text)` (db/lexicon.py). The SQL query side splits
the (A1111-free, `crawlers.a1111.plain_text`) query on `[\\s,]+` and unnests `to_tsvector('english', word)` for each
piece, so every lexeme keeps the piece it came from. `query_terms` returns the same (lexeme, piece) pairs:

* the split: Postgres' `\\s` is the C library's `iswspace` (glibc, database ctype C.UTF-8): the ASCII blanks plus
  U+1680, U+2000-U+2006, U+2008-U+200A, U+2028, U+2029, U+205F and U+3000, but not the no-break spaces (U+00A0,
  U+2007, U+202F) nor U+0085 or U+001C-U+001F, which Python's `\\s` also takes;
* the default text-search parser (PostgreSQL 16's `wparser_def.c`), re-implemented here from its documented and
  measured behaviour: ASCII words, words of other letters, letters mixed with digits (`1girl`, `v2`, `8k`),
  integers, signed integers, decimals, versions, scientific numbers, hyphenated words (the whole word and each part,
  and the parsing of parts runs on past the word's end as Postgres' does), hosts, e-mail addresses, URLs (url, host
  and path), file paths, XML entities and tags (dropped) and `<script>`/`<style>` bodies (dropped);
* the `english` configuration's dictionaries: `english_stem` (lower case, `english.stop` stop words give nothing,
  Snowball English stem; tokens over 1000 bytes are only lower-cased) for the word kinds, `simple` (lower case) for
  numbers, hosts, paths and mixed words; tokens of 2047 bytes or more are dropped (Postgres: "word is too long");
* each piece's lexemes come out sorted and without repeats, as `unnest(tsvector)` gives them.

Character classes follow glibc's C.UTF-8 `iswalpha` (Unicode letters, marks and symbols with the Alphabetic property,
letter numbers, non-ASCII decimal digits): `unicodedata` plus the code points measured to differ (`_ALPHA_EXTRA`);
zero-width characters (Mn, Me, Cf, and code points Postgres' Unicode 15 tables make zero-width, `_ZERO_WIDTH_EXTRA`)
and Postgres' list of spacing vowel signs extend a word without starting one. Lower case is the C library's
one-to-one `towlower` (no final sigma, `İ` -> `i`). Both agree with Postgres on every code point.

The stemmer is PyStemmer (Snowball 3.1, C; 4x faster than the pure-Python snowballstemmer, which gives the same
stems). Postgres 16 ships Snowball 2.2, whose English stemmer differs in five places; `stem` undoes them (extra R1
prefixes, `-ogist`, undoubling after a/e/o, `evening`, consonant + `ying`): the same stems as Postgres on all 462,480
distinct letter words of the 2023 Civitai dump (PyStemmer alone: 82 differ).

Agreement (tests/test_query_terms.py, bench/query_terms_agreement.py): every distinct word of the dump's first
50,000 prompts, the fixtures' vocabulary and 410,000 random strings of prompt, markup, host and path pieces. Gaps
left, none seen in those: the parser's `wanthost` flag when an `@` sits inside the host of an e-mail address or of a
URL that is read again, and the `<script>`/`<style>` test firing on attribute text; the tables are those of
PostgreSQL 16 with glibc 2.36 and database ctype C.UTF-8 (a server with ctype C takes every non-ASCII character for
a letter; another Postgres may ship another Snowball), and of Python 3.11's Unicode 14. Text Postgres can't hold
never raises: NUL splits pieces like a blank, a lone surrogate is a non-word character. A piece costs about the same
as one of Postgres' (each distinct word ~30 µs uncached on a loaded 2-core machine, 2-5 µs cached); scans that
Postgres repeats from every word (`a_a_a_...`, quadratic there) are remembered, so any text costs linear time.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from functools import lru_cache

import Stemmer

__all__ = ["STOP_WORDS", "clear_caches", "lexemes", "prompt_terms", "query_terms", "stem"]

# ---------------------------------------------------------------------------------------------------------------
# Splitting the query into pieces: regexp_split_to_table(words, '[\s,]+') with glibc's iswspace.
_SPLIT = re.compile("[\t\n\v\f\r \u1680\u2000-\u2006\u2008-\u200a\u2028\u2029\u205f\u3000,\x00]+")

# ---------------------------------------------------------------------------------------------------------------
# Stop words: Postgres' english.stop (Snowball's list), as shipped with PostgreSQL 16.
_ENGLISH_STOP = """
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself it
its itself they them their theirs themselves what which who whom this that these those am is are was were be been
being have has had having do does did doing a an the and but if or because as until while of at by for with about
against between into through during before after above below to from up down in out on off over under again further
then once here there when where why how all any both each few more most other some such no nor not only own same so
than too very s t can will just don should now"""
STOP_WORDS = frozenset(_ENGLISH_STOP.split())

# ---------------------------------------------------------------------------------------------------------------
# Stemming: Postgres 16's english_stem is Snowball 2.2; PyStemmer 3.1 is Snowball 3.1. Undo the five changes.
_STEMMER = Stemmer.Stemmer("english", 0)  # no cache of its own: pieces are cached below
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


# ---------------------------------------------------------------------------------------------------------------
# Character classes.
_ASCII_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_DIGITS = frozenset("0123456789")
_LETTER_OR_DIGIT = _ASCII_LETTERS | _DIGITS
_FILE_CHARS = _LETTER_OR_DIGIT | {"_"}
_URL_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - set('"<>\\^`{|}')
_XDIGITS = frozenset("0123456789abcdefABCDEF")
# Postgres' p_isspecial list: spacing vowel signs (Mc) that continue a word though they are not letters to it.
_STRANGE_LETTERS = frozenset(chr(c) for c in (
    0x0903, 0x093E, 0x093F, 0x0940, 0x0949, 0x094A, 0x094B, 0x094C, 0x0982, 0x0983, 0x09BE, 0x09BF, 0x09C0, 0x09C7,
    0x09C8, 0x09CB, 0x09CC, 0x09D7, 0x0A03, 0x0A3E, 0x0A3F, 0x0A40, 0x0A83, 0x0ABE, 0x0ABF, 0x0AC0, 0x0AC9, 0x0ACB,
    0x0ACC, 0x0B02, 0x0B03, 0x0B3E, 0x0B40, 0x0B47, 0x0B48, 0x0B4B, 0x0B4C, 0x0B57, 0x0BBE, 0x0BBF, 0x0BC1, 0x0BC2,
    0x0BC6, 0x0BC7, 0x0BC8, 0x0BCA, 0x0BCB, 0x0BCC, 0x0BD7, 0x0C01, 0x0C02, 0x0C03, 0x0C41, 0x0C42, 0x0C43, 0x0C44,
    0x0C82, 0x0C83, 0x0CBE, 0x0CC0, 0x0CC1, 0x0CC2, 0x0CC3, 0x0CC4, 0x0CC7, 0x0CC8, 0x0CCA, 0x0CCB, 0x0CD5, 0x0CD6,
    0x0D02, 0x0D03, 0x0D3E, 0x0D3F, 0x0D40, 0x0D46, 0x0D47, 0x0D48, 0x0D4A, 0x0D4B, 0x0D4C, 0x0D57, 0x0D82, 0x0D83,
    0x0DCF, 0x0DD0, 0x0DD1, 0x0DD8, 0x0DD9, 0x0DDA, 0x0DDB, 0x0DDC, 0x0DDD, 0x0DDE, 0x0DDF, 0x0DF2, 0x0DF3, 0x0F3E,
    0x0F3F, 0x0F7F, 0x102B, 0x102C, 0x1031, 0x1038, 0x103B, 0x103C, 0x1056, 0x1057, 0x1062, 0x1063, 0x1064, 0x1067,
    0x1068, 0x1069, 0x106A, 0x106B, 0x106C, 0x106D, 0x1083, 0x1084, 0x1087, 0x1088, 0x1089, 0x108A, 0x108B, 0x108C,
    0x108F, 0x17B6, 0x17BE, 0x17BF, 0x17C0, 0x17C1, 0x17C2, 0x17C3, 0x17C4, 0x17C5, 0x17C7, 0x17C8, 0x1923, 0x1924,
    0x1925, 0x1926, 0x1929, 0x192A, 0x192B, 0x1930, 0x1931, 0x1933, 0x1934, 0x1935, 0x1936, 0x1937, 0x1938, 0x19B0,
    0x19B1, 0x19B2, 0x19B3, 0x19B4, 0x19B5, 0x19B6, 0x19B7, 0x19B8, 0x19B9, 0x19BA, 0x19BB, 0x19BC, 0x19BD, 0x19BE,
    0x19BF, 0x19C0, 0x19C8, 0x19C9, 0x1A19, 0x1A1A, 0x1A1B, 0x1B04, 0x1B35, 0x1B3B, 0x1B3D, 0x1B3E, 0x1B3F, 0x1B40,
    0x1B41, 0x1B43, 0x1B44, 0x1B82, 0x1BA1, 0x1BA6, 0x1BA7, 0x1BAA, 0x1C24, 0x1C25, 0x1C26, 0x1C27, 0x1C28, 0x1C29,
    0x1C2A, 0x1C2B, 0x1C34, 0x1C35, 0xA823, 0xA824, 0xA827, 0xA880, 0xA881, 0xA8B4, 0xA8B5, 0xA8B6, 0xA8B7, 0xA8B8,
    0xA8B9, 0xA8BA, 0xA8BB, 0xA8BC, 0xA8BD, 0xA8BE, 0xA8BF, 0xA8C0, 0xA8C1, 0xA8C2, 0xA8C3, 0xA952, 0xA953, 0xAA2F,
    0xAA30, 0xAA33, 0xAA34, 0xAA4D))
# Measured on PostgreSQL 16 (glibc 2.36, C.UTF-8) for every code point: letters to glibc that unicodedata (Unicode 14)
# does not call letters (marks and symbols with the Alphabetic property, such as Devanagari vowel signs or circled
# letters), and code points unassigned in Unicode 14 that Postgres' Unicode 15 tables make zero-width. Hex ranges.
_ALPHA_EXTRA = """
345 5b0-5bd 5bf 5c1-5c2 5c4-5c5 5c7 610-61a 64b-657 659-65f 670 6d6-6dc 6e1-6e4 6e7-6e8 6ed 711 730-73f
7a6-7b0 816-817 81b-823 825-827 829-82c 8d4-8df 8e3-8e9 8f0-903 93a-93b 93e-94c 94e-94f 955-957 962-963
981-983 9be-9c4 9c7-9c8 9cb-9cc 9d7 9e2-9e3 a01-a03 a3e-a42 a47-a48 a4b-a4c a51 a70-a71 a75 a81-a83 abe-ac5
ac7-ac9 acb-acc ae2-ae3 afa-afc b01-b03 b3e-b44 b47-b48 b4b-b4c b56-b57 b62-b63 b82 bbe-bc2 bc6-bc8 bca-bcc
bd7 c00-c03 c3e-c44 c46-c48 c4a-c4c c55-c56 c62-c63 c81-c83 cbe-cc4 cc6-cc8 cca-ccc cd5-cd6 ce2-ce3 d00-d03
d3e-d44 d46-d48 d4a-d4c d57 d62-d63 d81-d83 dcf-dd4 dd6 dd8-ddf df2-df3 e31 e34-e3a e4d eb1 eb4-eb9 ebb-ebc
ecd f71-f81 f8d-f97 f99-fbc 102b-1036 1038 103b-103e 1056-1059 105e-1060 1062-1064 1067-106d 1071-1074
1082-108d 108f 109a-109d 1712-1713 1732-1733 1752-1753 1772-1773 17b6-17c8 1885-1886 18a9 1920-192b 1930-1938
1a17-1a1b 1a55-1a5e 1a61-1a74 1abf-1ac0 1acc-1ace 1b00-1b04 1b35-1b43 1b80-1b82 1ba1-1ba9 1bac-1bad 1be7-1bf1
1c24-1c36 1de7-1df4 24b6-24e9 2de0-2dff a674-a67b a69e-a69f a802 a80b a823-a827 a880-a881 a8b4-a8c3 a8c5 a8ff
a926-a92a a947-a952 a980-a983 a9b4-a9bf a9e5 aa29-aa36 aa43 aa4c-aa4d aa7b-aa7d aab0 aab2-aab4 aab7-aab8 aabe
aaeb-aaef aaf5 abe3-abea fb1e 10376-1037a 10a01-10a03 10a05-10a06 10a0c-10a0f 10d24-10d27 10eab-10eac
11000-11002 11038-11045 11073-11074 11082 110b0-110b8 110c2 11100-11102 11127-11132 11145-11146 11180-11182
111b3-111bf 111ce-111cf 1122c-11234 11237 1123e 112df-112e8 11300-11303 1133e-11344 11347-11348 1134b-1134c
11357 11362-11363 11435-11441 11443-11445 114b0-114c1 115af-115b5 115b8-115be 115dc-115dd 11630-1163e 11640
116ab-116b5 1171d-1172a 1182c-11838 11930-11935 11937-11938 1193b-1193c 11940 11942 119d1-119d7 119da-119df
119e4 11a01-11a0a 11a35-11a39 11a3b-11a3e 11a51-11a5b 11a8a-11a97 11c2f-11c36 11c38-11c3e 11c92-11ca7
11ca9-11cb6 11d31-11d36 11d3a 11d3c-11d3d 11d3f-11d41 11d43 11d47 11d8a-11d8e 11d90-11d91 11d93-11d96
11ef3-11ef6 16f4f 16f51-16f87 16f8f-16f92 16ff0-16ff1 1bc9e 1e000-1e006 1e008-1e018 1e01b-1e021 1e023-1e024
1e026-1e02a 1e947 1f130-1f149 1f150-1f169 1f170-1f189
"""
_ZERO_WIDTH_EXTRA = """
892-897 9ff-a00 a43-a46 a49-a4a a4e-a50 ac6 b00 b4e-b54 c49 c4e-c54 dd5 ece f98 1a5f 1a7d-1a7e 1acf-1aff 2065
10a04 10a07-10a0b 10a3b-10a3e 10efd-10eff 110c3-110cc 11241 1136d-1136f 119d8-119d9 11c37 11d37-11d39 11d3b
11d3e 11f00-11f01 11f36-11f3a 11f40 11f42 13439-13440 13447-13455 1bca4-1ceff 1cf2e-1cf2f 1daa0 1e007
1e019-1e01a 1e022 1e025 1e08f 1e4ec-1e4ef e0002-e001f e0080-e00ff
"""


def _ranges(table: str) -> tuple[list[int], list[int]]:
    starts, ends = [], []
    for item in table.split():
        first, _, last = item.partition("-")
        starts.append(int(first, 16))
        ends.append(int(last or first, 16))
    return starts, ends


def _within(ranges: tuple[list[int], list[int]], code: int) -> bool:
    at = bisect_right(ranges[0], code) - 1
    return at >= 0 and code <= ranges[1][at]


_ALPHA_RANGES = _ranges(_ALPHA_EXTRA)
_ZERO_WIDTH_RANGES = _ranges(_ZERO_WIDTH_EXTRA)


@lru_cache(maxsize=4096)
def _class_of(char: str) -> int:
    """Of a non-ASCII character: 0 other, 1 letter (glibc iswalpha), 2 zero-width or spacing vowel sign (continues a
    word, does not start one)."""
    category = unicodedata.category(char)
    if category[0] == "L" or category == "Nl" or category == "Nd" or _within(_ALPHA_RANGES, ord(char)):
        return 1  # non-ASCII decimal digits are letters to glibc (iswdigit is 0-9 only)
    if category in ("Mn", "Me", "Cf") or char in _STRANGE_LETTERS or _within(_ZERO_WIDTH_RANGES, ord(char)):
        return 2
    return 0


def _alpha(char: str) -> bool:
    """A letter to the parser (p_isalpha): ASCII letters and glibc's non-ASCII ones."""
    return char in _ASCII_LETTERS or (char > "\x7f" and _class_of(char) == 1)


def _alpha_or_special(char: str) -> bool:
    return char in _ASCII_LETTERS or (char > "\x7f" and _class_of(char) != 0)


def _alnum(char: str) -> bool:
    return char in _LETTER_OR_DIGIT or (char > "\x7f" and _class_of(char) == 1)


def _alnum_or_special(char: str) -> bool:
    return char in _LETTER_OR_DIGIT or (char > "\x7f" and _class_of(char) != 0)


def _special(char: str) -> bool:
    return char > "\x7f" and _class_of(char) == 2


# ---------------------------------------------------------------------------------------------------------------
# The parser. Token kinds: which dictionary reads them (None: not indexed).
STEMMED, SIMPLE = 0, 1
_FAILED = object()


class _Scan:
    """One piece's tokens as the default parser finds them; `tokens` holds (kind, text) of the indexed ones."""

    __slots__ = ("_after_host", "_comment_ends", "_memo", "ignore", "n", "s", "tokens")

    def __init__(self, s: str) -> None:
        self.s, self.n, self.tokens, self.ignore, self._after_host = s, len(s), [], False, 0
        self._memo: dict = {}
        self._comment_ends = -1  # where the last "-->" starts (-2: none after where it was looked for)
        i = 0
        while i < self.n:
            following = self._base(i)
            i = following if following > i else self._space(i + 1)  # (always true; a guard against endless loops)

    def _emit(self, kind: int, start: int, end: int) -> None:
        self.tokens.append((kind, self.s[start:end]))

    # Base state: what starts at i. Returns where the next token starts.
    def _base(self, i: int) -> int:
        s, c = self.s, self.s[i]
        if c == "<":
            end = self._tag(i + 1)
            if end > 0:
                return end
        elif self.ignore:
            pass
        elif c in _ASCII_LETTERS:
            return self._ascii_word(i)
        elif c in _DIGITS:
            return self._unsigned(i)
        elif c > "\x7f" and _class_of(c) == 1:
            return self._word(i, i + 1)
        elif c == "-" or c == "+":
            if i + 1 < self.n and s[i + 1] in _DIGITS:
                return self._signed(i)
        elif c == "&":
            end = self._entity(i + 1)
            if end > 0:
                return end
        elif c == "~":
            end = self._file(i + 1, "twiddle")
            if end > 0:
                self._emit(SIMPLE, i, end)
                return end
        elif c == "/":
            end = self._file(i + 1, "first")
            if end > 0:
                self._emit(SIMPLE, i, end)
                return end
        elif c == ".":
            end = self._file(i + 1, "dot")
            if end > 0:
                self._emit(SIMPLE, i, end)
                return end
        return self._space(i + 1)

    def _space(self, j: int) -> int:
        """Blanks (not indexed) from j: up to a letter or digit, or a character that may start a token."""
        s, n = self.s, self.n
        if self.ignore:
            while j < n and s[j] != "<":
                j += 1
            return j
        while j < n:
            c = s[j]
            if c in "<-+&/" or _alnum(c):
                return j
            j += 1
        return j

    # Words.
    def _ascii_word(self, i: int) -> int:
        s, n = self.s, self.n
        j = i + 1
        while j < n and s[j] in _ASCII_LETTERS:
            j += 1
        if j == n:
            self._emit(STEMMED, i, j)
            return j
        c = s[j]
        if c == ".":
            if self._host_result(i, self._host(j + 1, "first domain")):
                return self._after_host
            end = self._file(j + 1, "next")
            if end > 0:
                self._emit(SIMPLE, i, end)
                return end
        elif c == "-":
            if self._host_result(i, self._host(j + 1, "after hyphen")):
                return self._after_host
            end = self._hyphenated(i, j + 1, 0)
            if end > 0:
                return end
        elif c == "_":
            if self._host_result(i, self._host(j + 1, "after hyphen")):
                return self._after_host
        elif c == "@":
            end = self._email(j + 1)
            if end > 0:
                self._emit(SIMPLE, i, end)
                return end
        elif c == ":":
            if s.startswith("//", j + 1):
                return j + 3  # a protocol (http://): not indexed
        elif c == "/":
            end = self._file(j + 1, "first")
            if end > 0:
                self._emit(SIMPLE, i, end)
                return end
        elif c in _DIGITS:
            if self._host_result(i, self._host(j + 1, "host")):
                return self._after_host
            return self._numword(i, j + 1)
        elif c > "\x7f" and _class_of(c) != 0:
            return self._word(i, j + 1)
        self._emit(STEMMED, i, j)
        return j

    def _word(self, i: int, j: int) -> int:
        """A word with letters beyond ASCII, from i, read up to j."""
        s, n = self.s, self.n
        while j < n and _alpha_or_special(s[j]):
            j += 1
        if j < n:
            c = s[j]
            if c in _DIGITS:
                return self._numword(i, j + 1)
            if c == "-":
                end = self._hyphenated(i, j + 1, 1)
                if end > 0:
                    return end
        self._emit(STEMMED, i, j)
        return j

    def _numword(self, i: int, j: int) -> int:
        """Letters and digits, from i, read up to j."""
        s, n = self.s, self.n
        while j < n and _alnum_or_special(s[j]):
            j += 1
        if j < n:
            c = s[j]
            end = -1
            if c == "@":
                end = self._email(j + 1)
            elif c == "/":
                end = self._file(j + 1, "first")
            elif c == ".":
                end = self._file(j + 1, "next")
            elif c == "-":
                end = self._hyphenated(i, j + 1, 2)
                if end > 0:
                    return end
            if end > 0:
                self._emit(SIMPLE, i, end)
                return end
        self._emit(SIMPLE, i, j)
        return j

    # Numbers.
    def _unsigned(self, i: int) -> int:
        s, n = self.s, self.n
        j = i + 1
        while j < n and s[j] in _DIGITS:
            j += 1
        if j == n:
            self._emit(SIMPLE, i, j)
            return j
        c = s[j]
        if c == ".":
            if self._host_result(i, self._host(j + 1, "first domain")):
                return self._after_host
            if j + 1 < n and s[j + 1] in _DIGITS:
                return self._decimal(i, j + 2, signed=False)
        elif c == "e" or c == "E":
            end = self._exponent(j + 1)
            if end > 0:
                self._emit(SIMPLE, i, end)
                return end
        elif c == "-" or c == "_":
            if self._host_result(i, self._host(j + 1, "after hyphen")):
                return self._after_host
            self._emit(SIMPLE, i, j)
            return j
        elif c == "@":
            end = self._email(j + 1)
            if end > 0:
                self._emit(SIMPLE, i, end)
                return end
            self._emit(SIMPLE, i, j)
            return j
        elif c == "/":
            end = self._file(j + 1, "first")
            if end > 0:
                self._emit(SIMPLE, i, end)
                return end
            self._emit(SIMPLE, i, j)
            return j
        if c in _ASCII_LETTERS:
            if self._host_result(i, self._host(j + 1, "host")):
                return self._after_host
            return self._numword(i, j + 1)
        if c > "\x7f" and _class_of(c) != 0:
            return self._numword(i, j + 1)
        self._emit(SIMPLE, i, j)
        return j

    def _signed(self, i: int) -> int:
        """A sign and digits at i: an integer, a decimal or a scientific number."""
        s, n = self.s, self.n
        j = i + 2
        while j < n and s[j] in _DIGITS:
            j += 1
        if j < n:
            c = s[j]
            if c == "." and j + 1 < n and s[j + 1] in _DIGITS:
                return self._decimal(i, j + 2, signed=True)
            if c == "e" or c == "E":
                end = self._exponent(j + 1)
                if end > 0:
                    self._emit(SIMPLE, i, end)
                    return end
        self._emit(SIMPLE, i, j)
        return j

    def _decimal(self, i: int, j: int, signed: bool) -> int:
        """Digits, a dot and a digit from i, read up to j: a decimal, a version or a scientific number."""
        s, n = self.s, self.n
        while j < n and s[j] in _DIGITS:
            j += 1
        if j < n:
            c = s[j]
            if c == "." and j + 1 < n and s[j + 1] in _DIGITS:
                if signed:
                    return i + 1  # -1.2.3: the sign is a blank, then the rest is read afresh as unsigned
                j += 2
                while True:  # a version: more dots and digits
                    while j < n and s[j] in _DIGITS:
                        j += 1
                    if j + 1 < n and s[j] == "." and s[j + 1] in _DIGITS:
                        j += 2
                        continue
                    break
            elif c == "e" or c == "E":
                end = self._exponent(j + 1)
                if end > 0:
                    j = end
        self._emit(SIMPLE, i, j)
        return j

    def _exponent(self, j: int) -> int:
        """The end of an exponent's digits after its 'e' (at j-1), or -1."""
        s, n = self.s, self.n
        if j < n and (s[j] == "+" or s[j] == "-"):
            j += 1
        if j >= n or s[j] not in _DIGITS:
            return -1
        while j < n and s[j] in _DIGITS:
            j += 1
        return j

    # Hyphenated words: the whole word, then its parts.
    def _hyphenated(self, i: int, j: int, level: int) -> int:
        """A hyphenated word from i whose first hyphen is at j-1 (level 0: ASCII letters so far, 1: other letters,
        2: digits too). Emits it and its parts and returns where the next token starts, or -1 if there is none."""
        s, n = self.s, self.n
        fallback, fallback_level = -1, 0
        end = -1
        while True:
            # After a hyphen: a part must hold a letter (digits alone are no part).
            if j >= n:
                break
            c = s[j]
            if _alpha(c):
                if level == 0 and c not in _ASCII_LETTERS:
                    level = 1
            elif c in _DIGITS:
                j += 1
                while j < n and s[j] in _DIGITS:
                    j += 1
                if j >= n or not _alpha_or_special(s[j]):
                    break
                level = 2
            else:
                break
            j += 1
            while j < n:  # the rest of the part
                c = s[j]
                if c in _ASCII_LETTERS:
                    pass
                elif c in _DIGITS:
                    level = 2
                elif c > "\x7f" and _class_of(c) != 0:
                    level = max(level, 1)
                else:
                    break
                j += 1
            if j < n and s[j] == "-":
                fallback, fallback_level = j, level
                j += 1
                continue
            end = j
            break
        if end < 0:
            if fallback < 0:
                return -1
            end, level = fallback, fallback_level
        self._emit(SIMPLE if level == 2 else STEMMED, i, end)
        return self._parts(i)

    def _parts(self, p: int) -> int:
        """The parts of a hyphenated word from p (Postgres reads on while parts and hyphens follow)."""
        s, n = self.s, self.n
        while p < n:
            c = s[p]
            if _alpha(c):
                j, numeric = p + 1, False
                while j < n and _alnum_or_special(s[j]):
                    if s[j] in _DIGITS:
                        numeric = True
                    j += 1
                self._emit(SIMPLE if numeric else STEMMED, p, j)
                p = j
            elif c in _DIGITS:
                j = p + 1
                while j < n and s[j] in _DIGITS:
                    j += 1
                if j >= n or not _alpha_or_special(s[j]):
                    return p  # digits alone: read afresh
                while j < n and _alnum_or_special(s[j]):
                    j += 1
                self._emit(SIMPLE, p, j)
                p = j
            elif c == "-" and p + 1 < n and _alnum_or_special(s[p + 1]):
                p += 1
            else:
                return p
        return p

    # Hosts, e-mail addresses, URLs.
    def _host_result(self, i: int, found: tuple[str, int, int] | None) -> bool:
        """Emit what a host attempt from i found; `_after_host` is where the next token starts."""
        if found is None:
            return False
        kind, end, slash = found
        if kind == "url":
            self._emit(SIMPLE, i, end)
            self._emit(SIMPLE, i, slash)
            self._emit(SIMPLE, slash, end)
        else:
            self._emit(SIMPLE, i, end)
        self._after_host = end
        return True

    def _host(self, j: int, state: str, url: bool = True) -> tuple[str, int, int] | None:
        """A host (or e-mail address or URL) going on at j in `state`: (kind, end, slash of a URL) or None.

        A failed branch falls back to the last point where the host could have ended before a '.', '-', '_', ':',
        '@' or '/' that led nowhere; a digit right after the top-level domain's letters sends it back further.
        What a scan from each (position, state) finds is remembered: `a_a_a_...` would otherwise be read again from
        every word (Postgres does, in quadratic time)."""
        s, n, memo = self.s, self.n, self._memo
        visits: list[tuple[tuple[int, str, bool], int]] = []
        fallbacks: list[int] = []
        result: tuple[str, int, int] | None | object = _FAILED
        while True:
            key = (j, state, url)
            known = memo.get(key, _FAILED)
            if known is not _FAILED:
                result = known if known is not None else _FAILED
                break
            visits.append((key, len(fallbacks)))
            c = s[j] if j < n else ""
            if state == "host":  # letters and digits of a name that must still reach a dot and a domain
                while j < n and s[j] in _LETTER_OR_DIGIT:
                    j += 1
                c = s[j] if j < n else ""
                if c == "@":
                    end = self._email(j + 1) if url else -1
                    if end > 0:
                        result = ("email", end, 0)
                    break
                if c == ".":
                    state, j = "first domain", j + 1
                elif c == "-" or c == "_":
                    state, j = "after hyphen", j + 1
                else:
                    break
            elif state == "after hyphen":
                if c and c in _LETTER_OR_DIGIT:
                    state, j = "host", j + 1
                else:
                    break
            elif state == "first domain":
                if c and c in _ASCII_LETTERS:
                    state, j = "second domain", j + 1
                elif c and c in _DIGITS:
                    state, j = "host", j + 1
                else:
                    break
            elif state == "second domain":  # one letter of a domain so far
                if c and c in _ASCII_LETTERS:
                    state, j = "domain", j + 1
                elif c and c in _DIGITS:
                    state, j = "host", j + 1
                elif c == "-" or c == "_":
                    state, j = "after hyphen", j + 1
                elif c == ".":
                    state, j = "first domain", j + 1
                elif c == "@":
                    end = self._email(j + 1) if url else -1
                    if end > 0:
                        result = ("email", end, 0)
                    break
                else:
                    break
            else:  # "domain": two letters or more; the host may end here
                while j < n and s[j] in _ASCII_LETTERS:
                    j += 1
                if j == n:
                    result = ("host", j, 0)
                    break
                c = s[j]
                if c in _DIGITS:
                    state, j = "host", j + 1  # no fallback to here
                    continue
                result = ("host", j, 0)
                if c == ":":
                    k = j + 1
                    if k < n and s[k] in _DIGITS:
                        while k < n and s[k] in _DIGITS:
                            k += 1
                        result = ("host", k, 0)
                        if url and k < n and s[k] == "/":
                            path = self._url_path(k + 1)
                            if path > 0:
                                result = ("url", path, k)
                    break
                if c == "@":
                    end = self._email(j + 1) if url else -1
                    if end > 0:
                        result = ("email", end, 0)
                    break
                if c == "/":
                    path = self._url_path(j + 1) if url else -1
                    if path > 0:
                        result = ("url", path, j)
                    break
                if c == ".":
                    fallbacks.append(j)
                    state, j = "first domain", j + 1
                    result = _FAILED
                elif c == "-" or c == "_":
                    fallbacks.append(j)
                    state, j = "after hyphen", j + 1
                    result = _FAILED
                else:
                    break
        for key, fallbacks_before in visits:  # what a scan from each point would have found on its own
            if result is _FAILED:
                memo[key] = ("host", fallbacks[-1], 0) if len(fallbacks) > fallbacks_before else None
            else:
                memo[key] = result
        if result is _FAILED:
            return ("host", fallbacks[-1], 0) if fallbacks else None
        return result  # type: ignore[return-value]

    def _url_path(self, j: int) -> int:
        s, n = self.s, self.n
        k = j
        while k < n and s[k] in _URL_CHARS:
            k += 1
        return k if k > j else -1

    def _email(self, j: int) -> int:
        """The end of the host of an e-mail address whose '@' is at j-1, or -1 (the host is read as a token of its
        own: its first token must be a host, which then ends before a '/')."""
        s, n = self.s, self.n
        if j >= n:
            return -1
        c = s[j]
        k = j + 1
        if c in _ASCII_LETTERS:
            while k < n and s[k] in _ASCII_LETTERS:
                k += 1
            if k == n:
                return -1
            c = s[k]
            if c == ".":
                found = self._host(k + 1, "first domain", url=False)
            elif c == "-" or c == "_":
                found = self._host(k + 1, "after hyphen", url=False)
            elif c in _DIGITS:
                found = self._host(k + 1, "host", url=False)
            else:
                return -1
        elif c in _DIGITS:
            while k < n and s[k] in _DIGITS:
                k += 1
            if k == n:
                return -1
            c = s[k]
            if c == ".":
                found = self._host(k + 1, "first domain", url=False)
            elif c == "e" or c == "E":
                if self._exponent(k + 1) > 0:
                    return -1
                found = self._host(k + 1, "host", url=False)
            elif c == "-" or c == "_":
                found = self._host(k + 1, "after hyphen", url=False)
            elif c in _ASCII_LETTERS:
                found = self._host(k + 1, "host", url=False)
            else:
                return -1
        else:
            return -1
        return found[1] if found is not None and found[0] == "host" else -1

    # File paths.
    def _file(self, j: int, state: str) -> int:
        """The end of a file path going on at j in `state`, or -1. A branch that leads nowhere after a '/' falls back
        to before that '/'."""
        s, n = self.s, self.n
        fallback = -1
        while True:
            c = s[j] if j < n else ""
            if state == "file":
                while j < n and (s[j] in _FILE_CHARS or s[j] == "-"):
                    j += 1
                if j + 1 < n and s[j] == "." and s[j + 1] in _FILE_CHARS:
                    j += 2
                    continue
                if j < n and s[j] == "/":
                    fallback, state, j = j, "first", j + 1
                    continue
                return j
            if state == "next":  # after a dot in a name
                if c and c in _FILE_CHARS:
                    state, j = "file", j + 1
                    continue
                break
            if state == "first":  # after a slash
                if c and c in _FILE_CHARS:
                    state, j = "file", j + 1
                elif c == ".":
                    state, j = "dot after slash", j + 1
                elif c == "~":
                    state, j = "twiddle", j + 1
                else:
                    break
            elif state == "twiddle":
                if c and c in _FILE_CHARS:
                    state, j = "file", j + 1
                elif c == "/":
                    state, j = "first", j + 1
                else:
                    break
            elif state == "dot after slash":
                if c and c in _FILE_CHARS:
                    state, j = "file", j + 1
                elif c == ".":
                    state, j = "two dots", j + 1
                elif c == "/":
                    state, j = "first", j + 1
                else:
                    break
            elif state == "dot":  # a dot where a token starts
                if c == ".":
                    state, j = "two dots", j + 1
                elif c == "/":
                    state, j = "first", j + 1
                else:
                    break
            else:  # "two dots"
                if j == n or _space(c):
                    return j
                if c == "/":
                    fallback, state, j = j, "first", j + 1
                else:
                    break
        return fallback

    # What is not indexed: XML entities and tags.
    def _entity(self, j: int) -> int:
        """The end of an XML entity whose '&' is at j-1, or -1."""
        s, n = self.s, self.n
        if j >= n:
            return -1
        c = s[j]
        if c == "#":
            j += 1
            if j < n and s[j] in "xX":
                j += 1
                start = j
                while j < n and s[j] in _XDIGITS:
                    j += 1
            else:
                start = j
                while j < n and s[j] in _DIGITS:
                    j += 1
            if j == start:
                return -1
        elif c in _ASCII_LETTERS or c == ":" or c == "_":
            j += 1
            while j < n and (_alnum(s[j]) or s[j] in ":_.-"):
                j += 1
        else:
            return -1
        return j + 1 if j < n and s[j] == ";" else -1

    def _tag(self, j: int) -> int:
        """The end of an XML/HTML tag or comment whose '<' is at j-1, or -1. `<script>` and `<style>` start text
        that is not indexed, up to the next tag; their closing tags end it."""
        s, n = self.s, self.n
        start = j - 1
        if j >= n:
            return -1
        c = s[j]
        if c == "!":
            if s.startswith("--", j + 1):
                if self._comment_ends == -1 or 0 <= self._comment_ends < j + 3:  # (scans only move forward)
                    found = s.find("-->", j + 3)
                    self._comment_ends = found if found >= 0 else -2
                return self._comment_ends + 3 if self._comment_ends >= 0 else -1
            if j + 1 < n and s[j + 1] in "Dd":
                return self._tag_body(j + 2)
            return -1
        if c == "?":
            return self._tag_body(j + 2) if j + 1 < n and s[j + 1] == "x" else -1
        if c == "/":
            if not (j + 1 < n and s[j + 1] in _ASCII_LETTERS):
                return -1
            j += 2
        elif c in _ASCII_LETTERS or c == ":" or c == "_":
            j += 1
        else:
            return -1
        while j < n:  # the tag's name
            c = s[j]
            if c == ">" or _space(c):
                self._special_tag(s[start:j])
                if c == ">":
                    return j + 1
                return self._tag_body(j + 1)
            if c == "/":
                return j + 2 if j + 1 < n and s[j + 1] == ">" else -1
            if not (_alnum(c) or c in ":_.-"):
                return -1
            j += 1
        return -1

    def _special_tag(self, name: str) -> None:
        lowered = name.lower()
        if lowered in ("</script", "</style"):
            self.ignore = False
        elif lowered in ("<script", "<style"):
            self.ignore = True

    def _tag_body(self, j: int) -> int:
        s, n = self.s, self.n
        while j < n:
            c = s[j]
            if c == ">":
                return j + 1
            if c == "'" or c == '"':
                j += 1
                while j < n and s[j] != c:
                    if s[j] == "\\" and j + 1 < n:
                        # An escaped character; the one after it is read without the end-of-text test and is never
                        # an escape: when the text ends there, Postgres' parser stops and nothing more is indexed.
                        j += 2
                        if j == n:
                            return n
                        if s[j] == c:
                            break
                    j += 1
                if j >= n:
                    return -1
            elif not (c in _LETTER_OR_DIGIT or c in "=-_#/:.&?%~" or _space(c)):
                return -1
            j += 1
        return -1


_SPACES = frozenset("\t\n\v\f\r \u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2008\u2009\u200a\u2028\u2029"
                    "\u205f\u3000")


def _space(char: str) -> bool:
    """iswspace (never true inside a piece of a query: the split takes these)."""
    return char in _SPACES


# ---------------------------------------------------------------------------------------------------------------
# Dictionaries.
_MAX_TOKEN_BYTES = 2047  # to_tsvector skips longer tokens ("word is too long to be indexed")
_MAX_STEM_BYTES = 1000  # english_stem only lower-cases longer ones


def _lower(token: str) -> str:
    """towlower, one character at a time (Python's lower() is context-sensitive for final sigma and makes İ two)."""
    lowered = token.lower()
    if len(lowered) == len(token) and "ς" not in lowered:
        return lowered
    return "".join("i" if c == "\u0130" else c.lower() for c in token)


_CACHED_LENGTH = 256  # longer pieces and tokens are not cached: a hostile query must not fill memory


def _lexeme(kind: int, token: str) -> str | None:
    return _lexeme_cached(kind, token) if len(token) <= _CACHED_LENGTH else _lexeme_uncached(kind, token)


def _lexeme_uncached(kind: int, token: str) -> str | None:
    size = len(token) if token.isascii() else len(token.encode("utf-8", "surrogatepass"))
    if size >= _MAX_TOKEN_BYTES:
        return None
    lowered = _lower(token)
    if kind == SIMPLE or size > _MAX_STEM_BYTES:
        return lowered or None
    if not lowered or lowered in STOP_WORDS:
        return None
    return stem(lowered)


_lexeme_cached = lru_cache(maxsize=1 << 16)(_lexeme_uncached)


# Pieces that only hold ASCII letters and characters that are blanks to the parser (no digits right after which an
# exponent could start, none of the characters that start or join tokens) are read with one regular expression.
_PLAIN = re.compile(r"[^.\-_@:/~+&<0-9\x80-\U0010ffff]*")
_WORD = re.compile(r"[A-Za-z]+")


def _piece_lexemes(piece: str) -> tuple[str, ...]:
    if _PLAIN.fullmatch(piece):
        found = {_lexeme(STEMMED, token) for token in _WORD.findall(piece)}
    else:
        found = {_lexeme(kind, token) for kind, token in _Scan(piece).tokens}
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
    """(lexeme, piece) for each lexeme of each piece of the query, in order: what the SQL query side's
    `regexp_split_to_table(words, '[\\s,]+')` and `unnest(to_tsvector('english', word))` give for `text` (the
    query already stripped of A1111 syntax, see `prompt_terms`)."""
    terms = []
    for piece in _SPLIT.split(text):
        if piece:
            for lexeme in lexemes(piece):
                terms.append((lexeme, piece))
    return terms


def prompt_terms(prompt: str) -> list[tuple[str, str]]:
    """`query_terms` of an A1111 prompt's plain words (`crawlers.a1111.plain_text`), as the retriever passes them."""
    from crawlers.a1111 import plain_text

    return query_terms(plain_text(prompt))

