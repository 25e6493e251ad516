"""serving.studio.masker: selection, dilation, spatial prior, size filter and fallback with a deterministic proposer and a
colour-reading CLIP stand-in; placement for additions; odd inputs; and the real code paths (segment-anything's
automatic mask generator, open_clip) with tiny random models built here. Nothing is downloaded."""

from __future__ import annotations

import logging
import math
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from embedding.encoders import OpenClipEncoder
from serving.studio.masker import (
    FILL_RGB,
    RegionMask,
    RegionMasker,
    dilate,
    ellipse_mask,
    mask_bbox,
    parse_subject,
)
from serving.studio.sam import MaskerError, SamMaskProposer, region_masker

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)
WORD_COLOURS = {"red": RED, "blue": BLUE, "green": GREEN}
TINY_CLIP_NAME = "zoo-test-masker-tiny-clip"
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 1},
}


# --- stand-ins ------------------------------------------------------------------------------------------------------

def _colour_vector(rgb) -> np.ndarray:
    return np.asarray(rgb, dtype=np.float64) - 127.5


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return (v / n if n > 0 else v).astype(np.float32)


class ColourClip:
    """CLIP stand-in: an image is its mean colour (fill pixels ignored), a text is the sum of its colour words."""

    def __init__(self) -> None:
        self.image_batches: list[int] = []

    def encode_text(self, texts):
        rows = []
        for text in texts:
            vec = np.zeros(3)
            for word, rgb in WORD_COLOURS.items():
                if word in text.lower():
                    vec += _colour_vector(rgb)
            rows.append(_unit(vec))
        return np.stack(rows)

    def encode_images(self, images):
        self.image_batches.append(len(images))
        rows = []
        for image in images:
            pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
            kept = pixels[~(pixels == FILL_RGB).all(axis=1)]
            rows.append(_unit(_colour_vector(kept.mean(axis=0))) if len(kept) else np.zeros(3, np.float32))
        return np.stack(rows)


class FixedProposer:
    """Returns the masks it was given (copies), whatever the image; counts calls."""

    def __init__(self, masks) -> None:
        self.masks = list(masks)
        self.calls = 0

    def propose(self, image):
        self.calls += 1
        return [np.array(m, copy=True) if isinstance(m, np.ndarray) else m for m in self.masks]


