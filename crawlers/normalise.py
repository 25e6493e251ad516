"""One Civitai /models item (either schema era, see API.md) to the zoo's rows.

The output is plain dicts keyed by column name, so the loader can COPY them; anything the item has that no column
holds stays in `models_raw.raw`. A malformed item raises NormaliseError and is quarantined by the caller.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath

from crawlers.html_text import html_to_text
from crawlers.image_meta import extract_references
from crawlers.nsfw import classify_model, image_nsfw_level, is_nsfw_level
from crawlers.taxonomy import base_model_family, role_of_type

_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1
# Bounds of the text columns Postgres indexes (a btree row holds at most 2,704 bytes), decided per column:
MAX_TYPE_LENGTH = 64  # model type: an enum name (the longest is 17); a longer one is not a type: the model is refused
MAX_BASE_MODEL_LENGTH = 100  # baseModel: an enum name (the longest is about 25); longer: the model is refused
MAX_HASH_LENGTH = 128  # a hash (SHA256 and BLAKE3 are 64 hex): a longer value is no hash and is dropped
MAX_STEM_LENGTH = 255  # file name stem: no file system names a file longer, so no tag can name one; cut to this
_HASH_KINDS = {"sha256": "sha256", "autov1": "autov1", "autov2": "autov2", "autov3": "autov3", "crc32": "crc32", "blake3": "blake3"}


class NormaliseError(ValueError):
    """The item cannot become catalogue rows; the message says which field is wrong."""


@dataclass
class NormalisedModel:
    model: dict
    versions: list[dict] = field(default_factory=list)
    files: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    image_resources: list[dict] = field(default_factory=list)


def _text(value: object) -> str | None:
    if isinstance(value, str):
        value = value.replace("\x00", "").strip()
        return value or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -_INT64_MAX <= value <= _INT64_MAX else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return _int(int(value))
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return _int(int(value.strip()))
    return None


def _int32(value: object) -> int | None:
    """An integer an INTEGER column holds, else None."""
    number = _int(value)
    return number if number is not None and -_INT32_MAX <= number <= _INT32_MAX else None


def _level(value: object, what: str) -> int | None:
    """An nsfwLevel bitmask; one no INTEGER column holds is refused, not dropped (it decides what is served)."""
    number = _int(value)
    if number is not None and not -_INT32_MAX <= number <= _INT32_MAX:
        raise NormaliseError(f"{what} nsfwLevel {number} is not a bitmask of Civitai's levels")
    return number


def _float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _count(stats: dict, key: str) -> int:
    return max(_int(stats.get(key)) or 0, 0)


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def _strings(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    return [text for text in (_text(v) for v in value) if text]


def commercial_use(value: object) -> list[str]:
    """`allowCommercialUse` as a list: an array (2025), a string (2023) or a Postgres literal '{Image,Rent}'."""
    if isinstance(value, list):
        return _strings(value)
    text = _text(value)
    if not text:
        return []
    # 2023's "None" means no commercial use at all, not a permission called None
    return [part.strip() for part in text.strip("{}").split(",") if part.strip() and part.strip() != "None"]


def _required_id(container: dict, what: str) -> int:
    value = container.get("id")
    number = _int(value) if not isinstance(value, str) else None
    if number is None or number <= 0:
        raise NormaliseError(f"{what} has no positive integer id (got {value!r})")
    return number


def _dict_list(value: object, what: str) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise NormaliseError(f"{what} is {type(value).__name__}, expected a list")
    return [item for item in value if isinstance(item, dict)]


def _versions(item: dict, model_id: int) -> list[dict]:
    """The item's versions. Every /models item of both eras has a `modelVersions` list of objects (maybe empty);
    an item without one, or with something else there, is schema drift (a renamed or retyped field), never "this
    model now has no versions": that would withdraw all its versions and delete what was derived from them."""
    if "modelVersions" not in item:
        raise NormaliseError(f"schema drift: model {model_id} has no modelVersions field "
                             f"(fields: {', '.join(sorted(str(key)[:40] for key in item)[:30])})")
    versions = item["modelVersions"]
    if not isinstance(versions, list):
        raise NormaliseError(f"schema drift: model {model_id} modelVersions is {type(versions).__name__}, "
                             f"expected a list")
    for position, version in enumerate(versions):
        if not isinstance(version, dict):
            raise NormaliseError(f"schema drift: model {model_id} modelVersions #{position} is "
                                 f"{type(version).__name__}, expected an object")
    return versions


