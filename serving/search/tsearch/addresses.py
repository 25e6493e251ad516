"""The parser twin's states for hosts, e-mail addresses, URLs (url, host and path) and file paths: prompts hold
model file names, `site.com` credits and links, and Postgres indexes each of them as `simple` tokens."""

from __future__ import annotations

from serving.search.tsearch.chars import (
    ASCII_LETTERS,
    DIGITS,
    FILE_CHARS,
    LETTER_OR_DIGIT,
    URL_CHARS,
    is_space,
)
from serving.search.tsearch.state import SIMPLE, ScanState

_FAILED = object()


class Addresses(ScanState):
    """Hosts, e-mail addresses, URLs and file paths of the piece being scanned."""

    __slots__ = ()

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
                while j < n and s[j] in LETTER_OR_DIGIT:
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
                if c and c in LETTER_OR_DIGIT:
                    state, j = "host", j + 1
                else:
                    break
            elif state == "first domain":
                if c and c in ASCII_LETTERS:
                    state, j = "second domain", j + 1
                elif c and c in DIGITS:
                    state, j = "host", j + 1
                else:
                    break
            elif state == "second domain":  # one letter of a domain so far
                if c and c in ASCII_LETTERS:
                    state, j = "domain", j + 1
                elif c and c in DIGITS:
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
                while j < n and s[j] in ASCII_LETTERS:
                    j += 1
                if j == n:
                    result = ("host", j, 0)
                    break
                c = s[j]
                if c in DIGITS:
                    state, j = "host", j + 1  # no fallback to here
                    continue
                result = ("host", j, 0)
                if c == ":":
                    k = j + 1
                    if k < n and s[k] in DIGITS:
                        while k < n and s[k] in DIGITS:
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
        while k < n and s[k] in URL_CHARS:
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
        if c in ASCII_LETTERS:
            while k < n and s[k] in ASCII_LETTERS:
                k += 1
            if k == n:
                return -1
            c = s[k]
            if c == ".":
                found = self._host(k + 1, "first domain", url=False)
            elif c == "-" or c == "_":
                found = self._host(k + 1, "after hyphen", url=False)
            elif c in DIGITS:
                found = self._host(k + 1, "host", url=False)
            else:
                return -1
        elif c in DIGITS:
            while k < n and s[k] in DIGITS:
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
            elif c in ASCII_LETTERS:
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
                while j < n and (s[j] in FILE_CHARS or s[j] == "-"):
                    j += 1
                if j + 1 < n and s[j] == "." and s[j + 1] in FILE_CHARS:
                    j += 2
                    continue
                if j < n and s[j] == "/":
                    fallback, state, j = j, "first", j + 1
                    continue
                return j
            if state == "next":  # after a dot in a name
                if c and c in FILE_CHARS:
                    state, j = "file", j + 1
                    continue
                break
            if state == "first":  # after a slash
                if c and c in FILE_CHARS:
                    state, j = "file", j + 1
                elif c == ".":
                    state, j = "dot after slash", j + 1
                elif c == "~":
                    state, j = "twiddle", j + 1
                else:
                    break
            elif state == "twiddle":
                if c and c in FILE_CHARS:
                    state, j = "file", j + 1
                elif c == "/":
                    state, j = "first", j + 1
                else:
                    break
            elif state == "dot after slash":
                if c and c in FILE_CHARS:
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
                if j == n or is_space(c):
                    return j
                if c == "/":
                    fallback, state, j = j, "first", j + 1
                else:
                    break
        return fallback
