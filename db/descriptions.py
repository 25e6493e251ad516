"""Which stored description of a version wins, written once: the configured describer's, else the fallback's.

A describer backend (a VLM, an OpenAI-compatible endpoint) that fails on a card leaves the card-text describer's
description stored in its place; that one is used until the backend succeeds. Retrieval, the embedding text, the
studio and the analytics views all read descriptions through this rule. The rule itself is the SQL function
preferred_descriptions() (migration 0010), so the version_cards view, which applies it with the key recorded in
preferred_describer, and the callers here cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

_PREFERRED = """
    SELECT version_id, text, kind, trigger_words, recommended_weight, describer, prompt_version
    FROM preferred_descriptions(:describer, :prompt_version, :fallback, :fallback_version){only}"""
_RECORD = """
    INSERT INTO preferred_describer (describer, prompt_version, fallback, fallback_version)
    VALUES (:describer, :prompt_version, :fallback, :fallback_version)
    ON CONFLICT (singleton) DO UPDATE SET describer = EXCLUDED.describer, prompt_version = EXCLUDED.prompt_version,
        fallback = EXCLUDED.fallback, fallback_version = EXCLUDED.fallback_version, recorded_at = now()
    WHERE (preferred_describer.describer, preferred_describer.prompt_version, preferred_describer.fallback,
           preferred_describer.fallback_version) IS DISTINCT FROM
          (EXCLUDED.describer, EXCLUDED.prompt_version, EXCLUDED.fallback, EXCLUDED.fallback_version)"""


@dataclass(frozen=True)
class DescriberKey:
    """The describer whose descriptions are preferred, and the one whose stored output stands in for it."""

    describer: str
    prompt_version: str
    fallback: str
    fallback_version: str

    def params(self) -> dict[str, str]:
        return {"describer": self.describer, "prompt_version": self.prompt_version, "fallback": self.fallback,
                "fallback_version": self.fallback_version}


def preferred_descriptions_sql(*, only_ids: bool = False) -> str:
    """The rule as a SELECT (one row per version; parameters from `DescriberKey.params()`, plus `:ids` when
    `only_ids`), for callers that join it into a larger query."""
    return _PREFERRED.format(only=" WHERE version_id = ANY(:ids)" if only_ids else "")


def preferred_description_rows(conn: Connection, key: DescriberKey,
                               version_ids: Sequence[int] | None = None) -> dict[int, dict]:
    """version_id -> the winning description row (text, kind, trigger_words, recommended_weight, describer,
    prompt_version), for every described version or only `version_ids`."""
    params = key.params()
    if version_ids is not None:
        params["ids"] = sorted({int(v) for v in version_ids})
    rows = conn.execute(text(preferred_descriptions_sql(only_ids=version_ids is not None)), params).mappings()
    return {int(row["version_id"]): dict(row) for row in rows}


def record_preferred_describer(conn: Connection, key: DescriberKey) -> None:
    """Make `key` the one the version_cards view applies (the describe step calls this with the key it ran with)."""
    conn.execute(text(_RECORD), key.params())
