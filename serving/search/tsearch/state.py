"""What every state of the parser twin reads and writes while it scans one piece: the text, the tokens found so far
and the flags and memos Postgres' parser keeps between tokens. The states themselves are grouped by token family
(parser.py: words, numbers, hyphenated words; addresses.py; markup.py) on this one base."""

from __future__ import annotations

from serving.search.tsearch.chars import DIGITS

STEMMED, SIMPLE = 0, 1  # token kinds: which dictionary reads them (english_stem, simple)


class ScanState:
    """One piece being scanned; `tokens` holds (kind, text) of the indexed tokens."""

    __slots__ = ("_after_host", "_comment_ends", "_memo", "ignore", "n", "s", "tokens")

    def __init__(self, s: str) -> None:
        self.s, self.n, self.ignore, self._after_host = s, len(s), False, 0
        self.tokens: list[tuple[int, str]] = []
        self._memo: dict = {}  # host scans by (position, state, url): see Addresses._host
        self._comment_ends = -1  # where the last "-->" starts (-2: none after where it was looked for)

    def _emit(self, kind: int, start: int, end: int) -> None:
        self.tokens.append((kind, self.s[start:end]))

    def _exponent(self, j: int) -> int:
        """The end of an exponent's digits after its 'e' (at j-1), or -1 (numbers and e-mail hosts both ask)."""
        s, n = self.s, self.n
        if j < n and (s[j] == "+" or s[j] == "-"):
            j += 1
        if j >= n or s[j] not in DIGITS:
            return -1
        while j < n and s[j] in DIGITS:
            j += 1
        return j
