"""Fetch example images from the web for embedding, safely: bounded in bytes, pixels and time, cached on disk.

Example images come from URLs in crawled JSON, so every one is treated as hostile: only http(s) by default; the
host is resolved once and refused when it is not public (loopback, private, link-local, reserved, ...; see
crawlers.url_guard) unless ZOO_FETCH_ALLOW_HOSTS allows it, and the connection goes to the address checked (no
second lookup to rebind); redirects are followed by hand, each hop checked the same way; the body is streamed and
cut off past a byte cap whatever Content-Length says, the decoded size is checked against a pixel cap before any
pixel is decoded, and every failure becomes an error string (never an exception) so the embedding job counts skipped
images instead of dying on one bad URL.
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
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

import urllib3
from PIL import Image, ImageOps

from crawlers.url_guard import (
    Connect,
    PinnedPools,
    RefusedURL,
    Resolver,
    Target,
    UnresolvableHost,
    UrlGuard,
    system_connect,
    system_resolver,
)

# Formats the web serves images in. Pillow would otherwise try every plugin it has, including EPS (which runs
# Ghostscript) and rarely exercised parsers; a catalogue of example images never needs them.
WEB_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "AVIF", "BMP")
# Schemes urllib can read besides http(s); a caller may allow them explicitly (local mirrors, tests).
_URLLIB_SCHEMES = frozenset({"file", "ftp", "data"})
_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "zoo-image-fetch/0.1"
_WIDTH = re.compile(r"(?<=[/,])width=\d+(?=[,/])")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchResult:
    """An RGB image, or why there is none; `from_cache` says no network request was made."""

    image: Image.Image | None
    error: str | None
    from_cache: bool = False


def _abort_read(response: urllib3.BaseHTTPResponse) -> None:
    """On the watchdog thread: shutting the socket wakes a read blocked on a slow server. The response may have
    finished and released its connection meanwhile, in which case there is nothing to abort."""
    try:
        response.shutdown()
    except (ValueError, RuntimeError, OSError, AttributeError):
        pass


def _close(response: urllib3.BaseHTTPResponse) -> None:
    """A response read to its end goes back to its pool; one left unread (refused, capped, redirected) is closed, so
    no connection with half a body in it is reused."""
    try:
        if not response.closed:  # read to its end, it was released already
            response.close()
        response.release_conn()
    except (OSError, urllib3.exceptions.HTTPError):
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
        allowed_schemes: Collection[str] = ("http", "https"),
        allow_hosts: Iterable[str] | str = (),
        max_redirects: int = 5,
        resolver: Resolver = system_resolver,
        connect: Connect = system_connect,
        ca_certs: str | None = None,
    ) -> None:
        """`timeout` bounds each fetch as a whole (connect, every read, and the total), not just one socket read.

        `allow_hosts` are the ZOO_FETCH_ALLOW_HOSTS entries (Settings.fetch_allow_hosts): non-public hosts that may
        be fetched. `resolver` (host, port -> addresses) and `connect` ((address, port), timeout -> socket) are the
        one name lookup and the socket opening of a fetch; tests replace them. `ca_certs` is a CA bundle for https
        (default certifi's)."""
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
        self.max_redirects = int(max_redirects)
        self.guard = UrlGuard(allow_hosts, resolver)
        # No cookies and no session state: fetches stay independent of each other (and of other threads).
        self._pools = PinnedPools(connect, ca_certs=ca_certs, maxsize=32)

    def __repr__(self) -> str:
        return f"ImageFetcher({str(self.cache_dir)!r}, {self.guard!r})"

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
        """Checked before the cache too, so a fetcher that forbids a scheme (or an address given literally) never
        serves it from a shared cache. Names are resolved only when the network is used: a cache hit needs no DNS."""
        try:
            scheme = urlsplit(url).scheme.lower() if isinstance(url, str) and url else None
        except ValueError:  # e.g. an unclosed IPv6 bracket
            scheme = None
        if scheme is None:
            raise _Rejected(f"not a URL: {url!r}")
        if scheme not in self.allowed_schemes:
            raise _Rejected(f"scheme {scheme or '(none)'!r} not allowed (allowed: {', '.join(sorted(self.allowed_schemes))})")
        if scheme in ("http", "https"):
            try:
                self.guard.check_without_lookup(url)
            except RefusedURL as refused:
                raise _Rejected(str(refused)) from None

    def _download(self, url: str) -> bytes:
        deadline = time.monotonic() + self.timeout
        if urlsplit(url).scheme.lower() in ("http", "https"):
            return self._download_http(url, deadline)
        return self._download_urllib(url, deadline)

    def _download_http(self, url: str, deadline: float) -> bytes:
        """Follow redirects by hand, each hop checked by the guard and connected to the address it checked."""
        for hop in range(self.max_redirects + 1):
            try:
                target = self.guard.check(url)
            except RefusedURL as refused:
                raise _Rejected(f"redirect to {url} {refused}" if hop else str(refused)) from None
            except UnresolvableHost as error:
                raise _Rejected(f"download failed: {error}") from None
            response = self._get(target, deadline)
            try:
                if response.status in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise _Rejected(f"HTTP {response.status} redirect without a Location")
                    url = urljoin(url, location)
                    scheme = urlsplit(url).scheme.lower()
                    if scheme not in ("http", "https"):
                        raise _Rejected(f"redirect to a {scheme or 'relative'}: URL refused (only http and https)")
                    continue
                return self._body(response, deadline)
            finally:
                _close(response)
        raise _Rejected(f"too many redirects (more than {self.max_redirects})")

    def _get(self, target: Target, deadline: float) -> urllib3.BaseHTTPResponse:
        remaining = max(0.001, deadline - time.monotonic())
        headers = {"User-Agent": USER_AGENT, "Accept": "image/*, */*;q=0.8", "Accept-Encoding": "identity"}
        try:
            return self._pools.get(target, headers, urllib3.Timeout(connect=remaining, read=self.timeout))
        except urllib3.exceptions.TimeoutError:
            raise _Rejected(f"timed out after {self.timeout:g} s") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _Rejected(f"download failed: {type(exc).__name__}: {exc}") from None

    def _body(self, response: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
        if not 200 <= response.status < 300:
            raise _Rejected(f"HTTP {response.status}")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise _Rejected(f"too large: Content-Length {declared} > {self.max_bytes} bytes")
        # A socket timeout restarts with every byte, so a trickling server would outlive it; the watchdog enforces
        # the deadline on the whole body.
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _abort_read, args=(response,))
        watchdog.daemon = True
        watchdog.start()
        try:
            return self._read_capped(response.stream(_CHUNK, decode_content=False), deadline)
        except urllib3.exceptions.TimeoutError:
            raise _Rejected(f"timed out after {self.timeout:g} s") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if time.monotonic() > deadline:
                raise _Rejected(f"timed out after {self.timeout:g} s") from None
            raise _Rejected(f"download failed: {type(exc).__name__}: {exc}") from None
        finally:
            watchdog.cancel()

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
