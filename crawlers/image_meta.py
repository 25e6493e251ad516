"""Which checkpoint, LoRAs, embeddings, hypernetworks and VAE an example image names in its Civitai `meta`.

These references are how a LoRA gets linked to the checkpoints people use it with (API.md section 2). `meta` is
whatever A1111, ComfyUI, the on-site generator or a hand edit produced, so every field is optional and may have any
type. The parser never raises: anything it cannot read is skipped, because one odd image must not stop an ingest of
~170,000 of them. The same resource is usually named several times (a prompt tag, `hashes`, `resources`), so the
references are merged per resource.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from operator import attrgetter
from typing import NamedTuple

from crawlers.a1111 import leading_number, model_tags

_ROLES = {
    "checkpoint": "checkpoint",
    "model": "checkpoint",
    "lora": "lora",
    "lycoris": "lora",
    "locon": "lora",
    "loha": "lora",
    "dora": "lora",
    "lyco": "lora",
    "embed": "embedding",
    "embedding": "embedding",
    "textualinversion": "embedding",
    "hypernet": "hypernetwork",
    "hypernetwork": "hypernetwork",
    "vae": "vae",
}

# Merge priority, best first: the on-site generator's exact ids beat Civitai's own parse, which beats raw A1111 fields.
_CIVITAI, _RESOURCES, _MODEL_HASH, _HASHES, _ADDNET, _PROMPT_TAG = range(6)
_SOURCE_NAMES = ("civitaiResources", "resources", "model_hash", "hashes", "addnet", "prompt_tag")

_HEX = re.compile(r"[0-9A-F]+")
# Hashes of an empty file match thousands of broken uploads. Civitai drops the prefix e3b0c44298fc; the 10-hex
# AutoV2 of the empty file is shorter, so the shorter prefix is what covers both.
_EMPTY_FILE_HASH = "E3B0C44298"
_VERSION_ID = re.compile(r"\s*(\d{1,18})\s*", re.ASCII)
_MAX_VERSION_ID = 2**63 - 1  # what a BIGINT column holds
# urn:air:{ecosystem}:{type}:{source}:{modelId}@{versionId}, optionally followed by :layer / .format
_AIR = re.compile(r"\s*urn:air:[^:]*:([^:]+):[^:]+:[^:@]*@(\d{1,18})", re.ASCII)
_MODEL_EXTENSION = re.compile(r"\.(?:safetensors|ckpt|pt|pth|bin|sft|gguf)\Z")
_ADDNET_MODEL = re.compile(r"(.*?)\s*\(([0-9A-Fa-f]+)\)")
_ADDNET_KEYS = tuple((f"AddNet Model {n}", f"AddNet Weight A {n}", f"AddNet Weight {n}") for n in range(1, 6))


@dataclass(frozen=True)
class ResourceReference:
    """One resource an image was generated with, as merged from every place `meta` names it."""

    role: str  # 'checkpoint' | 'lora' | 'embedding' | 'hypernetwork' | 'vae'
    sources: tuple[str, ...]  # sorted unique, from _SOURCE_NAMES
    name: str | None
    hash: str | None  # upper-case hex
    version_id: int | None
    weight: float | None


class _Found(NamedTuple):
    """One mention of a resource before merging; `keys` are what it can be matched on."""

    seq: int  # position in extract_references' scan, which visits sources best first
    rank: int
    role: str
    name: str | None
    hash: str | None
    version_id: int | None
    weight: float | None
    keys: tuple[tuple[str, int, object], ...]


def _role(value: object) -> str | None:
    return _ROLES.get(value.strip().lower()) if isinstance(value, str) else None


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return value.strip() or None


def _hash(value: object) -> str | None:
    """Upper-case hex, or None; Civitai joins hashes case-insensitively, so one case makes them comparable."""
    if not isinstance(value, str):
        return None
    value = value.strip().upper()
    if not value or not _HEX.fullmatch(value) or value.startswith(_EMPTY_FILE_HASH):
        return None
    return value


def _weight(value: object) -> float | None:
    """A finite strength; strings give their leading number, as in '0.7:0.5' or '.7'."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            weight = float(value)
        except OverflowError:
            return None
    elif isinstance(value, str):
        return leading_number(value)
    else:
        return None
    return weight if math.isfinite(weight) else None


def _version_id(value: object) -> int | None:
    if isinstance(value, str):
        match = _VERSION_ID.fullmatch(value)
        value = int(match.group(1)) if match else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_VERSION_ID:
        return value
    return None


def _name_key(name: str) -> str:
    """Names match case-insensitively and without folder or model-file extension ('sub/X.safetensors' ~ 'x')."""
    key = name.replace("\\", "/").rpartition("/")[2].casefold() or name.casefold()
    return _MODEL_EXTENSION.sub("", key) or key


def _add(
    found: list[_Found],
    rank: int,
    role: str | None,
    name: str | None,
    hash_: str | None,
    version_id: int | None,
    weight: float | None,
) -> None:
    """Keep a mention only if it can identify something: a weight alone names no resource."""
    if role is None:
        return
    keys = []
    if name is not None:
        keys.append((role, 0, _name_key(name)))
    if hash_ is not None:
        keys.append((role, 1, hash_))
    if version_id is not None:
        keys.append((role, 2, version_id))
    if keys:
        found.append(_Found(len(found), rank, role, name, hash_, version_id, weight, tuple(keys)))


