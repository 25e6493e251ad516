"""Region masker for edits: which pixels an instruction may repaint.

The instruction parser gives a subject "<target> + <range>", e.g. "the cat + left side". Two cases:

- `RegionMasker.mask_for_subject` (change / remove / restyle something that is there): a proposer (segment-anything's
  automatic mask generator, `serving.studio.sam`) proposes masks; masks too small or too large for an object are
  dropped; each survivor's bounding box is cropped with a little padding, pixels outside the mask are filled with
  CLIP's mean colour, and the crop is scored by CLIP cosine to "a photo of {target}". The range words add a spatial
  prior (below); the best mask is dilated by `dilation_px` so the inpainting blends past the object's edge. When
  nothing survives, or the target is empty, the whole image is masked (source 'whole-image') and a warning says why.
- `RegionMasker.mask_for_addition` (add an object that is not there yet): nothing to segment, so a box is placed
  where the range words point and where the proposer found no object, and an ellipse inscribed in it is returned.

Spatial prior. Each recognised range word scores a mask (or a candidate box) in [0, 1] from its normalised geometry:
left = 1 - cx, right = cx, top = 1 - cy, bottom = cy, center = 1 - distance of the centroid from the image centre
(1 at the centre, 0 at a corner); foreground = mean(bottom edge, min(1, area / 25%)) - under a ground-plane view,
near things reach lower in the frame and look bigger - and background = 1 - foreground. Several words are averaged
("top left" = mean of top and left). For subjects the prior enters as `range_weight * prior` added to the CLIP
cosine: 0.05 by default, a nudge that decides between near-equal crops (two cats, "+ left") but cannot overturn a
clear CLIP preference. Without range words every mask gets the same prior, so CLIP alone decides.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)

SOURCES = ("sam+clip", "placement", "whole-image")
# Outside-the-mask pixels are painted CLIP's normalisation mean, so they are ~0 after CLIP's preprocessing.
FILL_RGB = (122, 116, 104)
# Range vocabulary: the word a user (or the parser) writes -> the direction it means.
RANGE_WORDS = {
    "left": "left", "leftmost": "left",
    "right": "right", "rightmost": "right",
    "top": "top", "upper": "top", "above": "top",
    "bottom": "bottom", "lower": "bottom", "below": "bottom",
    "center": "center", "centre": "center", "middle": "center", "central": "center",
    "background": "background", "distance": "background", "behind": "background",
    "foreground": "foreground", "front": "foreground",
}
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class RegionMask:
    """Where an edit may paint. `score` is the CLIP cosine of the chosen masked crop to "a photo of {target}"
    ('sam+clip'; the prior is not included), the placement score free-space + weighted prior ('placement'), or the
    whole image's CLIP cosine (0.0 with no target) for 'whole-image'."""

    mask: np.ndarray  # bool HxW, the input image's size
    score: float
    source: str  # 'sam+clip' | 'placement' | 'whole-image'
    bbox: tuple[int, int, int, int]  # x, y, w, h of the mask

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")


class MaskProposer(Protocol):
    """Class-agnostic object masks for an image: bool HxW arrays (the image's size, though the masker resizes)."""

    def propose(self, image: Image.Image) -> list[np.ndarray]: ...


