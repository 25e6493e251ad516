"""Example images for the model describers: fetched through an ImageFetcher, shrunk for a model, inlined as data URIs.

Fetching (scheme checks, byte, pixel and time caps, the disk cache) is ImageFetcher's job; this module only adds
what a describer needs on top: a size a model can take, and a data: URI for endpoints that cannot fetch URLs.
Any image that cannot be had yields None and the describer goes on without it.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Pillow comes with the model stack; card-text and text-only endpoints work without it
    from PIL import Image

    from embedding.image_fetch import ImageFetcher

log = logging.getLogger(__name__)

MAX_SIDE = 768

_shared_fetcher: ImageFetcher | None = None
_shared_lock = threading.Lock()


def shared_fetcher() -> ImageFetcher:
    """The process's ImageFetcher, caching under $ZOO_HOME/images; created on first use (it imports Pillow)."""
    global _shared_fetcher
    if _shared_fetcher is None:
        with _shared_lock:  # the OpenAI describer loads images from several threads at once
            if _shared_fetcher is None:
                from config import Settings
                from embedding.image_fetch import ImageFetcher

                _shared_fetcher = ImageFetcher(Settings.from_env().zoo_home / "images")
    return _shared_fetcher


def load_image(url: str, *, max_side: int = MAX_SIDE, fetcher: ImageFetcher | None = None) -> Image.Image | None:
    """The RGB image at `url`, no larger than `max_side` on its longer side, or None when it cannot be had.

    It is fetched through `fetcher` (default: shared_fetcher()), so every ImageFetcher limit applies.
    """
    if not isinstance(max_side, int) or isinstance(max_side, bool) or max_side < 1:
        raise ValueError(f"max_side must be a positive whole number, got {max_side!r}")
    if fetcher is None:
        try:
            fetcher = shared_fetcher()
        except Exception as error:  # bad settings, an uncreatable cache folder: the images are optional
            log.warning("example images unavailable: no image fetcher (%s: %s)", type(error).__name__, error)
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
