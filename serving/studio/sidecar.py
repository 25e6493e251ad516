"""The JSON sidecar of a studio image: the request, the prompts, and every model version used (ids, file, weights)."""

from __future__ import annotations

from typing import Any

from serving.search.results import Hit
from serving.studio.composer import DEFAULT_WEIGHT, Chosen, Composition


def sidecar(head: dict[str, Any], checkpoint: Hit, composition: Composition, embeddings: list[Hit],
            retrieval: dict[str, str], negative_prompt: str, notes: list[str]) -> dict[str, Any]:
    """The request (`head`), the composed prompts, the checkpoint, adapters and textual inversions used, how they
    were chosen, and the notes."""
    return {**head, "composed_prompt": composition.prompt, "a1111_prompt": composition.a1111,
            "negative_prompt": negative_prompt, "checkpoint": version_record(checkpoint),
            "adapters": [adapter_record(item) for item in composition.adapters],
            "embeddings": [embedding_record(hit) for hit in embeddings], "retrieval": retrieval, "notes": notes}


def version_record(hit: Hit) -> dict[str, Any]:
    """A model version: ids, names, type, base model and its primary file."""
    return {"model_id": hit.model_id, "version_id": hit.version_id, "name": hit.name,
            "version_name": hit.version_name, "type": hit.type, "base_model": hit.base_model,
            "sha256": (hit.sha256 or "").lower() or None, "file_name": hit.file_name}


def adapter_record(item: Chosen) -> dict[str, Any]:
    """An applied adapter: its version, the kind it was composed as, its weight, tag name, keywords and triggers."""
    return {**version_record(item.adapter), "kind": item.kind, "weight": item.weight, "lora_name": item.lora_name,
            "keywords": list(item.keywords), "trigger_words": list(item.adapter.trigger_words)}


def embedding_record(hit: Hit) -> dict[str, Any]:
    """A textual inversion, with the keys of an adapter's record (it has no LoRA name or keywords)."""
    return {**version_record(hit), "kind": hit.kind, "weight": float(hit.recommended_weight or DEFAULT_WEIGHT),
            "lora_name": "", "keywords": [], "trigger_words": list(hit.trigger_words)}
