"""The NSFW policy, in one place: which example images and which models the zoo never serves, and why.

Levels follow Civitai's bitmask (API.md 1.7): PG=1, PG13=2, R=4, X=8, XXX=16, Blocked=32. Legacy (2023) images carry
strings None/Soft/Mature/X or a boolean instead.
"""

from __future__ import annotations

from dataclasses import dataclass

NSFW_BITS = 4 | 8 | 16 | 32  # R, X, XXX, Blocked
_LEVEL_BY_NAME = {"none": 1, "pg": 1, "soft": 2, "pg13": 2, "mature": 4, "r": 4, "x": 8, "xxx": 16, "blocked": 32}
# Legacy rule: a model whose rated example images are mostly Mature/X is NSFW even without the flag.
IMAGE_SHARE_THRESHOLD = 0.5


@dataclass(frozen=True)
class NsfwDecision:
    nsfw: bool
    reason: str


def _level(value: object) -> int | None:
    if isinstance(value, bool):
        return 4 if value else 1
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str):
        return _LEVEL_BY_NAME.get(value.strip().lower())
    return None


def image_nsfw_level(image: dict) -> int | None:
    """The image's level (1..32), from `nsfwLevel` (int or string) or the legacy `nsfw`; None when unrated."""
    level = _level(image.get("nsfwLevel"))
    return level if level is not None else _level(image.get("nsfw"))


def is_nsfw_level(level: int | None) -> bool:
    """R or worse. Unrated images are not NSFW by level (the model-level rules still apply)."""
    return level is not None and bool(level & NSFW_BITS)


def classify_model(model: dict, image_levels: list[int | None]) -> NsfwDecision:
    """Decide whether a model is NSFW: its flag, its nsfwLevel bitmask, else (legacy) its example images."""
    if model.get("nsfw") is True:
        return NsfwDecision(True, "flag: nsfw is true")
    level = model.get("nsfwLevel")
    if isinstance(level, int) and not isinstance(level, bool) and level > 0:  # 0 means unrated
        if level & NSFW_BITS:
            return NsfwDecision(True, f"level: nsfwLevel {level} has R/X/XXX/Blocked bits")
        return NsfwDecision(False, f"sfw: nsfwLevel {level}")
    rated = [lv for lv in image_levels if lv is not None]
    explicit = sum(1 for lv in rated if is_nsfw_level(lv))
    if rated and explicit / len(rated) > IMAGE_SHARE_THRESHOLD:
        return NsfwDecision(True, f"images: {explicit} of {len(rated)} example images are Mature/X")
    return NsfwDecision(False, f"sfw: flag false, {explicit} of {len(rated)} example images Mature/X")