def _bounded(value: str | None, limit: int, what: str) -> str | None:
    if value is not None and len(value) > limit:
        raise NormaliseError(f"{what} is {len(value)} characters long (at most {limit}): not a name Civitai uses")
    return value


def file_name_stem(name: str) -> str:
    """The lower-case file name without extension: what `<lora:NAME:w>` tags and meta `Model` usually give."""
    return PurePosixPath(name).stem.lower() if "." in name else name.lower()


def normalise_model(item: object) -> NormalisedModel:
    if not isinstance(item, dict):
        raise NormaliseError(f"item is {type(item).__name__}, expected an object")
    model_id = _required_id(item, "model")
    model_type = _bounded(_text(item.get("type")), MAX_TYPE_LENGTH, f"model {model_id} type")
    if model_type is None:
        raise NormaliseError(f"model {model_id} has no type")
    stats = item.get("stats") if isinstance(item.get("stats"), dict) else {}
    creator = item.get("creator") if isinstance(item.get("creator"), dict) else {}
    model_nsfw_level = _level(item.get("nsfwLevel"), f"model {model_id}")
    role = role_of_type(model_type)
    out = NormalisedModel(model={})
    image_levels: list[int | None] = []
    for position, version in enumerate(_versions(item, model_id)):
        version_id = _required_id(version, f"model {model_id} version #{position}")
        out.versions.append(_version_row(model_id, version_id, position, version))
        for file in _dict_list(version.get("files"), f"version {version_id} files"):
            out.files.append(_file_row(version_id, file))
        for image_position, image in enumerate(_dict_list(version.get("images"), f"version {version_id} images")):
            image_row = _image_row(model_id, version_id, image_position, image)
            image_levels.append(image_row["nsfw_level"])
            out.images.append(image_row)
            out.image_resources.extend(_image_resource_rows(image_row["id"], version_id, role, image.get("meta")))
    decision = classify_model(item, image_levels)
    out.model = {
        "id": model_id,
        "name": _text(item.get("name")) or f"model {model_id}",
        "type": model_type,
        "description_text": html_to_text(item.get("description")),
        "creator": _text(creator.get("username")),
        "tags": _strings(item.get("tags")),
        "schema_era": "2024+" if "nsfwLevel" in item else "2023",
        "nsfw_flag": item.get("nsfw") is True,
        "nsfw_level": model_nsfw_level,
        "nsfw": decision.nsfw,
        "nsfw_reason": decision.reason,
        "poi": _bool(item.get("poi")),
        "minor": _bool(item.get("minor")),
        "mode": _text(item.get("mode")),
        "availability": _text(item.get("availability")),
        "allow_commercial_use": commercial_use(item.get("allowCommercialUse")),
        "allow_no_credit": _bool(item.get("allowNoCredit")),
        "allow_derivatives": _bool(item.get("allowDerivatives")),
        "allow_different_license": _bool(item.get("allowDifferentLicense", item.get("allowDifferentLicence"))),
        "download_count": _count(stats, "downloadCount"),
        "favorite_count": _count(stats, "favoriteCount"),
        "thumbs_up_count": _count(stats, "thumbsUpCount"),
        "comment_count": _count(stats, "commentCount"),
        "rating": _float(stats.get("rating")),
        "rating_count": _count(stats, "ratingCount"),
    }
    return out


def _version_row(model_id: int, version_id: int, position: int, version: dict) -> dict:
    stats = version.get("stats") if isinstance(version.get("stats"), dict) else {}
    base_model = _bounded(_text(version.get("baseModel")), MAX_BASE_MODEL_LENGTH, f"version {version_id} baseModel")
    index = _int32(version.get("index"))
    return {
        "id": version_id,
        "model_id": model_id,
        "position": index if index is not None and index >= 0 else position,
        "name": _text(version.get("name")) or f"version {version_id}",
        "base_model": base_model,
        "base_model_type": _text(version.get("baseModelType")),
        "base_model_family": base_model_family(base_model),
        "trained_words": _strings(version.get("trainedWords")),
        "description_text": html_to_text(version.get("description")),
        "nsfw_level": _level(version.get("nsfwLevel"), f"version {version_id}"),
        "download_count": _count(stats, "downloadCount"),
        "rating": _float(stats.get("rating")),
        "rating_count": _count(stats, "ratingCount"),
        "thumbs_up_count": _count(stats, "thumbsUpCount"),
        "download_url": _text(version.get("downloadUrl")),
        "created_at": _time(version.get("createdAt")),
        "published_at": _time(version.get("publishedAt")),
    }


