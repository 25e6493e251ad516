"""Which versions are served, and how each is named, as the live search index holds them: one definition of
"served" for cards, lookups and inspections (the index already applies the NSFW rule, deletions, the content
level and the likeness rule), and the links and tags a served version carries."""

from __future__ import annotations

from types import SimpleNamespace

from crawlers.nsfw import LEVEL_NAMES
from embedding.search_index import SearchIndex
from serving.search.engine import LORA_FAMILY
from serving.studio.composer import lora_tag


def civitai_url(base_url: str, model_id: int, version_id: int) -> str:
    """The version's page on the site the zoo was crawled from (CIVITAI_BASE_URL: civitai.com or a mirror)."""
    return f"{base_url.rstrip('/')}/models/{int(model_id)}?modelVersionId={int(version_id)}"


def paste_tag(model_type: str, name: str, file_name: str | None, version_id: int,
              weight: float | None) -> str | None:
    """The `<lora:file_stem:weight>` tag A1111 users paste, for LoRA-family versions (None for others)."""
    if model_type not in LORA_FAMILY:
        return None
    return lora_tag(SimpleNamespace(name=name, file_name=file_name, version_id=version_id, recommended_weight=weight))


def served_row(index: SearchIndex, version_id: int) -> int | None:
    """The version's row in the index, None when the zoo does not serve it."""
    return index.row_of.get(int(version_id))


def role_of(index: SearchIndex, row: int) -> str:
    return index.codes["serving_role"][int(index.arrays["serving_role"][row])]


def level_of(index: SearchIndex, row: int) -> str:
    return LEVEL_NAMES.get(int(index.arrays["content_level"][row]), "")


def summary(index: SearchIndex, row: int, base_url: str) -> dict:
    """A served version in a few fields: ids, names, type, kind, base model, role, content level, links."""
    details = index.details
    model_id, version_id = int(index.arrays["model_id"][row]), int(index.version_ids[row])
    return {"model_id": model_id, "version_id": version_id, "name": details["name"][row],
            "version_name": details["version_name"][row], "type": details["type"][row],
            "kind": details["kind"][row], "base_model": details["base_model"][row], "role": role_of(index, row),
            "content_level": level_of(index, row), "civitai_url": civitai_url(base_url, model_id, version_id),
            "lora_tag": paste_tag(details["type"][row], details["name"][row], details["file_name"][row],
                                  version_id, details["recommended_weight"][row])}