class ClipLike(Protocol):
    """What the masker needs of a CLIP model (embedding.encoders.OpenClipEncoder fits): unit rows, one space."""

    def encode_text(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...


# --- subject parsing ------------------------------------------------------------------------------------------------

def range_directions(text: str) -> tuple[str, ...]:
    """The directions named in a range phrase, in order, without repeats: "top-left corner" -> ('top', 'left')."""
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        direction = RANGE_WORDS.get(word)
        if direction is not None and direction not in out:
            out.append(direction)
    return tuple(out)


def parse_subject(subject: str | None) -> tuple[str, tuple[str, ...]]:
    """"<target> + <range>" -> (target, directions). The split is at the last '+' when the part after it names a
    direction, is blank, or the '+' stands alone between spaces (and is not part of "++"); otherwise ("C++ logo",
    "a+b") the whole text is the target.
    A subject with no range part has no directions."""
    text = " ".join(str(subject or "").split())
    head, plus, tail = text.rpartition("+")
    if plus and not head.endswith("+"):
        directions = range_directions(tail)
        spaced = head.endswith(" ") and tail.startswith(" ")
        if directions or spaced or not tail.strip():
            return head.strip(), directions
    return text.strip(), ()


# --- image and mask helpers ----------------------------------------------------------------------------------------

def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: transparency composited over the fill colour, 16-bit/float stretched to 0-255."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"the image has no pixels ({image.width}x{image.height})")
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        scaled = np.nan_to_num((values - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(values))
        return Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*FILL_RGB, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _as_mask(raw: Any, height: int, width: int) -> np.ndarray | None:
    """A proposal as a bool HxW array of the image's size (nearest-resized if it is not), or None if unusable."""
    try:
        mask = np.asarray(raw)
    except Exception:  # noqa: BLE001 - a proposer handing back junk loses that proposal, not the edit
        return None
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2 or mask.size == 0:
        return None
    mask = mask > 0.5 if mask.dtype.kind == "f" else mask.astype(bool)
    if mask.shape != (height, width):
        small = Image.fromarray(mask.astype(np.uint8) * 255, "L")
        mask = np.asarray(small.resize((width, height), Image.Resampling.NEAREST)) > 127
    return mask if mask.any() else None


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """x, y, w, h of the True pixels ((0, 0, 0, 0) for an empty mask)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0, 0, 0, 0
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow a bool mask by `px` pixels in every direction: a (2px+1)-square max filter (no scipy), run as two 1-D
    torch max-pools over the mask's bounding box plus `px` only, so a small mask in a big image stays cheap."""
    px = int(min(max(px, 0), max(mask.shape)))
    out = mask.copy()
    x, y, w, h = mask_bbox(mask)
    if px == 0 or w == 0:
        return out
    y0, y1 = max(0, y - px), min(mask.shape[0], y + h + px)
    x0, x1 = max(0, x - px), min(mask.shape[1], x + w + px)
    region = torch.from_numpy(mask[y0:y1, x0:x1].astype(np.float32))[None, None]
    region = torch.nn.functional.max_pool2d(region, (1, 2 * px + 1), stride=1, padding=(0, px))
    region = torch.nn.functional.max_pool2d(region, (2 * px + 1, 1), stride=1, padding=(px, 0))
    out[y0:y1, x0:x1] = region[0, 0].numpy() > 0.5
    return out


def ellipse_mask(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """The ellipse inscribed in box (x, y, w, h), tested at pixel centres; never empty for a non-empty box."""
    x, y, w, h = box
    cx, cy, rx, ry = x + w / 2, y + h / 2, max(w / 2, 0.5), max(h / 2, 0.5)
    ys, xs = np.ogrid[:height, :width]
    return ((xs + 0.5 - cx) / rx) ** 2 + ((ys + 0.5 - cy) / ry) ** 2 <= 1.0


@dataclass(frozen=True)
class _Geometry:
    """Normalised geometry the spatial prior reads: centre, bottom edge, area fraction (all in [0, 1])."""

    cx: float
    cy: float
    bottom: float
    area: float


def _mask_geometry(mask: np.ndarray) -> _Geometry:
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    return _Geometry(cx=float((xs.mean() + 0.5) / w), cy=float((ys.mean() + 0.5) / h),
                     bottom=float((ys.max() + 1) / h), area=float(ys.size / (h * w)))


def spatial_prior(directions: Sequence[str], geometry: _Geometry) -> float:
    """How well a region agrees with the range directions, in [0, 1] (the module docstring gives each formula);
    0.0 when there are none, so it changes nothing."""
    if not directions:
        return 0.0
    foreground = 0.5 * geometry.bottom + 0.5 * min(1.0, geometry.area / 0.25)
    scores = {
        "left": 1.0 - geometry.cx,
        "right": geometry.cx,
        "top": 1.0 - geometry.cy,
        "bottom": geometry.cy,
        "center": 1.0 - min(1.0, math.hypot(geometry.cx - 0.5, geometry.cy - 0.5) / math.sqrt(0.5)),
        "foreground": foreground,
        "background": 1.0 - foreground,
    }
    known = [scores[d] for d in directions if d in scores]
    return float(np.mean(known)) if known else 0.0


def _touched_borders(mask: np.ndarray) -> int:
    return int(mask[0].any()) + int(mask[-1].any()) + int(mask[:, 0].any()) + int(mask[:, -1].any())


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


# --- the masker -----------------------------------------------------------------------------------------------------

class RegionMasker:
    """Picks the region an edit instruction refers to (SAM proposals scored by CLIP), or places one for an addition."""

    def __init__(
        self,
        proposer: MaskProposer,
        clip: ClipLike,
        *,
        dilation_px: int = 8,
        min_area_fraction: float = 0.002,
        max_area_fraction: float = 0.9,
        range_weight: float = 0.05,
        crop_padding: float = 0.1,
        addition_size: float = 1 / 3,
        placement_range_weight: float = 1.0,
        stuff_weight: float = 0.25,
    ) -> None:
        """`dilation_px` grows the chosen mask; proposals covering less than `min_area_fraction` or more than
        `max_area_fraction` of the image are dropped; `range_weight` scales the spatial prior against CLIP cosine;
        `crop_padding` pads a mask's box (fraction of its longer side) before CLIP sees it. For additions,
        `addition_size` is the box side as a fraction of the shorter image side, `placement_range_weight` weighs the
        range words against free space, and `stuff_weight` is how much a region touching 3+ image borders (sky,
        floor, wall: things a new object can stand in front of) counts as occupied."""
        if isinstance(dilation_px, bool) or not isinstance(dilation_px, int) or dilation_px < 0:
            raise ValueError(f"dilation_px must be a whole number >= 0, got {dilation_px!r}")
        if not 0.0 <= min_area_fraction < max_area_fraction <= 1.0:
            raise ValueError(f"need 0 <= min_area_fraction < max_area_fraction <= 1, got "
                             f"{min_area_fraction!r}, {max_area_fraction!r}")
        if not 0.0 < addition_size <= 1.0:
            raise ValueError(f"addition_size must be in (0, 1], got {addition_size!r}")
        for name, value in (("range_weight", range_weight), ("crop_padding", crop_padding),
                            ("placement_range_weight", placement_range_weight), ("stuff_weight", stuff_weight)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.proposer = proposer
        self.clip = clip
        self.dilation_px = dilation_px
        self.min_area_fraction = float(min_area_fraction)
        self.max_area_fraction = float(max_area_fraction)
        self.range_weight = float(range_weight)
        self.crop_padding = float(crop_padding)
        self.addition_size = float(addition_size)
        self.placement_range_weight = float(placement_range_weight)
        self.stuff_weight = min(float(stuff_weight), 1.0)

    # -- shared --

    def _proposals(self, rgb: Image.Image) -> tuple[list[np.ndarray], int]:
        """The proposer's masks that are usable and inside the size range, and how many it proposed in all."""
        raw = list(self.proposer.propose(rgb) or [])
        h, w = rgb.height, rgb.width
        kept = []
        for item in raw:
            mask = _as_mask(item, h, w)
            if mask is None:
                continue
            fraction = mask.sum() / (h * w)
            if self.min_area_fraction <= fraction <= self.max_area_fraction:
                kept.append(mask)
        return kept, len(raw)

    def _crop(self, rgb: np.ndarray, mask: np.ndarray) -> Image.Image:
        """The mask's padded bounding box with outside pixels filled, letterboxed to a square (CLIP centre-crops)."""
        h, w = mask.shape
        x, y, bw, bh = mask_bbox(mask)
        pad = max(2, round(self.crop_padding * max(bw, bh)))
        x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(w, x + bw + pad), min(h, y + bh + pad)
        crop = rgb[y0:y1, x0:x1].copy()
        crop[~mask[y0:y1, x0:x1]] = FILL_RGB
        side = max(crop.shape[0], crop.shape[1])
        square = np.empty((side, side, 3), dtype=np.uint8)
        square[:] = FILL_RGB
        oy, ox = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
        square[oy : oy + crop.shape[0], ox : ox + crop.shape[1]] = crop
        return Image.fromarray(square, "RGB")

    def _text_vector(self, target: str) -> np.ndarray:
        return _unit(self.clip.encode_text([f"a photo of {target}"]))[0]

    def _whole_image(self, rgb: Image.Image, target: str, why: str) -> RegionMask:
        logger.warning("region masker: %s; masking the whole image", why)
        score = 0.0
        if target:
            score = float(_unit(self.clip.encode_images([rgb]))[0] @ self._text_vector(target))
        mask = np.ones((rgb.height, rgb.width), dtype=bool)
        return RegionMask(mask=mask, score=score, source="whole-image", bbox=(0, 0, rgb.width, rgb.height))

    # -- existing subject --

    def mask_for_subject(self, image: Image.Image, subject: str) -> RegionMask:
        """The mask of the object the subject names ("the red car + left"), dilated by `dilation_px`; the whole
        image (source 'whole-image', with a warning) when the target is empty or no proposal survives."""
        rgb = to_rgb(image)
        target, directions = parse_subject(subject)
        if not target:
            return self._whole_image(rgb, target, f"the subject {subject!r} names no target")
        masks, proposed = self._proposals(rgb)
        if not masks:
            return self._whole_image(
                rgb, target, f"none of {proposed} proposed masks is usable and covers "
                f"{self.min_area_fraction:.1%}-{self.max_area_fraction:.0%} of the image")
        pixels = np.asarray(rgb)
        image_rows = _unit(self.clip.encode_images([self._crop(pixels, m) for m in masks]))
        cosines = image_rows @ self._text_vector(target)
        priors = np.array([spatial_prior(directions, _mask_geometry(m)) for m in masks])
        best = int(np.argmax(cosines + self.range_weight * priors))  # first of equals: the proposer's order
        chosen = dilate(masks[best], self.dilation_px)
        return RegionMask(mask=chosen, score=float(cosines[best]), source="sam+clip", bbox=mask_bbox(chosen))

    # -- addition --

    def mask_for_addition(self, image: Image.Image, subject: str) -> RegionMask:
        """An ellipse where an added object should go: a square box (side `addition_size` of the shorter image side)
        on a grid of positions, scored by free space (1 - mean occupancy, objects proposed by the proposer counting
        1, border-touching stuff `stuff_weight`) + `placement_range_weight` * the range prior, plus a small
        preference for the centre that only breaks ties."""
        # What the paper's method would add: an LLM/VLM reasoning about the layout - where such an object plausibly
        # goes in this scene (a bird in the sky or on a branch, a cup on the table: support surfaces and semantics,
        # not just free pixels) - and the object's size and footprint from the scene's depth and perspective
        # (monocular depth at the spot, the sizes of nearby objects) instead of a fixed fraction of the image.
        rgb = to_rgb(image)
        _, directions = parse_subject(subject)
        h, w = rgb.height, rgb.width
        occupancy = np.zeros((h, w), dtype=np.float64)
        for mask in self._proposals(rgb)[0]:
            weight = self.stuff_weight if _touched_borders(mask) >= 3 else 1.0
            occupancy[mask] = np.maximum(occupancy[mask], weight)
        table = np.zeros((h + 1, w + 1))
        table[1:, 1:] = occupancy.cumsum(0).cumsum(1)  # summed-area table: any box's occupancy in O(1)
        side = max(1, min(h, w, round(min(h, w) * self.addition_size)))
        steps = 13
        xs = np.unique(np.round(np.linspace(0, w - side, steps)).astype(int))
        ys = np.unique(np.round(np.linspace(0, h - side, steps)).astype(int))
        best: tuple[float, int, int] | None = None
        for y in ys:
            for x in xs:
                filled = table[y + side, x + side] - table[y, x + side] - table[y + side, x] + table[y, x]
                free = 1.0 - filled / (side * side)
                geometry = _Geometry(cx=(x + side / 2) / w, cy=(y + side / 2) / h, bottom=(y + side) / h,
                                     area=side * side / (h * w))
                score = (free + self.placement_range_weight * spatial_prior(directions, geometry)
                         + 0.01 * spatial_prior(("center",), geometry))
                if best is None or score > best[0] + 1e-12:
                    best = (score, int(x), int(y))
        assert best is not None  # xs and ys are never empty
        score, x, y = best
        box = (x, y, side, side)
        return RegionMask(mask=ellipse_mask(h, w, box), score=float(score), source="placement", bbox=box)


class NoProposals:
    """A proposer that proposes nothing (no SAM weights): subjects then mask the whole image, additions a placed
    box."""

    def propose(self, image: Image.Image) -> list[np.ndarray]:
        return []


class NoClip:
    """Stands in for CLIP when there are no proposals to score: the masker then only scores the whole image
    (always 0)."""

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return np.ones((len(texts), 1), dtype=np.float32)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.zeros((len(images), 1), dtype=np.float32)