class HalfProposer:
    """Left half of whatever image it sees, plus junk a sloppy proposer might return (all must be survived)."""

    def propose(self, image):
        h, w = image.height, image.width
        left = np.zeros((h, w), bool)
        left[:, : max(1, w // 2)] = True
        odd_size = np.ones((10, 10), np.float32)  # wrong size: resized to the image
        odd_size[:, 5:] = 0.0
        return [left, odd_size, left[None], None, np.zeros((0,)), np.zeros((h, w), bool), "junk"]


def _box(h, w, top, left, bottom, right) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[top:bottom, left:right] = True
    return mask


def _paint(size, background, regions) -> Image.Image:
    h, w = size
    pixels = np.empty((h, w, 3), np.uint8)
    pixels[:] = background
    for mask, colour in regions:
        pixels[mask] = colour
    return Image.fromarray(pixels, "RGB")


S = 64
SQUARE = _box(S, S, 24, 24, 40, 40)  # 16x16 red square in the middle, 6.25% of the image
BLUE_BLOCK = _box(S, S, 2, 2, 18, 18)  # a piece of the blue background
MIXED = _box(S, S, 24, 16, 40, 32)  # half the square, half background


@pytest.fixture
def red_square() -> Image.Image:
    return _paint((S, S), BLUE, [(SQUARE, RED)])


# --- subject parsing and helpers --------------------------------------------------------------------------------

def test_parse_subject() -> None:
    assert parse_subject("the cat + left side") == ("the cat", ("left",))
    assert parse_subject("the cat+top-left corner") == ("the cat", ("top", "left"))
    assert parse_subject("the tree + background") == ("the tree", ("background",))
    assert parse_subject("the dog") == ("the dog", ())
    assert parse_subject("the dog + ") == ("the dog", ())
    assert parse_subject("the dog + somewhere nice") == ("the dog", ())
    assert parse_subject("C++ logo") == ("C++ logo", ())
    assert parse_subject("C++ logo + upper middle") == ("C++ logo", ("top", "center"))
    assert parse_subject("") == ("", ())
    assert parse_subject("+") == ("", ())
    assert parse_subject(None) == ("", ())


def test_dilate_and_ellipse_helpers() -> None:
    point = np.zeros((9, 9), bool)
    point[4, 4] = True
    assert mask_bbox(dilate(point, 3)) == (1, 1, 7, 7) and dilate(point, 3).sum() == 49
    assert (dilate(point, 0) == point).all() and dilate(point, 0) is not point
    assert dilate(point, 100).all()  # clipped to the image, no error
    assert mask_bbox(np.zeros((4, 4), bool)) == (0, 0, 0, 0)
    ellipse = ellipse_mask(100, 100, (10, 20, 40, 40))
    assert mask_bbox(ellipse) == (10, 20, 40, 40)
    assert ellipse.sum() == pytest.approx(math.pi * 20 * 20, rel=0.03)
    assert ellipse_mask(5, 5, (2, 2, 1, 1)).sum() == 1


def test_region_mask_and_constructor_validation() -> None:
    with pytest.raises(ValueError, match="source"):
        RegionMask(mask=np.ones((2, 2), bool), score=0.0, source="magic", bbox=(0, 0, 2, 2))
    proposer, clip = FixedProposer([]), ColourClip()
    for bad in ({"dilation_px": -1}, {"dilation_px": 2.5}, {"min_area_fraction": 0.5, "max_area_fraction": 0.4},
                {"max_area_fraction": 1.5}, {"range_weight": -1}, {"range_weight": float("nan")},
                {"addition_size": 0}):
        with pytest.raises(ValueError):
            RegionMasker(proposer, clip, **bad)


# --- selection ------------------------------------------------------------------------------------------------------

def test_red_square_wins_for_its_subject(red_square: Image.Image) -> None:
    clip = ColourClip()
    masker = RegionMasker(FixedProposer([BLUE_BLOCK, MIXED, SQUARE]), clip, dilation_px=0)
    result = masker.mask_for_subject(red_square, "the red square + center")
    assert result.source == "sam+clip"
    assert result.mask.dtype == bool and result.mask.shape == (S, S)
    assert (result.mask == SQUARE).all()
    assert result.bbox == (24, 24, 16, 16)
    assert result.score == pytest.approx(1.0, abs=1e-5)
    assert clip.image_batches == [3]  # all crops in one batch
    # CLIP decides, not the proposer's order: the blue subject picks the blue block.
    blue = masker.mask_for_subject(red_square, "the blue patch")
    assert (blue.mask == BLUE_BLOCK).all()


def test_dilation_grows_the_mask_by_dilation_px(red_square: Image.Image) -> None:
    masker = RegionMasker(FixedProposer([BLUE_BLOCK, SQUARE]), ColourClip(), dilation_px=8)
    result = masker.mask_for_subject(red_square, "the red square")
    assert result.bbox == (24 - 8, 24 - 8, 16 + 16, 16 + 16)
    assert result.mask[SQUARE].all()
    assert result.mask.sum() == 32 * 32
    corner = _box(S, S, 0, 0, 10, 10)
    edge_masker = RegionMasker(FixedProposer([corner]), ColourClip(), dilation_px=8)
    edge = edge_masker.mask_for_subject(_paint((S, S), BLUE, [(corner, RED)]), "red")
    assert edge.bbox == (0, 0, 18, 18)  # clipped at the image border


def test_range_prior_breaks_a_tie_between_identical_objects() -> None:
    left, right = _box(S, S, 24, 6, 36, 18), _box(S, S, 24, 46, 36, 58)
    image = _paint((S, S), BLUE, [(left, RED), (right, RED)])
    for order in ([left, right], [right, left]):
        masker = RegionMasker(FixedProposer(order), ColourClip(), dilation_px=0)
        assert (masker.mask_for_subject(image, "the red square + left side").mask == left).all()
        assert (masker.mask_for_subject(image, "the red square + right").mask == right).all()
        assert (masker.mask_for_subject(image, "the red square+rightmost").mask == right).all()
    # Vertical words work the same way.
    top, bottom = _box(S, S, 4, 26, 16, 38), _box(S, S, 46, 26, 58, 38)
    stacked = _paint((S, S), BLUE, [(top, RED), (bottom, RED)])
    masker = RegionMasker(FixedProposer([top, bottom]), ColourClip(), dilation_px=0)
    assert (masker.mask_for_subject(stacked, "the red square + bottom").mask == bottom).all()
    assert (masker.mask_for_subject(stacked, "the red square + upper part").mask == top).all()


def test_range_prior_does_not_overturn_a_clear_clip_choice() -> None:
    red, blue = _box(S, S, 24, 46, 36, 58), _box(S, S, 24, 6, 36, 18)
    image = _paint((S, S), GREEN, [(red, RED), (blue, BLUE)])
    masker = RegionMasker(FixedProposer([blue, red]), ColourClip(), dilation_px=0)
    assert (masker.mask_for_subject(image, "the red square + left").mask == red).all()


def test_masks_too_small_or_too_large_are_dropped(red_square: Image.Image) -> None:
    tiny_red = _box(S, S, 30, 30, 32, 32)  # 4 px = 0.1% < 0.2%, and pure red: it would win if kept
    huge_blue = ~SQUARE  # all the background: 94% > 90%, and pure blue
    assert huge_blue.mean() > 0.9 and tiny_red.mean() < 0.002
    clip = ColourClip()
    masker = RegionMasker(FixedProposer([tiny_red, huge_blue, SQUARE, BLUE_BLOCK]), clip, dilation_px=0)
    assert (masker.mask_for_subject(red_square, "the red square").mask == SQUARE).all()
    assert (masker.mask_for_subject(red_square, "the blue sky").mask == BLUE_BLOCK).all()
    assert clip.image_batches == [2, 2]  # only the two in-range masks reached CLIP
    # The bounds are the constructor's: a tighter max drops the square too.
    strict = RegionMasker(FixedProposer([SQUARE, BLUE_BLOCK]), ColourClip(), dilation_px=0, max_area_fraction=0.05)
    assert strict.mask_for_subject(red_square, "the red square").source == "whole-image"


def test_whole_image_fallback(red_square: Image.Image, caplog: pytest.LogCaptureFixture) -> None:
    tiny = _box(S, S, 30, 30, 32, 32)
    for proposals in ([], [tiny, np.ones((S, S), bool)], [np.zeros((S, S), bool)]):
        masker = RegionMasker(FixedProposer(proposals), ColourClip())
        with caplog.at_level(logging.WARNING, logger="serving.studio.masker"):
            result = masker.mask_for_subject(red_square, "the red square + left")
        assert result.source == "whole-image"
        assert result.mask.all() and result.mask.shape == (S, S) and result.bbox == (0, 0, S, S)
        assert -1.0 <= result.score <= 1.0
    assert "whole image" in caplog.text
    # An empty target has nothing to match: whole image, without asking the proposer.
    proposer = FixedProposer([SQUARE])
    for subject in ("", "   ", "+ left", "+"):
        result = RegionMasker(proposer, ColourClip()).mask_for_subject(red_square, subject)
        assert result.source == "whole-image" and result.score == 0.0
    assert proposer.calls == 0


# --- additions ------------------------------------------------------------------------------------------------------

A = 96


def _occupied_bottom() -> tuple[Image.Image, list[np.ndarray]]:
    objects = [_box(A, A, 52, 4, 92, 44), _box(A, A, 52, 52, 92, 92)]
    return _paint((A, A), BLUE, [(objects[0], RED), (objects[1], GREEN)]), objects


def test_addition_goes_to_the_named_free_side() -> None:
    image, objects = _occupied_bottom()
    occupied = objects[0] | objects[1]
    masker = RegionMasker(FixedProposer(objects), ColourClip())
    result = masker.mask_for_addition(image, "add a bird + top left")
    x, y, w, h = result.bbox
    assert result.source == "placement" and result.mask.dtype == bool and result.mask.shape == (A, A)
    assert w == h == 32  # a third of the shorter side
    assert x + w / 2 < A / 2 and y + h / 2 < A / 2
    assert not (result.mask & occupied).any()
    assert result.mask.sum() == pytest.approx(math.pi * 16 * 16, rel=0.05)  # an ellipse in its box
    assert mask_bbox(result.mask) == result.bbox
    right = masker.mask_for_addition(image, "add a bird + top right")
    assert right.bbox[0] + right.bbox[2] / 2 > A / 2 and not (right.mask & occupied).any()
    assert result.score > 1.0  # all free (1.0) plus a positive range prior


def test_addition_avoids_occupied_areas_without_range_words() -> None:
    wall_of_things = _box(A, A, 6, 4, 90, 50)
    image = _paint((A, A), BLUE, [(wall_of_things, RED)])
    result = RegionMasker(FixedProposer([wall_of_things]), ColourClip()).mask_for_addition(image, "add a lamp")
    assert result.bbox[0] >= 50 and not (result.mask & wall_of_things).any()
    # With nothing proposed, the tie-break puts it in the middle.
    empty = RegionMasker(FixedProposer([]), ColourClip()).mask_for_addition(image, "add a lamp")
    x, y, w, h = empty.bbox
    assert abs(x + w / 2 - A / 2) <= 2 and abs(y + h / 2 - A / 2) <= 2


def test_addition_prefers_free_space_near_the_named_side() -> None:
    # The bottom-left is occupied, so "bottom left" settles next to the object, not on it.
    blocker = _box(A, A, 60, 0, 96, 40)
    image = _paint((A, A), BLUE, [(blocker, RED)])
    result = RegionMasker(FixedProposer([blocker]), ColourClip()).mask_for_addition(image, "add a dog + bottom left")
    x, y, w, h = result.bbox
    assert not (result.mask & blocker).any()
    assert y + h / 2 > A / 2 or x + w / 2 < A / 2  # still on the named side in one of the two axes


# --- odd input ------------------------------------------------------------------------------------------------------

def _odd_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    return [noise.convert("L"), Image.new("RGBA", (30, 20), (255, 0, 0, 0)), noise.convert("P"),
            Image.new("I;16", (33, 17)), Image.fromarray(rng.random((12, 9)).astype(np.float32), "F"),
            noise.convert("CMYK"), noise.convert("1"), Image.new("RGB", (1, 1)), Image.new("RGB", (3, 2)),
            Image.new("RGB", (200, 1))]


SUBJECTS = ["", "   ", "+", "the cat", "the cat + ", "+ left", "C++ logo", "\x00\ud800", "red " * 5000,
            "the red thing + top left foreground"]


def test_odd_images_and_subjects_never_crash() -> None:
    masker = RegionMasker(HalfProposer(), ColourClip())
    for image in _odd_images():
        for subject in SUBJECTS:
            for method in (masker.mask_for_subject, masker.mask_for_addition):
                result = method(image, subject)
                assert result.mask.dtype == bool and result.mask.shape == (image.height, image.width)
                assert result.mask.any() and result.source in ("sam+clip", "placement", "whole-image")
                x, y, w, h = result.bbox
                assert 0 <= x and 0 <= y and x + w <= image.width and y + h <= image.height and w > 0 and h > 0
                assert math.isfinite(result.score)
    with pytest.raises(TypeError):
        masker.mask_for_subject(np.zeros((4, 4, 3), np.uint8), "the cat")  # type: ignore[arg-type]


# --- real code paths with tiny random models --------------------------------------------------------------------

def _tiny_sam():
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    dim, size, patch = 16, 64, 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=size, patch_size=patch, embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0, out_chans=dim,
            qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=False, window_size=0,
            global_attn_indexes=(),
        ),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(size // patch, size // patch),
                                     input_image_size=(size, size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=32, num_heads=2),
                                 transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=16),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


@pytest.fixture(scope="module")
def sam_proposer() -> SamMaskProposer:
    # Random weights predict poor masks: the quality filters are off so some come through.
    return SamMaskProposer(model=_tiny_sam(), points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)


@pytest.fixture(scope="module")
def tiny_clip() -> OpenClipEncoder:
    return OpenClipEncoder(TINY_CLIP_NAME, pretrained=None, model_config=TINY_CLIP, device="cpu", batch_size=8)


def test_tiny_sam_through_the_automatic_mask_generator(sam_proposer: SamMaskProposer) -> None:
    rng = np.random.default_rng(0)
    for h, w in ((64, 64), (40, 70)):
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        masks = sam_proposer.propose(image)
        assert masks, "the tiny SAM with filters off should propose something"
        for mask in masks:
            assert isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == (h, w)
    assert sam_proposer.propose(Image.new("RGB", (5, 5))) == []  # too small to segment
    gray = sam_proposer.propose(Image.new("L", (64, 48), 128))
    assert all(m.shape == (48, 64) for m in gray)


def test_sam_proposer_shrinks_big_images_and_scales_masks_back() -> None:
    proposer = SamMaskProposer(model=_tiny_sam(), points_per_side=2, pred_iou_thresh=0.0,
                               stability_score_thresh=0.0, max_side=32)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (80, 100, 3), dtype=np.uint8))
    masks = proposer.propose(image)
    assert all(m.shape == (80, 100) and m.dtype == bool for m in masks)


