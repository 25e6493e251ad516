"""The HTTP API's bodies (pydantic): what OpenAPI publishes and responses are validated against. Every body carries
`schema_version`; a change that removes or retypes a field bumps it. Hits keep every field `zoo search --json`
prints (extra fields pass through), plus the links a person needs."""

from __future__ import annotations

from dataclasses import MISSING, fields
from datetime import datetime
from typing import Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from serving.search.results import Hit

SCHEMA_VERSION = "1"


class Schema(BaseModel):
    model_config = ConfigDict(protected_namespaces=())  # model_id is a Civitai name, not pydantic's


class Body(Schema):
    schema_version: str = SCHEMA_VERSION


class Problem(Schema):
    """RFC 9457 problem details: every error the API answers, as application/problem+json."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    instance: str | None = None
    schema_version: str = SCHEMA_VERSION
    errors: list[dict] = Field(default_factory=list, description="one entry per bad field: where, why")
    allowed: dict[str, list[str]] | None = Field(None, description="for a bad filter value: the values it can be")


def _hit_fields() -> dict:
    """The search Hit's fields as pydantic field definitions: one definition of a hit, the dataclass."""
    hints = get_type_hints(Hit)
    found = {}
    for item in fields(Hit):
        if item.default is not MISSING:
            default = item.default
        elif item.default_factory is not MISSING:
            default = Field(default_factory=item.default_factory)
        else:
            default = ...
        found[item.name] = (hints[item.name], default)
    return found


class _Links(Schema):
    civitai_url: str
    lora_tag: str | None = Field(None, description="`<lora:file_stem:weight>` at the recommended weight")


class _HitLinks(_Links):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


HitOut = create_model("HitOut", __base__=_HitLinks, __module__=__name__, **_hit_fields())
HitOut.__doc__ = ("A hit as `zoo search --json` prints it (serving.search.results.Hit), plus its Civitai page and, for "
                  "LoRA-family adapters, the tag to paste.")


class AppliedFilters(Schema):
    base_model: list[str]
    type: list[str]
    commercial_use: str | None
    min_downloads: int
    max_content_level: str


class SearchResponse(Body):
    query: str | None
    generation: int | None = Field(None, description="the search index generation that answered")
    filters: AppliedFilters
    adapters_for: HitOut | None = Field(None, description="the checkpoint the adapters were chosen for")
    checkpoints: list[HitOut]
    adapters: list[HitOut]
    negatives: list[HitOut] = Field(description="negative embeddings that suit the chosen checkpoint")


_SUMMARY = ("model_id", "version_id", "name", "version_name", "type", "kind", "base_model", "role", "content_level")
VersionSummary = create_model("VersionSummary", __base__=_Links, __module__=__name__,
                              **{name: found for name, found in _hit_fields().items() if name in _SUMMARY})
VersionSummary.__doc__ = "A version named on another's card: the hit's identifying fields and its links."


class UsedWith(VersionSummary):
    image_count: int
    sfw_image_count: int
    avg_weight: float | None


class FileOut(Schema):
    id: int
    name: str
    type: str | None
    primary: bool
    size_kb: float | None
    format: str | None
    fp: str | None
    hashes: dict[str, str] = Field(description="every hash kind Civitai gives: sha256, autov1, autov2, autov3, "
                                               "crc32, blake3 (upper-case hex)")
    pickle_scan: str | None
    virus_scan: str | None


class ImageOut(Schema):
    id: int
    url: str
    width: int | None
    height: int | None
    content_level: str
    prompt: str | None
    negative_prompt: str | None
    sampler: str | None
    steps: int | None
    cfg_scale: float | None
    seed: int | None


class Licence(Schema):
    commercial_use: list[str]
    no_credit: bool | None
    derivatives: bool | None
    different_license: bool | None


class VersionCard(Body):
    model_id: int
    version_id: int
    name: str
    version_name: str
    type: str
    base_model: str | None
    base_model_family: str
    kind: str
    role: str
    content_level: str
    description: str
    trigger_words: list[str]
    recommended_weight: float | None
    creator: str | None
    tags: list[str]
    downloads: int
    published_at: datetime | None
    licence: Licence
    files: list[FileOut]
    images: list[ImageOut] = Field(description="SFW example images with their prompts")
    used_with_checkpoints: list[UsedWith] = Field(description="an adapter's checkpoints, most images first")
    used_with_adapters: list[UsedWith] = Field(description="a checkpoint's adapters, most images first")
    civitai_url: str
    download_url: str | None
    lora_tag: str | None


class ModelCard(Body):
    model_id: int
    name: str
    type: str
    creator: str | None
    tags: list[str]
    licence: Licence
    content_level: str
    versions: list[VersionSummary] = Field(description="its served versions, newest first")
    latest: VersionCard = Field(description="the card of its newest served version")


class LookupMatch(VersionSummary):
    file_id: int
    file_name: str
    matched: str = Field(description="the hash kind that matched (sha256, autov1, ...) or 'name'")


class LookupResponse(Body):
    hash: str | None
    file: str | None
    matches: list[LookupMatch] = Field(description="oldest version first (Civitai resolves a shared hash so)")


class InspectedResource(Schema):
    role: str
    name: str | None
    hash: str | None
    weight: float | None
    sources: list[str]
    status: Literal["served", "not_served", "unresolved"]
    resolved_by: str | None
    version: VersionSummary | None


class InspectedSettings(Schema):
    steps: int
    sampler: str
    cfg_scale: float | None
    seed: int
    width: int
    height: int
    model: str | None
    model_hash: str | None
    clip_skip: int | None
    denoising_strength: float | None


class Inspection(Body):
    prompt: str
    negative_prompt: str
    settings: InspectedSettings
    checkpoints: list[InspectedResource]
    loras: list[InspectedResource]
    embeddings: list[InspectedResource]
    others: list[InspectedResource]


class AdapterWeight(Schema):
    version_id: int = Field(ge=1, le=2**63 - 1)
    weight: float = Field(0.8, ge=-4.0, le=4.0)


class GenerateRequest(Schema):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    prompt: str = Field(min_length=1, max_length=4000)
    checkpoint_version_id: int | None = Field(None, ge=1, le=2**63 - 1)
    adapters: list[AdapterWeight] | None = Field(None, max_length=8)
    negative_prompt: str = Field("", max_length=4000)
    steps: int = Field(25, ge=1, le=100)
    seed: int = Field(-1, ge=-1, le=2**32 - 1)
    cfg: float = Field(7.0, ge=0.0, le=30.0)
    width: int = Field(512, ge=64, le=1024, multiple_of=8)
    height: int = Field(512, ge=64, le=1024, multiple_of=8)
    scheduler: str = "dpm++_2m_karras"
    rerank: bool = False
    top_k: int = Field(10, ge=1, le=20)


class JobStatus(Body):
    id: str
    kind: Literal["generate", "edit"]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    request: dict
    sidecar: dict | None = Field(None, description="model and version ids, prompts, weights, timings")
    status_url: str
    image_url: str | None = Field(None, description="the PNG (with A1111 parameters) once succeeded")


class Health(Body):
    status: str
    generation: int | None = None
    versions: int | None = None
