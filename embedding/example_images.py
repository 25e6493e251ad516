"""Example images for the model describers: fetched through an ImageFetcher, shrunk for a model, inlined as data URIs.

Fetching (scheme checks, byte, pixel and time caps, the disk cache) is ImageFetcher's job; this module only adds
what a describer needs on top: a size a model can take, and a data: URI for endpoints that cannot fetch URLs.
Any image that cannot be had yields None and the describer goes on without it.
"""

from __future__ import annotations

import base64
import io
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Pillow comes with the model stack; card-text and text-only endpoints work without it
    from PIL import Image

    from embedding.image_fetch import ImageFetcher

log = logging.getLogger(__name__)

MAX_SIDE = 768


def load_image(url: str, *, max_side: int = MAX_SIDE, fetcher: ImageFetcher | None = None) -> Image.Image | None:
    """The RGB image at `url`, no larger than `max_side` on its longer side, or None when it cannot be had.

    It is fetched through `fetcher` (the caller's, built from its settings), so every ImageFetcher limit applies;
    without one there are no example images.
    """
    if not isinstance(max_side, int) or isinstance(max_side, bool) or max_side < 1:
        raise ValueError(f"max_side must be a positive whole number, got {max_side!r}")
    if fetcher is None:
        log.warning("example image skipped: no image fetcher was given")
        return None
    result = fetcher.fetch(url)
    if result.image is None:
        log.info("example image skipped: %s", result.error)
        return None
    image = result.image  # a fresh image per fetch, so shrinking it in place touches nothing shared
    image.thumbnail((max_side, max_side))
    return image


def image_data_uri(image: Image.Image, quality: int = 90) -> str:
    """A JPEG data: URI of an image, for endpoints that cannot fetch URLs themselves."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
