"""Example images for the model describers: fetched with a byte cap, decoded with a pixel cap, shrunk for a model.

Image URLs come from a community site, so a response may be huge, not an image, or a decompression bomb; each
failure yields None and the describer goes on without that image.
"""

from __future__ import annotations

import base64
import io
import logging
import warnings
from typing import TYPE_CHECKING

import requests

if TYPE_CHECKING:  # Pillow comes with the model stack; card-text and text-only endpoints work without it
    from PIL import Image

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
MAX_SIDE = 768
_CHUNK = 64 * 1024


def fetch_image_bytes(url: str, *, max_bytes: int = MAX_IMAGE_BYTES, timeout: float = 20.0,
                      session: requests.Session | None = None) -> bytes | None:
    """The body at an http(s) URL when it is at most `max_bytes` long, else None."""
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        return None
    getter = session or requests
    try:
        with getter.get(url, stream=True, timeout=timeout) as response:
            if response.status_code != 200:
                return None
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                return None
            body = bytearray()
            for chunk in response.iter_content(_CHUNK):
                body.extend(chunk)
                if len(body) > max_bytes:
                    return None
            return bytes(body)
    except requests.RequestException as error:
        log.info("example image not fetched (%s)", type(error).__name__)
        return None


def decode_image(data: bytes, *, max_side: int = MAX_SIDE) -> Image.Image | None:
    """An RGB image no larger than `max_side` on its longer side, or None for anything that is not a sane image."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
                return None
            image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale, much cheaper
            image = image.convert("RGB")
    except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError, bomb errors) on bad data
        return None
    image.thumbnail((max_side, max_side))
    return image


def load_image(url: str, *, max_side: int = MAX_SIDE, max_bytes: int = MAX_IMAGE_BYTES,
               timeout: float = 20.0) -> Image.Image | None:
    """The image at `url`, fetched and decoded with caps (the VLM describer's default image loader)."""
    data = fetch_image_bytes(url, max_bytes=max_bytes, timeout=timeout)
    return None if data is None else decode_image(data, max_side=max_side)


def image_data_uri(image: Image.Image, quality: int = 90) -> str:
    """A JPEG data: URI of an image, for endpoints that cannot fetch URLs themselves."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
