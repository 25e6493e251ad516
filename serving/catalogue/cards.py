"""A version's card and a model's card: what a person deciding whether to use a model wants to read (description
by the preferred-description rule, trigger words, recommended weight, files with every hash kind, licence, SFW
example images with their prompts, what it is used with), for served versions only."""

from __future__ import annotations

from config import Settings
from crawlers.nsfw import LEVEL_NAMES
from db.descriptions import preferred_description_rows
from db.links import HASH_COLUMNS
from db.version_cards import first_sfw_images, model_version_ids, sfw_images, used_with, version_files, version_row
from embedding.describe_card import default_weight, trigger_words_or_trained
from serving.catalogue.served import civitai_url, level_of, paste_tag, role_of, served_row, summary

IMAGE_FIELDS = ("id", "url", "width", "height", "prompt", "negative_prompt", "sampler", "steps", "cfg_scale", "seed")


def version_card(retriever, settings: Settings, version_id: int) -> dict | None:
    """The card of a served version; None for an unknown, NSFW, deleted or otherwise unserved one."""
    index = retriever.search_engine.index
    row = served_row(index, version_id)
    if row is None:
        return None
    with retriever.db.connect() as conn:
        version = version_row(conn, version_id)
        if version is None:  # left the catalogue after this index generation was built
            return None
        described = preferred_description_rows(conn, retriever.describer_key, [version_id]).get(version_id, {})
        files = version_files(conn, version_id)
        images = sfw_images(conn, version_id, settings.max_content_level)
        linked = used_with(conn, version_id, checkpoint=version["model_type"] == "Checkpoint")
    return _card(index, row, version, described, files, images, linked, settings.civitai_base_url)


def model_card(retriever, settings: Settings, model_id: int) -> dict | None:
    """A model: the card of its newest served version and a summary of each of its served versions."""
    index = retriever.search_engine.index
    with retriever.db.connect() as conn:
        served = [v for v in model_version_ids(conn, model_id) if served_row(index, v) is not None]
    if not served:
        return None
    card = version_card(retriever, settings, served[0])
    if card is None:
        return None
    versions = [summary(index, served_row(index, v), settings.civitai_base_url) for v in served]
    return {"model_id": int(model_id), "name": card["name"], "type": card["type"], "creator": card["creator"],
            "tags": card["tags"], "licence": card["licence"], "content_level": card["content_level"],
            "versions": versions, "latest": card}


def thumbnails(retriever, settings: Settings, version_ids: list[int]) -> dict[int, dict]:
    """The first SFW example image (id, url, width, height) of each version that has one: a result page's
    thumbnails, under the same image rule as the cards."""
    if not version_ids:
        return {}
    with retriever.db.connect() as conn:
        return first_sfw_images(conn, version_ids, settings.max_content_level)


def _card(index, row: int, version: dict, described: dict, files: list[dict], images: list[dict],
          linked: list[dict], base_url: str) -> dict:
    model_type = version["model_type"]
    weight = described.get("recommended_weight")
    checkpoint = model_type == "Checkpoint"
    used = [dict(summary(index, r, base_url), image_count=link["image_count"],
                 sfw_image_count=link["sfw_image_count"], avg_weight=link["avg_weight"])
            for link in linked if (r := served_row(index, link["version_id"])) is not None]
    return {
        "model_id": version["model_id"], "version_id": version["version_id"], "name": version["model_name"],
        "version_name": version["version_name"], "type": model_type, "base_model": version["base_model"],
        "base_model_family": version["base_model_family"],
        "kind": described.get("kind") or ("checkpoint" if checkpoint else "other"),
        "role": role_of(index, row), "content_level": level_of(index, row),
        "description": described.get("text") or "",
        "trigger_words": trigger_words_or_trained(described.get("trigger_words"), version["trained_words"]),
        "recommended_weight": weight if weight is not None else default_weight(model_type),
        "creator": version["creator"], "tags": list(version["tags"] or ()),
        "downloads": int(version["version_download_count"] or 0),
        "published_at": version["published_at"] or version["created_at"],
        "licence": {"commercial_use": list(version["allow_commercial_use"] or ()),
                    "no_credit": version["allow_no_credit"], "derivatives": version["allow_derivatives"],
                    "different_license": version["allow_different_license"]},
        "files": [_file(f) for f in files], "images": [_image(i) for i in images],
        "used_with_checkpoints": [] if checkpoint else used, "used_with_adapters": used if checkpoint else [],
        "civitai_url": civitai_url(base_url, version["model_id"], version["version_id"]),
        "download_url": version["download_url"],
        "lora_tag": paste_tag(model_type, version["model_name"], version["primary_file_name"], version["version_id"],
                              weight),
    }


def _file(row: dict) -> dict:
    return {"id": row["id"], "name": row["name"], "type": row["type"], "primary": row["is_primary"],
            "size_kb": row["size_kb"], "format": row["format"], "fp": row["fp"],
            "hashes": {column: row[column] for column in HASH_COLUMNS if row[column]},
            "pickle_scan": row["pickle_scan"], "virus_scan": row["virus_scan"]}


def _image(row: dict) -> dict:
    return {**{name: row[name] for name in IMAGE_FIELDS}, "content_level": LEVEL_NAMES.get(int(row["level"]), "")}

