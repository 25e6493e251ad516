"""segment-anything as the region masker's proposer, and the masker a studio's settings ask for.

SAM's automatic mask generator proposes class-agnostic object masks (a grid of point prompts, filtered and
de-duplicated); `serving.studio.masker.RegionMasker` scores them with CLIP. Without SAM weights
(`ZOO_SAM_CHECKPOINT`) the masker has no proposals: subjects mask the whole image, additions get a placed box.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from serving.studio.masker import NoClip, NoProposals, RegionMasker, to_rgb

logger = logging.getLogger(__name__)

SAM_CHECKPOINT_URLS = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}
_MIN_SAM_SIDE = 8  # below this there is nothing for SAM to separate; the masker falls back to the whole image
NO_SAM_NOTE = "no SAM weights (set ZOO_SAM_CHECKPOINT): subjects mask the whole image, additions a placed box"


class MaskerError(RuntimeError):
    """The masker cannot be built as asked; the message says what is missing and how to fix it."""


class SamMaskProposer:
    """segment-anything's automatic mask generator (a grid of point prompts, filtered and de-duplicated).

    Give either `checkpoint`, a SAM weights file the user downloaded (ViT-H by default, `model_type` to match; see
    SAM_CHECKPOINT_URLS), or `model`, a built `Sam` (tests use a tiny random one). Nothing is ever downloaded here.
    Images larger than `max_side` are shrunk for SAM (it works at 1024 anyway) and the masks scaled back; images
    smaller than 8 px give no proposals. `min_mask_region_area` > 0 needs opencv; without it the option is off.
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        *,
        model: Any = None,
        model_type: str = "vit_h",
        device: str | None = None,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        min_mask_region_area: int = 0,
        max_side: int | None = 1024,
    ) -> None:
        try:
            from segment_anything import SamAutomaticMaskGenerator
        except ImportError as exc:
            raise MaskerError("SamMaskProposer needs segment-anything: pip install 'zoo[models]'") from exc
        if (checkpoint is None) == (model is None):
            raise ValueError("give exactly one of checkpoint (a SAM weights file) or model (a built Sam)")
        if max_side is not None and max_side < _MIN_SAM_SIDE:
            raise ValueError(f"max_side must be None or >= {_MIN_SAM_SIDE}, got {max_side!r}")
        if model is None:
            model = _load_sam(Path(checkpoint).expanduser(), model_type)
        if device is not None:
            model = model.to(device)
        elif checkpoint is not None:
            from embedding.encoders import default_device

            model = model.to(default_device())
        self.model = model.eval()
        self.max_side = max_side
        self.generator = SamAutomaticMaskGenerator(
            self.model,
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            min_mask_region_area=_usable_min_region_area(min_mask_region_area),
            output_mode="binary_mask",
        )

    def propose(self, image: Image.Image) -> list[np.ndarray]:
        """Bool HxW masks at the image's size, best first (SAM's predicted IoU x stability)."""
        rgb = to_rgb(image)
        w, h = rgb.size
        if min(w, h) < _MIN_SAM_SIDE:
            return []
        work = rgb
        if self.max_side is not None and max(w, h) > self.max_side:
            scale = self.max_side / max(w, h)
            work = rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
        records = self.generator.generate(np.asarray(work))
        records.sort(key=lambda r: -float(r.get("predicted_iou", 0.0)) * float(r.get("stability_score", 0.0)))
        masks = []
        for record in records:
            mask = np.asarray(record["segmentation"], dtype=bool)
            if work is not rgb:
                mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255, "L").resize(
                    (w, h), Image.Resampling.NEAREST)) > 127
            masks.append(mask)
        return masks


def _load_sam(path: Path, model_type: str):
    """A SAM of `model_type` with the weights of `path`, read before the model is built: a bad file fails fast,
    not after a ViT-H init."""
    from segment_anything import sam_model_registry

    if model_type not in sam_model_registry:
        raise ValueError(f"model_type must be one of {sorted(sam_model_registry)}, got {model_type!r}")
    if not path.is_file():
        url = SAM_CHECKPOINT_URLS.get(model_type, SAM_CHECKPOINT_URLS["vit_h"])
        raise MaskerError(f"no SAM checkpoint at {path}; download the {model_type} weights once ({url}) and pass that "
                          "file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = sam_model_registry[model_type](checkpoint=None)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - unpickling and shape errors alike
        raise MaskerError(f"cannot load {path} as a SAM {model_type} checkpoint: {exc}") from exc
    return model


def _usable_min_region_area(area: int) -> int:
    """`min_mask_region_area` as SAM can honour it: its small-region clean-up needs opencv; without it, off."""
    if area > 0:
        try:
            import cv2  # noqa: F401
        except ImportError:
            logger.warning("min_mask_region_area needs opencv (cv2), which is not installed; turning it off")
            return 0
    return area


def region_masker(sam_checkpoint: str | Path | None, sam_model_type: str, clip_model: str,
                  clip_pretrained: str) -> tuple[RegionMasker, str | None]:
    """The region masker of these settings and a note for the sidecar: SAM proposals scored by the configured CLIP,
    or, without SAM weights, one with no proposals (and a note saying so)."""
    if not sam_checkpoint:
        return RegionMasker(NoProposals(), NoClip()), NO_SAM_NOTE
    from embedding.encoders import OpenClipEncoder

    clip = OpenClipEncoder(clip_model, clip_pretrained)
    return RegionMasker(SamMaskProposer(sam_checkpoint, model_type=sam_model_type), clip), None
