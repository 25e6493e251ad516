"""Fetch example images from the web for embedding, safely: bounded in bytes, pixels and time, cached on disk.

Example images come from URLs in crawled JSON, so every one is treated as hostile: only http(s) by default, the
body is streamed and cut off past a byte cap whatever Content-Length says, the decoded size is checked against a
pixel cap before any pixel is decoded, and every failure becomes an error string (never an exception) so the
embedding job counts skipped images instead of dying on one bad URL.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tempfile
import threading
import time
import urllib.request
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from PIL import Image, ImageOps

# Formats the web serves images in. Pillow would otherwise try every plugin it has, including EPS (which runs
# Ghostscript) and rarely exercised parsers; a catalogue of example images never needs them.
WEB_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "AVIF", "BMP")
# Schemes urllib can read besides http(s); a caller may allow them explicitly (local mirrors, tests).
_URLLIB_SCHEMES = frozenset({"file", "ftp", "data"})
_CHUNK = 64 * 1024
_WIDTH = re.compile(r"(?<=[/,])width=\d+(?=[,/])")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchResult:
    """An RGB image, or why there is none; `from_cache` says no network request was made."""

    image: Image.Image | None
    error: str | None
    from_cache: bool = False


def _abort_read(response: requests.Response) -> None:
    """On the watchdog thread: shutting the socket wakes a read blocked on a slow server. The response may have
    finished and released its connection meanwhile, in which case there is nothing to abort."""
    try:
        response.raw.shutdown()
    except (ValueError, RuntimeError, OSError, AttributeError):
        pass


class _Rejected(Exception):
    """A download or decode refused for a stated reason (turned into FetchResult.error, never raised to callers)."""


def civitai_width(url: str, width: int = 512) -> str:
    """Ask Civitai's image CDN for a `width`-pixel rendition instead of the one in the URL (often /width=450/).

    The CDN resizes on the fly from a `width=N` path segment (alone or among comma-separated options); URLs without
    one are returned unchanged, since adding it to a non-CDN URL could break it.
    """
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"width must be a positive whole number, got {width!r}")
    parts = urlsplit(url)
    path = _WIDTH.sub(f"width={width}", parts.path + "/")[:-1]
    return urlunsplit(parts._replace(path=path))


class ImageFetcher:
    """Downloads and decodes images with hard limits, caching the bytes by the sha256 of their URL."""

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        *,
        timeout: float = 10,
        max_bytes: int = 20_000_000,
        max_pixels: int = 40_000_000,
        session: requests.Session | None = None,
        allowed_schemes: Collection[str] = ("http", "https"),
    ) -> None:
        """`timeout` bounds each fetch as a whole (connect, every read, and the total), not just one socket read."""
        if timeout <= 0 or max_bytes < 1 or max_pixels < 1:
            raise ValueError("timeout, max_bytes and max_pixels must be positive")
        unknown = set(allowed_schemes) - {"http", "https"} - _URLLIB_SCHEMES
        if unknown:
            raise ValueError(f"cannot fetch schemes {sorted(unknown)}; supported: http, https, {', '.join(sorted(_URLLIB_SCHEMES))}")
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.timeout = float(timeout)
        self.max_bytes = int(max_bytes)
        self.max_pixels = int(max_pixels)
        self.allowed_schemes = frozenset(allowed_schemes)
        self.session = session or self._new_session()

    @staticmethod
    def _new_session() -> requests.Session:
        """Few redirects, and no cookies: fetches stay independent of each other (and of other threads)."""
        session = requests.Session()
        session.max_redirects = 5
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        session.headers["User-Agent"] = "zoo-image-fetch/0.1"
        adapter = HTTPAdapter(pool_connections=16, pool_maxsize=32)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def cache_path(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()
        return self.cache_dir / digest[:2] / digest

    def fetch(self, url: str) -> FetchResult:
        """The image at `url` as RGB (first frame if animated), or an error string; never raises."""
        try:
            self._check_url(url)
            cached = self._read_cache(url)
            if cached is not None:
                return FetchResult(cached, None, from_cache=True)
            data = self._download(url)
            image = self._decode(data)
            self._write_cache(url, data)
            return FetchResult(image, None)
        except _Rejected as exc:
            return FetchResult(None, str(exc))
        except Exception as exc:  # the last line of defence: one hostile URL must not stop a whole batch
            return FetchResult(None, f"unexpected {type(exc).__name__}: {exc}")

    def fetch_many(self, urls: Sequence[str], workers: int = 8) -> list[FetchResult]:
        """Fetch in parallel (downloads wait on the network, not the CPU); results in the order of `urls`."""
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-fetch") as pool:
            return list(pool.map(self.fetch, urls))

    def _read_cache(self, url: str) -> Image.Image | None:
        """A cached image, or None on a miss; a cache file that no longer decodes is dropped and fetched anew."""
        path = self.cache_path(url)
        try:
            data = path.read_bytes()
        except OSError:  # absent, or unreadable: either way the network has it
            return None
        try:
            return self._decode(data)
        except _Rejected:
            path.unlink(missing_ok=True)
            return None

    def _write_cache(self, url: str, data: bytes) -> None:
        """Only bytes that decoded are cached, so a transient bad response is retried next time. Atomic rename:
        parallel workers and killed runs never leave a half-written entry. A cache that cannot be written (disk
        full, read-only) costs a re-download later, not this image."""
        path = self.cache_path(url)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("image cache not written for %s: %s", path, exc)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    def _check_url(self, url: str) -> None:
        """Checked before the cache too, so a fetcher that forbids a scheme never serves it from a shared cache."""
        try:
            scheme = urlsplit(url).scheme.lower() if isinstance(url, str) and url else None
        except ValueError:  # e.g. an unclosed IPv6 bracket
            scheme = None
        if scheme is None:
            raise _Rejected(f"not a URL: {url!r}")
        if scheme not in self.allowed_schemes:
            raise _Rejected(f"scheme {scheme or '(none)'!r} not allowed (allowed: {', '.join(sorted(self.allowed_schemes))})")

    def _download(self, url: str) -> bytes:
        deadline = time.monotonic() + self.timeout
        if urlsplit(url).scheme.lower() in ("http", "https"):
            return self._download_http(url, deadline)
        return self._download_urllib(url, deadline)

    def _download_http(self, url: str, deadline: float) -> bytes:
        try:
            with self.session.get(url, stream=True, timeout=(self.timeout, self.timeout)) as response:
                if not 200 <= response.status_code < 300:
                    raise _Rejected(f"HTTP {response.status_code}")
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise _Rejected(f"too large: Content-Length {declared} > {self.max_bytes} bytes")
                # A socket timeout restarts with every byte, so a trickling server would outlive it; the watchdog
                # enforces the deadline on the whole body.
                watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _abort_read, args=(response,))
                watchdog.daemon = True
                watchdog.start()
                try:
                    return self._read_capped(response.iter_content(_CHUNK), deadline)
                finally:
                    watchdog.cancel()
        except requests.Timeout:
            raise _Rejected(f"timed out after {self.timeout:g} s") from None
        except requests.RequestException as exc:
            if time.monotonic() > deadline:
                raise _Rejected(f"timed out after {self.timeout:g} s") from None
            raise _Rejected(f"download failed: {type(exc).__name__}: {exc}") from None

    def _download_urllib(self, url: str, deadline: float) -> bytes:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                return self._read_capped(iter(lambda: response.read(_CHUNK), b""), deadline)
        except OSError as exc:  # URLError, timeouts and missing files are all OSErrors
            raise _Rejected(f"download failed: {type(exc).__name__}: {exc}") from None

    def _read_capped(self, chunks: Iterable[bytes], deadline: float) -> bytes:
        """Count what actually arrives: a lying or absent Content-Length, or a trickling server, cannot get past."""
        buffer = bytearray()
        for chunk in chunks:
            buffer += chunk
            if len(buffer) > self.max_bytes:
                raise _Rejected(f"too large: more than {self.max_bytes} bytes")
            if time.monotonic() > deadline:
                break
        if time.monotonic() > deadline:  # also when the watchdog cut the body short and it looked complete
            raise _Rejected(f"timed out after {self.timeout:g} s")
        return bytes(buffer)

    def _decode(self, data: bytes) -> Image.Image:
        """Pillow reads the header first; the pixel count is checked there, before a single pixel is decoded.

        Anything Pillow would only warn about (DecompressionBombWarning, above Image.MAX_IMAGE_PIXELS) is rejected
        too. The check is made here rather than by turning the warning into an error, because warning filters are
        process-global and fetch_many decodes in threads.
        """
        limit = min(self.max_pixels, Image.MAX_IMAGE_PIXELS or self.max_pixels)
        try:
            with Image.open(io.BytesIO(data), formats=WEB_IMAGE_FORMATS) as image:
                width, height = image.size
                if width * height > limit:
                    raise _Rejected(f"too many pixels: {width}x{height} > {limit}")
                image.seek(0)  # animated GIF/WebP/APNG: the first frame stands for the image
                return ImageOps.exif_transpose(image).convert("RGB")  # upright, as people saw it on the site
        except _Rejected:
            raise
        except Image.DecompressionBombError as exc:
            raise _Rejected(f"too many pixels: {exc}") from None
        except Image.UnidentifiedImageError:
            raise _Rejected(f"not an image in a supported format ({', '.join(WEB_IMAGE_FORMATS)})") from None
        except Exception as exc:  # malformed files make Pillow raise OSError, ValueError, SyntaxError, struct.error...
            raise _Rejected(f"undecodable image: {type(exc).__name__}: {exc}") from None
