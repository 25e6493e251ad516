"""embedding.image_fetch against a local HTTP server this module starts: good images, hostile bodies and headers,
slow servers, redirects, the on-disk cache (requests counted server-side) and the scheme policy. The server is on
loopback, so it is allowed through the ZOO_FETCH_ALLOW_HOSTS setting, as a private mirror would be (the refusals
themselves are tests/test_image_fetch_ssrf.py)."""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from config import Settings
from embedding.image_fetch import FetchResult, ImageFetcher, civitai_width

MAX_BYTES = 200_000  # small caps keep the oversize cases fast; the logic is the same at 20 MB


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _jpeg(image: Image.Image, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90, **({"exif": exif} if exif else {}))
    return buf.getvalue()


def _declared_size_png(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height: a bomb Pillow must refuse before it allocates anything."""
    data = bytearray(_png(Image.new("L", (1, 1))))
    ihdr = bytearray(data[12:29])  # chunk type + 13 bytes of IHDR data
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    return _jpeg(Image.new("RGB", (40, 20), (0, 200, 0)), exif)


GOOD_PNG = _png(Image.new("RGB", (64, 48), (10, 120, 200)))
PHOTO_JPG = _jpeg(Image.radial_gradient("L").convert("RGB"))
NOISE_PNG = _png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
STATIC = {
    "/good.png": GOOD_PNG,
    "/photo.jpg": PHOTO_JPG,
    "/rgba.png": _png(Image.new("RGBA", (8, 8), (255, 0, 0, 0))),
    "/animated.gif": _animated_gif(),
    "/rotated.jpg": _rotated_jpeg(),
    "/truncated.jpg": PHOTO_JPG[: len(PHOTO_JPG) // 2],
    "/not-an-image": b"<html><body>Access denied</body></html>",
    "/bomb.png": _png(Image.new("1", (7000, 7000))),  # 49 Mpx of one colour: a few KB on the wire
    "/huge-header.png": _declared_size_png(20000, 20000),
    "/medium-header.png": _declared_size_png(8000, 8000),  # 64 Mpx: under Pillow's own limit, over ours
}


class Handler(BaseHTTPRequestHandler):
    counts: Counter[str] = Counter()

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes = b"", length: str | None = "auto", **headers: str) -> None:
        self.send_response(status)
        if length is not None:
            self.send_header("Content-Length", str(len(body)) if length == "auto" else length)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self._write(body)

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError):  # the fetcher hung up, as it should
            return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = urlsplit(self.path).path
        Handler.counts[path] += 1
        if path in STATIC:
            self._send(200, STATIC[path], Content_Type="image/png")
        elif path == "/redirect":
            self._send(302, Location="/good.png")
        elif path == "/redirect-to-file":
            self._send(302, Location="file:///etc/passwd")
        elif path == "/redirect-loop":
            self._send(302, Location="/redirect-loop")
        elif path == "/oversize-no-length":  # HTTP/1.0: the body ends when the connection closes
            self._send(200, GOOD_PNG, length=None)
            for _ in range(MAX_BYTES * 5 // 8192):
                if not self._write(b"\0" * 8192):
                    return
        elif path == "/lying-small-length":  # claims 1 KB, sends a 12 KB image and far more than the cap after it
            self._send(200, NOISE_PNG + b"\0" * (MAX_BYTES * 3), length="1000")
        elif path == "/lying-large-length":
            self._send(200, GOOD_PNG, length=str(MAX_BYTES * 100))
        elif path == "/slow-headers":
            time.sleep(3)
            self._send(200, GOOD_PNG)
        elif path == "/trickle":  # headers at once, then a byte every 0.1 s: no single read ever times out
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD_PNG)))
            self.end_headers()
            for i in range(len(GOOD_PNG)):
                if not self._write(GOOD_PNG[i : i + 1]):
                    return
                time.sleep(0.1)
        else:
            self._send(404, b"not found")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def allow_hosts(server: str) -> tuple[str, ...]:
    """The settings' allow-list with this module's server on it."""
    return Settings.from_env({"ZOO_FETCH_ALLOW_HOSTS": urlsplit(server).netloc}).fetch_allow_hosts


@pytest.fixture()
def fetcher(tmp_path: Path, allow_hosts: tuple[str, ...]) -> ImageFetcher:
    return ImageFetcher(tmp_path / "cache", timeout=1, max_bytes=MAX_BYTES, allow_hosts=allow_hosts)


def _failed(result: FetchResult, *needles: str) -> None:
    assert result.image is None and result.error, result
    assert any(n in result.error for n in needles), result.error


def test_good_png_then_cache_hit_without_a_request(server: str, fetcher: ImageFetcher) -> None:
    url = f"{server}/good.png"
    first = fetcher.fetch(url)
    assert first.error is None and not first.from_cache
    assert first.image.mode == "RGB" and first.image.size == (64, 48)
    assert first.image.getpixel((0, 0)) == (10, 120, 200)
    before = Handler.counts["/good.png"]
    second = fetcher.fetch(url)
    assert second.from_cache and second.error is None and second.image.tobytes() == first.image.tobytes()
    assert Handler.counts["/good.png"] == before
    assert fetcher.cache_path(url).read_bytes() == GOOD_PNG


def test_jpeg_rgba_animated_and_exif_rotated(server: str, fetcher: ImageFetcher) -> None:
    photo = fetcher.fetch(f"{server}/photo.jpg")
    assert photo.error is None and photo.image.size == (256, 256) and photo.image.mode == "RGB"
    rgba = fetcher.fetch(f"{server}/rgba.png")
    assert rgba.error is None and rgba.image.mode == "RGB"
    gif = fetcher.fetch(f"{server}/animated.gif")
    assert gif.error is None and gif.image.mode == "RGB" and gif.image.getpixel((5, 5)) == (255, 0, 0)  # first frame
    rotated = fetcher.fetch(f"{server}/rotated.jpg")
    assert rotated.error is None and rotated.image.size == (20, 40)


def test_broken_bodies_are_errors_and_never_cached(server: str, fetcher: ImageFetcher) -> None:
    for path, needles in (("/truncated.jpg", ("undecodable", "truncated")), ("/not-an-image", ("not an image",)),
                          ("/missing.png", ("HTTP 404",))):
        url = f"{server}{path}"
        _failed(fetcher.fetch(url), *needles)
        before = Handler.counts[path]
        _failed(fetcher.fetch(url), *needles)
        assert Handler.counts[path] == before + 1  # retried: failures are not cached
        assert not fetcher.cache_path(url).exists()


def test_byte_cap_holds_without_or_against_content_length(server: str, fetcher: ImageFetcher) -> None:
    start = time.monotonic()
    _failed(fetcher.fetch(f"{server}/oversize-no-length"), "too large")
    _failed(fetcher.fetch(f"{server}/lying-large-length"), "Content-Length")
    # A Content-Length under the cap bounds what is read; the rest of the body is never taken in.
    _failed(fetcher.fetch(f"{server}/lying-small-length"), "undecodable", "truncated")
    assert time.monotonic() - start < 5


def test_decompression_bombs_are_refused_before_decoding(server: str, fetcher: ImageFetcher) -> None:
    assert len(STATIC["/bomb.png"]) < 20_000
    _failed(fetcher.fetch(f"{server}/bomb.png"), "too many pixels: 7000x7000")
    _failed(fetcher.fetch(f"{server}/medium-header.png"), "too many pixels: 8000x8000")  # ours, not Pillow's
    _failed(fetcher.fetch(f"{server}/huge-header.png"), "too many pixels")  # Pillow's DecompressionBombError
    roomy = ImageFetcher(fetcher.cache_dir, max_pixels=100_000_000, allow_hosts=fetcher.guard.allow_texts)
    assert roomy.fetch(f"{server}/bomb.png").error is None  # the same file is fine under a higher cap...
    tight = ImageFetcher(fetcher.cache_dir, max_pixels=1000, allow_hosts=fetcher.guard.allow_texts)
    cached = tight.fetch(f"{server}/bomb.png")  # ...and the cap still applies to what the cache holds
    _failed(cached, "too many pixels")


def test_slow_servers_hit_the_timeout(server: str, fetcher: ImageFetcher) -> None:
    for path in ("/slow-headers", "/trickle"):
        start = time.monotonic()
        _failed(fetcher.fetch(f"{server}{path}"), "timed out")
        assert time.monotonic() - start < 2.5, path


def test_redirects_are_followed_within_limits(server: str, fetcher: ImageFetcher) -> None:
    result = fetcher.fetch(f"{server}/redirect")
    assert result.error is None and result.image.size == (64, 48)
    _failed(fetcher.fetch(f"{server}/redirect-loop"), "too many redirects")
    _failed(fetcher.fetch(f"{server}/redirect-to-file"), "redirect to a file: URL refused")


def test_non_http_schemes_are_rejected_unless_allowed(tmp_path: Path, fetcher: ImageFetcher) -> None:
    local = tmp_path / "local.png"
    local.write_bytes(GOOD_PNG)
    data_url = "data:image/png;base64," + base64.b64encode(GOOD_PNG).decode()
    for url in (local.as_uri(), "ftp://127.0.0.1/x.png", data_url, "javascript:alert(1)", "/etc/passwd", "http://[::1", "", None):
        _failed(fetcher.fetch(url), "not allowed", "not a URL")  # type: ignore[arg-type]
    permissive = ImageFetcher(tmp_path / "cache2", allowed_schemes=("http", "https", "file", "data"))
    assert permissive.fetch(local.as_uri()).image.size == (64, 48)
    assert permissive.fetch(data_url).image.size == (64, 48)
    _failed(permissive.fetch((tmp_path / "absent.png").as_uri()), "download failed")
    with pytest.raises(ValueError, match="gopher"):
        ImageFetcher(tmp_path, allowed_schemes=("http", "gopher"))


def test_corrupt_cache_entry_is_refetched(server: str, fetcher: ImageFetcher) -> None:
    url = f"{server}/photo.jpg?corrupt"
    fetcher.cache_path(url).parent.mkdir(parents=True, exist_ok=True)
    fetcher.cache_path(url).write_bytes(b"garbage")
    result = fetcher.fetch(url)
    assert result.error is None and not result.from_cache
    assert fetcher.cache_path(url).read_bytes() == PHOTO_JPG


def test_fetch_many_keeps_order_and_counts_failures(server: str, fetcher: ImageFetcher) -> None:
    urls = [f"{server}/good.png", f"{server}/missing.png", "file:///etc/passwd", f"{server}/photo.jpg",
            f"{server}/not-an-image", f"{server}/animated.gif"]
    results = fetcher.fetch_many(urls, workers=4)
    assert [r.error is None for r in results] == [True, False, False, True, False, True]
    assert results[0].image.size == (64, 48) and results[3].image.size == (256, 256)
    assert fetcher.fetch_many([]) == []
    with pytest.raises(ValueError):
        fetcher.fetch_many(urls, workers=0)


def test_civitai_width_rewrites_only_the_cdn_width_segment() -> None:
    base = "https://image.civitai.com/xG1nkqKTMzGDvpLrqFT7WA/0f6c1e1a-1234"
    assert civitai_width(f"{base}/width=450/12345.jpeg", 512) == f"{base}/width=512/12345.jpeg"
    assert civitai_width(f"{base}/anim=false,width=450/1.jpeg") == f"{base}/anim=false,width=512/1.jpeg"
    assert civitai_width(f"{base}/width=450") == f"{base}/width=512"
    unchanged = [f"{base}/original=true/1.jpeg", "https://example.com/a.png?width=450", "https://x/widths=450/a"]
    assert [civitai_width(u) for u in unchanged] == unchanged
    with pytest.raises(ValueError):
        civitai_width(f"{base}/width=450/1.jpeg", 0)