def _from_civitai_resources(items: object, found: list[_Found]) -> None:
    if not isinstance(items, list):
        return
    for item in items:
        if not isinstance(item, dict):
            continue
        air = item.get("air")
        air_match = _AIR.match(air) if isinstance(air, str) else None
        role = _role(item.get("type"))
        version_id = _version_id(item.get("modelVersionId"))
        if air_match is not None:
            role = role or _role(air_match.group(1))
            version_id = version_id or _version_id(air_match.group(2))
        # modelVersionName ('V1', 'Dev') is not a resource name; matching on it would merge different LoRAs.
        _add(found, _CIVITAI, role, None, None, version_id, _weight(item.get("weight")))


def _from_resources(items: object, found: list[_Found]) -> None:
    if not isinstance(items, list):
        return
    for item in items:
        if isinstance(item, dict):
            _add(
                found,
                _RESOURCES,
                _role(item.get("type")),
                _text(item.get("name")),
                _hash(item.get("hash")),
                None,
                _weight(item.get("weight")),
            )


def _from_hashes(hashes: object, found: list[_Found]) -> None:
    if not isinstance(hashes, dict):
        return
    for key, value in hashes.items():
        if isinstance(key, str):
            kind, _, name = key.partition(":")  # 'model', 'vae', 'lora:<name>', 'LORA:<dir/name.safetensors>'
            _add(found, _HASHES, _role(kind), _text(name), _hash(value), None, None)


def _from_addnet(meta: dict, found: list[_Found]) -> None:
    """A1111 additional-networks fields: 'AddNet Model N' = 'name(hash)'; older versions wrote 'AddNet Weight N'."""
    for model_key, weight_key, old_weight_key in _ADDNET_KEYS:
        model = _text(meta.get(model_key))
        if model is None:
            continue
        match = _ADDNET_MODEL.fullmatch(model)
        name, hash_ = (_text(match.group(1)), _hash(match.group(2))) if match else (model, None)
        weight = meta.get(weight_key)
        if weight is None:
            weight = meta.get(old_weight_key)
        _add(found, _ADDNET, "lora", name, hash_, None, _weight(weight))


def _from_prompt(prompt: object, found: list[_Found]) -> None:
    # Reversed so that, as in prompt_lora_weights, the last tag for a resource gives its weight.
    for tag in reversed(model_tags(prompt)):
        _add(found, _PROMPT_TAG, _role(tag.kind), tag.name or None, None, None, tag.weight)


def _merge(found: list[_Found]) -> list[list[_Found]]:
    """Group mentions sharing a (role, name/hash/version id) key, transitively: a mention with both a name and a
    hash joins the group found by name with the one found by hash."""
    index: dict[tuple[str, int, object], list[_Found]] = {}
    for mention in found:
        group: list[_Found] | None = None
        for key in mention.keys:
            other = index.get(key)
            if other is None or other is group:
                continue
            if group is None:
                group = other
                continue
            group.extend(other)
            for moved in other:
                for moved_key in moved.keys:
                    index[moved_key] = group
        if group is None:
            group = []
        group.append(mention)
        for key in mention.keys:
            index[key] = group
    return list({id(group): group for group in index.values()}.values())


_BY_SEQ = attrgetter("seq")


def _reference(group: list[_Found]) -> ResourceReference:
    group.sort(key=_BY_SEQ)  # best source first; within one source, the first mention wins
    name = hash_ = version_id = weight = None
    for mention in group:
        name = name if name is not None else mention.name
        hash_ = hash_ if hash_ is not None else mention.hash
        version_id = version_id if version_id is not None else mention.version_id
        weight = weight if weight is not None else mention.weight
    sources = tuple(sorted({_SOURCE_NAMES[mention.rank] for mention in group}))
    return ResourceReference(group[0].role, sources, name, hash_, version_id, weight)


def _order(reference: ResourceReference) -> tuple:
    # Roles sort alphabetically, which puts 'checkpoint' first.
    name = reference.name
    return (
        reference.role,
        name is None,
        name.casefold() if name is not None else "",
        reference.version_id or 0,
        reference.hash or "",
    )


def extract_references(meta: object) -> list[ResourceReference]:
    """All resources an example image's generation metadata names, merged per resource.

    Checkpoints come first, then the other roles alphabetically, each by name. Non-dict `meta` gives [].
    """
    if not isinstance(meta, dict):
        return []
    found: list[_Found] = []  # filled in merge priority order
    _from_civitai_resources(meta.get("civitaiResources"), found)
    _from_resources(meta.get("resources"), found)
    # 'Model' and 'Model hash' describe the same single checkpoint.
    _add(found, _MODEL_HASH, "checkpoint", _text(meta.get("Model")), _hash(meta.get("Model hash")), None, None)
    _from_hashes(meta.get("hashes"), found)
    _from_addnet(meta, found)
    _from_prompt(meta.get("prompt"), found)
    return sorted((_reference(group) for group in _merge(found)), key=_order)


def prompt_lora_weights(prompt: object) -> dict[str, float]:
    """{name: weight} from <lora:name:w> / <lyco:name:w> tags in a prompt (last one wins); used for recommended weights.

    Tags without a readable weight are left out rather than assumed to be 1.
    """
    return {tag.name: tag.weight for tag in model_tags(prompt)
            if tag.kind == "lora" and tag.name and tag.weight is not None}