def test_sam_proposer_construction_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        SamMaskProposer()
    with pytest.raises(ValueError, match="exactly one"):
        SamMaskProposer(tmp_path / "x.pth", model=_tiny_sam())
    with pytest.raises(MaskerError, match="sam_vit_h_4b8939.pth"):
        SamMaskProposer(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="model_type"):
        SamMaskProposer(tmp_path / "missing.pth", model_type="vit_xxl")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(MaskerError, match="cannot load"):
        SamMaskProposer(garbage, model_type="vit_b")


def test_sam_proposer_min_region_area_without_opencv(caplog: pytest.LogCaptureFixture) -> None:
    try:
        import cv2  # noqa: F401
    except ImportError:
        with caplog.at_level(logging.WARNING, logger="serving.studio.sam"):
            proposer = SamMaskProposer(model=_tiny_sam(), points_per_side=2, pred_iou_thresh=0.0,
                                       stability_score_thresh=0.0, min_mask_region_area=20)
        assert "opencv" in caplog.text and proposer.generator.min_mask_region_area == 0
    else:
        proposer = SamMaskProposer(model=_tiny_sam(), points_per_side=2, pred_iou_thresh=0.0,
                                   stability_score_thresh=0.0, min_mask_region_area=20)
        assert proposer.generator.min_mask_region_area == 20


