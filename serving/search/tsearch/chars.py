"""Character classes as Postgres' text-search parser sees them (glibc, database ctype C.UTF-8), so the parser twin
splits tokens where Postgres does.

Letters follow glibc's C.UTF-8 `iswalpha` (Unicode letters, marks and symbols with the Alphabetic property, letter
numbers, non-ASCII decimal digits): `unicodedata` plus the code points measured to differ (`_ALPHA_EXTRA`);
zero-width characters (Mn, Me, Cf, and code points Postgres' Unicode 15 tables make zero-width, `_ZERO_WIDTH_EXTRA`)
and Postgres' list of spacing vowel signs extend a word without starting one. Both agree with Postgres on every code
point.
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_right
from functools import lru_cache

ASCII_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
DIGITS = frozenset("0123456789")
LETTER_OR_DIGIT = ASCII_LETTERS | DIGITS
FILE_CHARS = LETTER_OR_DIGIT | {"_"}
URL_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - set('"<>\\^`{|}')
XDIGITS = frozenset("0123456789abcdefABCDEF")
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
def class_of(char: str) -> int:
    """Of a non-ASCII character: 0 other, 1 letter (glibc iswalpha), 2 zero-width or spacing vowel sign (continues a
    word, does not start one)."""
    category = unicodedata.category(char)
    if category[0] == "L" or category == "Nl" or category == "Nd" or _within(_ALPHA_RANGES, ord(char)):
        return 1  # non-ASCII decimal digits are letters to glibc (iswdigit is 0-9 only)
    if category in ("Mn", "Me", "Cf") or char in _STRANGE_LETTERS or _within(_ZERO_WIDTH_RANGES, ord(char)):
        return 2
    return 0


def is_alpha(char: str) -> bool:
    """A letter to the parser (p_isalpha): ASCII letters and glibc's non-ASCII ones."""
    return char in ASCII_LETTERS or (char > "\x7f" and class_of(char) == 1)


def is_alpha_or_special(char: str) -> bool:
    return char in ASCII_LETTERS or (char > "\x7f" and class_of(char) != 0)


def is_alnum(char: str) -> bool:
    return char in LETTER_OR_DIGIT or (char > "\x7f" and class_of(char) == 1)


def is_alnum_or_special(char: str) -> bool:
    return char in LETTER_OR_DIGIT or (char > "\x7f" and class_of(char) != 0)


_SPACES = frozenset("\t\n\v\f\r \u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2008\u2009\u200a\u2028\u2029"
                    "\u205f\u3000")


def is_space(char: str) -> bool:
    """iswspace (never true inside a piece of a query: the split takes these)."""
    return char in _SPACES
