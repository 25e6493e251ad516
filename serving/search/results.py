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
    max_content_level: int | None = None  # 1 PG, 2 PG-13, ...: at most the server's (config.settings.CONTENT_LEVELS)


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
    role: str = ""  # checkpoint, content, enhancer or negative (crawlers/roles.py)
    content_level: str = ""  # PG, PG-13, ... (crawlers/nsfw.py)
    other_versions: list[int] = field(default_factory=list)  # the model's other served versions, newest id first

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult:
    """Both levels' answers: the checkpoints, then the adapters chosen for the first checkpoint (LoRA-family,
    content and enhancers, one version per model), and the negative embeddings that suit that checkpoint."""

    checkpoints: list[Hit]
    adapters: list[Hit]
    negatives: list[Hit] = field(default_factory=list)

    @property
    def adapters_by_kind(self) -> dict[str, list[Hit]]:
        """The adapters by kind, kinds in KIND_ORDER (unknown kinds last, by name), hits in rank order."""
        by_kind: dict[str, list[Hit]] = {}
        for hit in self.adapters:
            by_kind.setdefault(hit.kind, []).append(hit)
        rank = {kind: position for position, kind in enumerate(KIND_ORDER)}
        return {kind: by_kind[kind] for kind in sorted(by_kind, key=lambda k: (rank.get(k, len(rank)), k))}