def test_without_sam_weights_subjects_mask_the_whole_image(red_square: Image.Image) -> None:
    masker, note = region_masker(None, "vit_h", "ViT-L-14", "openai")  # no CLIP is loaded without SAM
    assert note is not None and "ZOO_SAM_CHECKPOINT" in note
    region = masker.mask_for_subject(red_square, "the red square")
    assert region.source == "whole-image" and region.mask.all() and region.score == 0.0
    assert masker.mask_for_addition(red_square, "add a bird + top right").source == "placement"


def test_real_clip_code_path_shapes(tiny_clip: OpenClipEncoder, red_square: Image.Image) -> None:
    masker = RegionMasker(FixedProposer([BLUE_BLOCK, MIXED, SQUARE]), tiny_clip, dilation_px=2)
    result = masker.mask_for_subject(red_square, "the red square + center")
    assert result.source == "sam+clip" and result.mask.shape == (S, S) and result.mask.dtype == bool
    assert -1.0 - 1e-5 <= result.score <= 1.0 + 1e-5
    assert any((dilate(m, 2) == result.mask).all() for m in (BLUE_BLOCK, MIXED, SQUARE))
    fallback = RegionMasker(FixedProposer([]), tiny_clip).mask_for_subject(red_square, "the red square")
    assert fallback.source == "whole-image" and -1.0 - 1e-5 <= fallback.score <= 1.0 + 1e-5


def test_tiny_sam_and_tiny_clip_end_to_end(sam_proposer: SamMaskProposer, tiny_clip: OpenClipEncoder,
                                           red_square: Image.Image) -> None:
    masker = RegionMasker(sam_proposer, tiny_clip, min_area_fraction=0.0, max_area_fraction=1.0)
    for image in (red_square.convert("RGBA"), red_square.convert("L")):
        result = masker.mask_for_subject(image, "the red square + left")
        assert result.mask.shape == (S, S) and result.mask.dtype == bool and result.mask.any()
        added = masker.mask_for_addition(image, "add a bird + top right")
        assert added.source == "placement" and added.mask.shape == (S, S) and added.mask.any()
