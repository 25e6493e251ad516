"""Which stored description of a version wins, written once: the configured describer's, else the fallback's.

A describer backend (a VLM, an OpenAI-compatible endpoint) that fails on a card leaves the card-text describer's
description stored in its place; that one is used until the backend succeeds. Retrieval, the embedding text, the
studio and the analytics views all read descriptions through this rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

_PREFERRED = """
    SELECT DISTINCT ON (version_id) version_id, text, kind, trigger_words, recommended_weight, describer,
           prompt_version
    FROM descriptions
    WHERE (describer, prompt_version) IN ((:describer, :prompt_version), (:fallback, :fallback_version)){only}
    ORDER BY version_id, describer = :describer DESC"""


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
    return _PREFERRED.format(only=" AND version_id = ANY(:ids)" if only_ids else "")


def preferred_description_rows(conn: Connection, key: DescriberKey,
                               version_ids: Sequence[int] | None = None) -> dict[int, dict]:
    """version_id -> the winning description row (text, kind, trigger_words, recommended_weight, describer,
    prompt_version), for every described version or only `version_ids`."""
    params = key.params()
    if version_ids is not None:
        params["ids"] = sorted({int(v) for v in version_ids})
    rows = conn.execute(text(preferred_descriptions_sql(only_ids=version_ids is not None)), params).mappings()
    return {int(row["version_id"]): dict(row) for row in rows}
