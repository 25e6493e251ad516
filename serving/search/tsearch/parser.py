"""Postgres 16's default text-search parser (`wparser_def.c`), re-implemented from its documented and measured
behaviour, so a query's tokens are the stored texts' tokens: ASCII words, words of other letters, letters mixed with
digits (`1girl`, `v2`, `8k`), integers, signed integers, decimals, versions, scientific numbers, hyphenated words (the
whole word and each part, and the parsing of parts runs on past the word's end as Postgres' does), hosts, e-mail
addresses, URLs (url, host and path), file paths, XML entities and tags (dropped) and `<script>`/`<style>` bodies
(dropped). This module holds the base state, words, numbers and hyphenated words; addresses.py and markup.py the
other states. Scans that Postgres repeats from every word (`a_a_a_...`, quadratic there) are remembered, so any text
costs linear time.
"""

from __future__ import annotations

from serving.search.tsearch.addresses import Addresses
from serving.search.tsearch.chars import (
    ASCII_LETTERS,
    DIGITS,
    class_of,
    is_alnum,
    is_alnum_or_special,
    is_alpha,
    is_alpha_or_special,
)
from serving.search.tsearch.markup import Markup
from serving.search.tsearch.state import SIMPLE, STEMMED

__all__ = ["SIMPLE", "STEMMED", "tokens"]


def tokens(piece: str) -> list[tuple[int, str]]:
    """(kind, text) of the tokens `to_tsvector` indexes in `piece`, in order (kind: STEMMED or SIMPLE)."""
    return _Scan(piece).tokens


class _Scan(Addresses, Markup):
    """One piece's tokens as the default parser finds them."""

    __slots__ = ()

    def __init__(self, s: str) -> None:
        super().__init__(s)
        i = 0
        while i < self.n:
            following = self._base(i)
            i = following if following > i else self._space(i + 1)  # (always true; a guard against endless loops)

    # Base state: what starts at i. Returns where the next token starts.
    def _base(self, i: int) -> int:
        s, c = self.s, self.s[i]
        if c == "<":
            end = self._tag(i + 1)
            if end > 0:
                return end
        elif self.ignore:
            pass
        elif c in ASCII_LETTERS:
            return self._ascii_word(i)
        elif c in DIGITS:
            return self._unsigned(i)
        elif c > "\x7f" and class_of(c) == 1:
            return self._word(i, i + 1)
        elif c == "-" or c == "+":
            if i + 1 < self.n and s[i + 1] in DIGITS:
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
            if c in "<-+&/" or is_alnum(c):
                return j
            j += 1
        return j

    # Words.
    def _ascii_word(self, i: int) -> int:
        s, n = self.s, self.n
        j = i + 1
        while j < n and s[j] in ASCII_LETTERS:
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
        elif c in DIGITS:
            if self._host_result(i, self._host(j + 1, "host")):
                return self._after_host
            return self._numword(i, j + 1)
        elif c > "\x7f" and class_of(c) != 0:
            return self._word(i, j + 1)
        self._emit(STEMMED, i, j)
        return j

    def _word(self, i: int, j: int) -> int:
        """A word with letters beyond ASCII, from i, read up to j."""
        s, n = self.s, self.n
        while j < n and is_alpha_or_special(s[j]):
            j += 1
        if j < n:
            c = s[j]
            if c in DIGITS:
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
        while j < n and is_alnum_or_special(s[j]):
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
        while j < n and s[j] in DIGITS:
            j += 1
        if j == n:
            self._emit(SIMPLE, i, j)
            return j
        c = s[j]
        if c == ".":
            if self._host_result(i, self._host(j + 1, "first domain")):
                return self._after_host
            if j + 1 < n and s[j + 1] in DIGITS:
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
        if c in ASCII_LETTERS:
            if self._host_result(i, self._host(j + 1, "host")):
                return self._after_host
            return self._numword(i, j + 1)
        if c > "\x7f" and class_of(c) != 0:
            return self._numword(i, j + 1)
        self._emit(SIMPLE, i, j)
        return j

    def _signed(self, i: int) -> int:
        """A sign and digits at i: an integer, a decimal or a scientific number."""
        s, n = self.s, self.n
        j = i + 2
        while j < n and s[j] in DIGITS:
            j += 1
        if j < n:
            c = s[j]
            if c == "." and j + 1 < n and s[j + 1] in DIGITS:
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
        while j < n and s[j] in DIGITS:
            j += 1
        if j < n:
            c = s[j]
            if c == "." and j + 1 < n and s[j + 1] in DIGITS:
                if signed:
                    return i + 1  # -1.2.3: the sign is a blank, then the rest is read afresh as unsigned
                j += 2
                while True:  # a version: more dots and digits
                    while j < n and s[j] in DIGITS:
                        j += 1
                    if j + 1 < n and s[j] == "." and s[j + 1] in DIGITS:
                        j += 2
                        continue
                    break
            elif c == "e" or c == "E":
                end = self._exponent(j + 1)
                if end > 0:
                    j = end
        self._emit(SIMPLE, i, j)
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
            if is_alpha(c):
                if level == 0 and c not in ASCII_LETTERS:
                    level = 1
            elif c in DIGITS:
                j += 1
                while j < n and s[j] in DIGITS:
                    j += 1
                if j >= n or not is_alpha_or_special(s[j]):
                    break
                level = 2
            else:
                break
            j += 1
            while j < n:  # the rest of the part
                c = s[j]
                if c in ASCII_LETTERS:
                    pass
                elif c in DIGITS:
                    level = 2
                elif c > "\x7f" and class_of(c) != 0:
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
            if is_alpha(c):
                j, numeric = p + 1, False
                while j < n and is_alnum_or_special(s[j]):
                    if s[j] in DIGITS:
                        numeric = True
                    j += 1
                self._emit(SIMPLE if numeric else STEMMED, p, j)
                p = j
            elif c in DIGITS:
                j = p + 1
                while j < n and s[j] in DIGITS:
                    j += 1
                if j >= n or not is_alpha_or_special(s[j]):
                    return p  # digits alone: read afresh
                while j < n and is_alnum_or_special(s[j]):
                    j += 1
                self._emit(SIMPLE, p, j)
                p = j
            elif c == "-" and p + 1 < n and is_alnum_or_special(s[p + 1]):
                p += 1
            else:
                return p
        return p
