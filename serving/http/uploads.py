"""Uploaded images: read whole (the body limit bounds the bytes), decoded only after the header's size passes the
pixel limit, so a small file cannot expand into a huge bitmap; anything that is not an image is a 422."""

from __future__ import annotations

import io

from fastapi import UploadFile
from PIL import Image

from serving.http.errors import ProblemError
from serving.search.api import MAX_QUERY_IMAGE_PIXELS


def upload_bytes(upload: UploadFile | None) -> bytes | None:
    """The file's bytes (None when no file, or an empty one, was sent); for routes run in the thread pool."""
    if upload is None or isinstance(upload, str):
        return None
    upload.file.seek(0)
    return upload.file.read() or None


def decode_image(data: bytes, field: str) -> Image.Image:
    """RGB pixels of an uploaded image; 413 past MAX_QUERY_IMAGE_PIXELS, 422 when it is not a readable image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_QUERY_IMAGE_PIXELS:
                raise ProblemError(413, f"{field}: {image.width}x{image.height} is more than "
                                        f"{MAX_QUERY_IMAGE_PIXELS:,} pixels")
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as error:
        raise ProblemError(422, f"{field}: not a readable image ({type(error).__name__})") from error


def png_bytes(image: Image.Image) -> bytes:
    """An image as PNG bytes (how inputs to edit jobs are stored)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
