"""The edit step on a warm pipeline: inpaint inside a mask, or img2img over the whole image, at the input's size.

    outcome = edit_image(manager, image=photo, mask=region.mask, mode="inpaint", checkpoint_path=ckpt,
                         checkpoint_sha256=sha, loras=[...], prompt="a blue square", steps=25, seed=1)
    outcome.result.image          # the input's size; outside the mask exactly the input's pixels

The pipeline works at a size that is a multiple of 8 (and at most `max_side` on the longer side, aspect kept); its
output is resized back to the input's size. Inpainting then pastes the generated pixels back through the mask:
every pixel outside the mask is copied from the input, so "nothing outside the mask changes" holds by construction,
whatever the pipeline did there (latent-space inpainting with a 4-channel UNet and the VAE round trip both touch
every pixel). `feather_px` softens the seam INSIDE the mask only (the blend weight ramps from 0 at the mask's edge
to 1 `feather_px` pixels in), so it never leaks outside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from serving.studio.generate import GenerationResult, generate
from serving.studio.masker import dilate, to_rgb
from serving.studio.model_files import EmbeddingUse, LoraUse
from serving.studio.pipelines import PipelineManager

MODES = ("inpaint", "img2img")
DEFAULT_MAX_SIDE = 768
DEFAULT_STRENGTH = {"inpaint": 1.0, "img2img": 0.6}


@dataclass
class EditOutcome:
    result: GenerationResult  # result.image is the final, composited image at the input's size
    mask: np.ndarray | None  # bool HxW at the input's size: where pixels may differ (None for img2img: everywhere)
    pipeline_size: tuple[int, int]  # (width, height) the pipeline ran at


def pipeline_size(width: int, height: int, max_side: int = DEFAULT_MAX_SIDE) -> tuple[int, int]:
    """(w, h): multiples of 8, at least 8, the longer side at most `max_side` (rounded down to 8), aspect kept."""
    if width < 1 or height < 1:
        raise ValueError(f"the image has no pixels ({width}x{height})")
    max_side = max(8, int(max_side) // 8 * 8)
    scale = min(1.0, max_side / max(width, height))
    w = max(8, round(width * scale / 8) * 8)
    h = max(8, round(height * scale / 8) * 8)
    return min(w, max_side), min(h, max_side)


def _bool_mask(mask: Any, width: int, height: int) -> np.ndarray:
    if isinstance(mask, Image.Image):
        array = np.asarray(mask.convert("L")) > 127
    else:
        array = np.asarray(mask)
        array = array > (127 if array.dtype == np.uint8 else 0.5) if array.dtype != bool else array
    if array.ndim != 2:
        raise ValueError(f"the mask must be 2-D (height x width), got shape {array.shape}")
    if array.shape != (height, width):
        small = Image.fromarray(array.astype(np.uint8) * 255, "L")
        array = np.asarray(small.resize((width, height), Image.NEAREST)) > 127
    return array


def composite(original: Image.Image, generated: Image.Image, mask: np.ndarray, feather_px: int = 0) -> Image.Image:
    """`generated` inside `mask`, `original` outside it, exactly (both RGB, the same size). With `feather_px` the
    blend weight ramps up inside the mask, and is 0 everywhere outside it."""
    base = np.asarray(original.convert("RGB"))
    new = np.asarray(generated.convert("RGB").resize(original.size, Image.LANCZOS))
    if feather_px > 0:
        # Distance-like ramp inside the mask: blur of the mask, rescaled so the edge is 0, then clipped to the mask.
        blurred = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255, "L")
                             .filter(ImageFilter.GaussianBlur(feather_px)), dtype=np.float32) / 255.0
        alpha = np.clip((blurred - 0.5) * 2.0, 0.0, 1.0) * mask
    else:
        alpha = mask.astype(np.float32)
    out = base.astype(np.float32) * (1.0 - alpha[..., None]) + new.astype(np.float32) * alpha[..., None]
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    out[~mask] = base[~mask]  # exact, whatever rounding did
    return Image.fromarray(out, "RGB")


def edit_image(
    manager: PipelineManager,
    *,
    image: Image.Image,
    mode: str,
    checkpoint_path: str | Path,
    checkpoint_sha256: str | None = None,
    loras: Sequence[LoraUse] = (),
    embeddings: Sequence[EmbeddingUse] = (),
    prompt: str,
    mask: Any = None,
    negative_prompt: str = "",
    steps: int = 25,
    cfg: float = 7.0,
    seed: int | None = -1,
    scheduler: str = "dpm++_2m_karras",
    strength: float | None = None,
    dilate_px: int = 0,
    feather_px: int = 0,
    max_side: int = DEFAULT_MAX_SIDE,
    model_name: str | None = None,
) -> EditOutcome:
    """Inpaint inside `mask` ("inpaint") or img2img the whole image ("img2img"); the result has the input's size."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rgb = to_rgb(image)
    pw, ph = pipeline_size(rgb.width, rgb.height, max_side)
    strength = DEFAULT_STRENGTH[mode] if strength is None else float(strength)
    if int(steps * strength) < 1:  # the pipelines need at least one denoising step
        strength = min(1.0, 1.0 / max(1, int(steps)) + 1e-6)
    region = _region(mask, rgb.size, dilate_px) if mode == "inpaint" else None
    mask_image = None
    if region is not None:
        mask_image = Image.fromarray(region.astype(np.uint8) * 255, "L").resize((pw, ph), Image.NEAREST)
    result = generate(
        manager, checkpoint_path=checkpoint_path, checkpoint_sha256=checkpoint_sha256, loras=loras,
        embeddings=embeddings, prompt=prompt,
        negative_prompt=negative_prompt, steps=steps, cfg=cfg, seed=seed, width=pw, height=ph, scheduler=scheduler,
        model_name=model_name, init_image=rgb.resize((pw, ph), Image.LANCZOS), mask_image=mask_image,
        strength=strength)
    _at_input_size(result, rgb, region, feather_px)
    result.parameters.extra = {**result.parameters.extra, "Edit mode": mode}
    result.parameters_text = result.parameters.to_text()
    result.metadata["edit"] = {
        "mode": mode, "pipeline_size": [pw, ph], "output_size": [rgb.width, rgb.height], "strength": strength,
        "mask_pixels": int(region.sum()) if region is not None else rgb.width * rgb.height,
        "feather_px": int(feather_px)}
    return EditOutcome(result=result, mask=region, pipeline_size=(pw, ph))


def _region(mask: Any, size: tuple[int, int], dilate_px: int) -> np.ndarray:
    """The inpainting mask as a bool array of the input's size, grown by `dilate_px`; never empty."""
    if mask is None:
        raise ValueError("inpainting needs a mask")
    region = _bool_mask(mask, *size)
    if dilate_px:
        region = dilate(region, int(dilate_px))
    if not region.any():
        raise ValueError("the mask is empty: nothing to inpaint")
    return region


def _at_input_size(result: GenerationResult, rgb: Image.Image, region: np.ndarray | None, feather_px: int) -> None:
    """The generated image back at the input's size: pasted through the mask (inpaint), else resized."""
    generated = result.image.convert("RGB")
    if region is not None:
        result.image = composite(rgb, generated, region, feather_px)
    else:
        result.image = generated.resize(rgb.size, Image.LANCZOS) if generated.size != rgb.size else generated
    result.parameters.width, result.parameters.height = rgb.size
