"""What an image was made with: its A1111 parameters (the PNG's `parameters` text, or that text pasted) read as
Civitai reads an image's meta (crawlers/image_meta.py: prompt tags, Model hash, Lora/TI hashes, the Civitai
extension's Hashes and resources, AddNet fields), each resource resolved to a version by the catalogue's own rules
(db/links.py: version id, any hash kind, then file name, always to a type that can play the role)."""

from __future__ import annotations

import io
import json
import math

from config import Settings
from crawlers.image_meta import ResourceReference, extract_references
from crawlers.taxonomy import types_by_role
from db.links import resolve_references
from serving.catalogue.served import served_row, summary
from serving.studio.png_info import GenerationParameters, parse_parameters, read_png_parameters

MAX_PARAMETERS_CHARS = 64_000
ROLE_GROUPS = {"checkpoint": "checkpoints", "lora": "loras", "embedding": "embeddings"}  # the rest: "others"
_JSON_FIELDS = {"Hashes": "hashes", "Civitai resources": "civitaiResources"}  # the Civitai extension's fields


class NoParameters(ValueError):
    """The image or text holds no A1111 parameters."""


def png_parameters(data: bytes) -> str:
    """The `parameters` text of PNG bytes; NoParameters when it has none, ValueError when it is no image."""
    try:
        text = read_png_parameters(io.BytesIO(data))
    except OSError as error:
        raise ValueError(f"not a readable image ({error})") from error
    if not text or not text.strip():
        raise NoParameters("the image holds no A1111 parameters (a PNG's 'parameters' text)")
    return text


def inspect_png(retriever, settings: Settings, data: bytes) -> dict:
    return inspect_parameters(retriever, settings, png_parameters(data))


def inspect_parameters(retriever, settings: Settings, text: str) -> dict:
    """The prompts and settings of an A1111 parameters text, and every resource it names, resolved: a served
    version's summary, `not_served` (the zoo has it but does not serve it) or `unresolved`."""
    if not text.strip():
        raise NoParameters("the parameters text is empty")
    if len(text) > MAX_PARAMETERS_CHARS:
        raise ValueError(f"the parameters text is longer than {MAX_PARAMETERS_CHARS} characters")
    if "\x00" in text:
        raise ValueError("the parameters text holds a NUL character")
    params = parse_parameters(text)
    references = extract_references(meta_of(params, text))
    with retriever.db.begin() as conn:
        resolved = resolve_references(conn, [_row(ref) for ref in references], types_by_role())
    answer = {"prompt": params.prompt, "negative_prompt": params.negative_prompt, "settings": _settings(params),
              **{group: [] for group in (*ROLE_GROUPS.values(), "others")}}
    index = retriever.search_engine.index
    for ref, (version_id, how) in zip(references, resolved, strict=True):
        answer[ROLE_GROUPS.get(ref.role, "others")].append(_resource(index, settings, ref, version_id, how))
    return answer


def meta_of(params: GenerationParameters, text: str) -> dict:
    """The parameters as the keys of a Civitai image's `meta`, which crawlers/image_meta.py reads."""
    hashes = {f"lora:{name}": value for name, value in params.lora_hashes.items()}
    hashes.update({f"embed:{name}": value for name, value in params.ti_hashes.items()})
    meta: dict = {**params.extra, "prompt": params.prompt, "negativePrompt": params.negative_prompt,
                  "Model": params.model, "Model hash": params.model_hash}
    for field, key in _JSON_FIELDS.items():
        value = _json_after(text, f"{field}: ")
        if key == "hashes" and isinstance(value, dict):
            hashes = {**value, **hashes}
        elif value is not None:
            meta[key] = value
    meta["hashes"] = hashes
    return meta


def _json_after(text: str, label: str):
    """The JSON value written unquoted after `label` in the settings line (None when absent or unreadable)."""
    at = text.rfind(label)
    if at < 0:
        return None
    try:
        return json.JSONDecoder().raw_decode(text, at + len(label))[0]
    except ValueError:
        return None


def _row(ref: ResourceReference) -> dict:
    return {"role": ref.role, "sources": list(ref.sources), "name": ref.name, "hash": ref.hash,
            "ref_version_id": ref.version_id, "weight": ref.weight}


def _resource(index, settings: Settings, ref: ResourceReference, version_id: int | None, how: str | None) -> dict:
    row = served_row(index, version_id) if version_id is not None else None
    status = "served" if row is not None else ("not_served" if version_id is not None else "unresolved")
    return {"role": ref.role, "name": ref.name, "hash": ref.hash, "weight": ref.weight, "sources": list(ref.sources),
            "status": status, "resolved_by": how if row is not None else None,
            "version": summary(index, row, settings.civitai_base_url) if row is not None else None}


def _settings(params: GenerationParameters) -> dict:
    return {"steps": params.steps, "sampler": params.sampler, "cfg_scale": _finite(params.cfg_scale),
            "seed": params.seed, "width": params.width, "height": params.height, "model": params.model,
            "model_hash": params.model_hash, "clip_skip": params.clip_skip,
            "denoising_strength": _finite(params.denoising_strength)}


def _finite(value: float | None) -> float | None:
    """A number JSON can carry ('CFG scale: inf' in a hand-edited text is no setting)."""
    return value if value is not None and math.isfinite(value) else None
