"""What a search answers: hits (one chosen version each), grouped results, and the filters a search takes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

KIND_ORDER = ("style", "character", "object", "clothing", "concept", "pose", "background", "other")


@dataclass(frozen=True)
class Filters:
    """What a user restricts a search to; every filter is a hard one."""

    base_models: Sequence[str] = ()
    types: Sequence[str] = ()
    commercial_use: str | None = None  # e.g. 'Image', 'Rent', 'Sell': the licence must allow it
    min_downloads: int = 0
    families: Sequence[str] = ()  # base-model families (SD1.x, SDXL, ...): e.g. what a pipeline can load


@dataclass
class Hit:
    """One chosen version, as search returns it and the studio composes and downloads it."""

    model_id: int
    version_id: int
    name: str
    version_name: str
    type: str
    kind: str
    base_model: str | None
    base_model_family: str
    score: float
    similarity: float
    downloads: int
    co_usage_images: int
    trigger_words: list[str]
    recommended_weight: float | None
    download_url: str | None
    why: str
    file_name: str | None = None  # the primary file's name and sha256: what the studio downloads and verifies
    sha256: str | None = None
    description: str = ""
    lexical: float = 0.0  # BM25 of the query's words, relative to the best of the candidate pool
    matched_words: list[str] = field(default_factory=list)  # the query's words found in the embedded text
    rerank_score: float | None = None
    rerank_round: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult:
    """Both levels' answers: the checkpoints, then the adapters chosen for the first checkpoint."""

    checkpoints: list[Hit]
    adapters: list[Hit]
    adapters_by_kind: dict[str, list[Hit]] = field(default_factory=dict)