def _file_row(version_id: int, file: dict) -> dict:
    file_id = _required_id(file, f"version {version_id} file")
    name = _text(file.get("name")) or f"file {file_id}"
    metadata = file.get("metadata") if isinstance(file.get("metadata"), dict) else {}
    hashes = file.get("hashes") if isinstance(file.get("hashes"), dict) else {}
    row = {
        "id": file_id,
        "version_id": version_id,
        "name": name,
        "name_stem": file_name_stem(name)[:MAX_STEM_LENGTH],
        "type": _text(file.get("type")),
        "is_primary": file.get("primary") is True,
        "size_kb": _float(file.get("sizeKB")),
        "format": _text(metadata.get("format")),
        "fp": _text(metadata.get("fp")),
        "pickle_scan": _text(file.get("pickleScanResult")),
        "virus_scan": _text(file.get("virusScanResult")),
        "download_url": _text(file.get("downloadUrl")),
    }
    row.update(dict.fromkeys(_HASH_KINDS.values()))
    for kind, value in hashes.items():
        column = _HASH_KINDS.get(str(kind).lower())
        text = _text(value)
        if column and text and text.isalnum() and len(text) <= MAX_HASH_LENGTH:
            row[column] = text.upper()
    return row


_URL_IMAGE_ID = re.compile(r"/(\d+)\.[A-Za-z0-9]+$")


def image_id_of(image: dict) -> int | None:
    """The image's id; 2024+ listings omit it, but the CDN URL ends in '/<id>.jpeg'. Failing both, a stable
    negative id derived from the URL (never colliding with Civitai's positive ids); None without a URL."""
    image_id = _int(image.get("id")) if not isinstance(image.get("id"), str) else None
    if image_id is not None and image_id > 0:
        return image_id
    url = _text(image.get("url"))
    if url is None:
        return None
    match = _URL_IMAGE_ID.search(url)
    if match and _int(match.group(1)):
        return _int(match.group(1))
    return -(int.from_bytes(hashlib.blake2b(url.encode(), digest_size=8).digest(), "big") >> 1) or -1


def _image_row(model_id: int, version_id: int, position: int, image: dict) -> dict:
    image_id = image_id_of(image)
    if image_id is None:
        raise NormaliseError(f"version {version_id} image #{position} has neither an id nor a URL")
    meta = image.get("meta") if isinstance(image.get("meta"), dict) else None
    meta = meta or {}
    hashes = meta.get("hashes") if isinstance(meta.get("hashes"), dict) else {}
    checkpoint_hash = _text(meta.get("Model hash")) or _text(hashes.get("model"))
    level = _level(image_nsfw_level(image), f"version {version_id} image #{position}")
    return {
        "id": image_id,
        "version_id": version_id,
        "model_id": model_id,
        "position": position,
        "url": _text(image.get("url")),
        "width": _int32(image.get("width")),
        "height": _int32(image.get("height")),
        "nsfw_level": level,
        "nsfw": is_nsfw_level(level),
        "has_meta": bool(meta) or image.get("hasMeta") is True,
        "prompt": _text(meta.get("prompt")),
        "negative_prompt": _text(meta.get("negativePrompt")),
        "sampler": _text(meta.get("sampler")),
        "steps": _int32(meta.get("steps")),
        "cfg_scale": _float(meta.get("cfgScale")),
        "seed": _int(meta.get("seed")),
        "checkpoint_name": _text(meta.get("Model")),
        "checkpoint_hash": checkpoint_hash.upper() if checkpoint_hash else None,
    }


def _image_resource_rows(image_id: int, gallery_version_id: int, gallery_role: str, meta: object) -> list[dict]:
    """The gallery the image was posted to (it used that version), then every resource its meta names."""
    rows = [
        {"image_id": image_id, "version_id": gallery_version_id, "position": 0, "role": gallery_role,
         "sources": ["gallery"], "name": None, "hash": None, "ref_version_id": gallery_version_id, "weight": None}
    ]
    for position, ref in enumerate(extract_references(meta), start=1):
        rows.append(
            {"image_id": image_id, "version_id": gallery_version_id, "position": position, "role": ref.role,
             "sources": list(ref.sources), "name": ref.name, "hash": ref.hash, "ref_version_id": ref.version_id,
             "weight": ref.weight}
        )
    return rows
