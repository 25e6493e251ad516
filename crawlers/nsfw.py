"""The NSFW policy, in one place: which example images and which models the zoo never serves, and why.

Levels follow Civitai's bitmask (API.md 1.7): PG=1, PG13=2, R=4, X=8, XXX=16, Blocked=32. Legacy (2023) images carry
strings None/Soft/Mature/X or a boolean instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.settings import CONTENT_LEVELS

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


# ---- content levels: how far a served (SFW) model goes, like Civitai's browsing levels ----------------------------

LEVEL_NAMES = {value: name for name, value in CONTENT_LEVELS.items()}
# A level counts when at least this share of a model's rated example images hold it: a stray image does not set it,
# and above half the model is NSFW anyway (classify_model).
LEVEL_IMAGE_SHARE = 1 / 3
# What tags say about a model, after Civitai's level guide: PG-13 revealing clothing and sexy poses, R partial
# nudity and sexual themes, X explicit.
TAG_LEVELS = {
    "bikini": 2, "swimsuit": 2, "cleavage": 2, "pinup": 2, "pin-up": 2, "sexy": 2, "lingerie": 2, "underwear": 2,
    "seductive": 2, "boudoir": 4, "ecchi": 4, "suggestive": 4, "topless": 4,
    "nsfw": 8, "nude": 8, "nudity": 8, "naked": 8, "erotic": 8, "hentai": 8, "sex": 16, "porn": 16,
}


@dataclass(frozen=True)
class ContentLevel:
    level: int  # 1 PG, 2 PG-13, 4 R, 8 X, 16 XXX
    reason: str

    @property
    def name(self) -> str:
        return LEVEL_NAMES[self.level]


def content_level(nsfw: bool, nsfw_level: int | None, tags: list[str], image_levels: list[int | None]) -> ContentLevel:
    """A model's content level and why: the highest of what its nsfwLevel bitmask says (2024+), what a fair share
    of its rated example images hold, and what its tags say; an NSFW model is R at least."""
    found = [ContentLevel(1, "default: nothing says more than PG")]
    if nsfw_level:
        bits = [bit for bit in (16, 8, 4, 2, 1) if nsfw_level & bit] or ([16] if nsfw_level & 32 else [])
        if bits:
            found.append(ContentLevel(bits[0], f"nsfwLevel {nsfw_level}"))
    rated = [level for level in image_levels if level]
    for bit in (16, 8, 4, 2):
        share = sum(1 for level in rated if level >= bit) / len(rated) if rated else 0.0
        if share >= LEVEL_IMAGE_SHARE:
            found.append(ContentLevel(bit, f"images: {share:.0%} of {len(rated)} rated at {LEVEL_NAMES[bit]} or above"))
            break
    for tag in tags:
        level = TAG_LEVELS.get(tag.strip().lower())
        if level:
            found.append(ContentLevel(level, f"tag {tag.strip().lower()!r}"))
    if nsfw:
        found.append(ContentLevel(4, "nsfw model"))
    return max(found, key=lambda found_level: found_level.level)
