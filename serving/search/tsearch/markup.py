"""The parser twin's states for what Postgres does not index: XML entities (`&amp;`), tags and comments, and the
text of `<script>`/`<style>` elements up to the next tag."""

from __future__ import annotations

from serving.search.tsearch.chars import (
    ASCII_LETTERS,
    DIGITS,
    LETTER_OR_DIGIT,
    XDIGITS,
    is_alnum,
    is_space,
)
from serving.search.tsearch.state import ScanState


class Markup(ScanState):
    """Entities and tags of the piece being scanned (skipped: they yield no tokens)."""

    __slots__ = ()

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
                while j < n and s[j] in XDIGITS:
                    j += 1
            else:
                start = j
                while j < n and s[j] in DIGITS:
                    j += 1
            if j == start:
                return -1
        elif c in ASCII_LETTERS or c == ":" or c == "_":
            j += 1
            while j < n and (is_alnum(s[j]) or s[j] in ":_.-"):
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
            if not (j + 1 < n and s[j + 1] in ASCII_LETTERS):
                return -1
            j += 2
        elif c in ASCII_LETTERS or c == ":" or c == "_":
            j += 1
        else:
            return -1
        while j < n:  # the tag's name
            c = s[j]
            if c == ">" or is_space(c):
                self._special_tag(s[start:j])
                if c == ">":
                    return j + 1
                return self._tag_body(j + 1)
            if c == "/":
                return j + 2 if j + 1 < n and s[j + 1] == ">" else -1
            if not (is_alnum(c) or c in ":_.-"):
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
            elif not (c in LETTER_OR_DIGIT or c in "=-_#/:.&?%~" or is_space(c)):
                return -1
            j += 1
        return -1
