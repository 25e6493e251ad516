"""crawlers.downloads against two local HTTP servers this module starts: a stand-in for Civitai's download endpoint
(307 to a pre-signed URL, 401/403/404 in their JSON and redirect forms, 429/5xx) and a separate "storage" host
(Range, a variant that ignores Range, dropped connections, wrong bytes, slow bodies). Every request is recorded
server-side, so "no network", "served once" and "no Authorization to storage" are checked where they happen."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from config.settings import Settings
from crawlers.downloads import (
    DownloadAuthRequired,
    DownloadEarlyAccess,
    DownloadError,
    DownloadHashMismatch,
    DownloadNotFound,
    DownloadTooLarge,
    ModelDownloader,
    filename_from_disposition,
    from_settings,
)

REPO = Path(__file__).resolve().parent.parent
API_KEY = "zoo-test-SECRET-key-6f1c9a2b"
SIZE = 10_000

STORAGE_HOST = "127.0.0.1"  # the fake storage host: loopback, so the downloaders here allow it by name


def _blob(seed: int, size: int = SIZE) -> bytes:
    return b"".join(hashlib.sha256(f"{seed}:{counter}".encode()).digest() for counter in range(-(-size // 32)))[:size]


@dataclass
class Spec:
    """How the fake site serves one model version."""

    data: bytes
    name: str = "model.safetensors"
    endpoint: str = "redirect"  # redirect | 401json | 401redirect | 403json | 403redirect | 404json | keyed
    endpoint_failures: list = field(default_factory=list)  # statuses (or (status, retry_after)) answered first
    storage_failures: list = field(default_factory=list)  # statuses the storage host answers first
    served: bytes | None = None  # what storage actually sends (wrong bytes), default `data`
    ignore_range: bool = False
    drop_after: list = field(default_factory=list)  # per storage response: bytes sent before the connection drops
    chunk_delay: float = 0.0  # seconds between 1 KB chunks (slow bodies for the concurrency tests)
    disposition_header: bool = True  # storage sends Content-Disposition (else only the URL's query names the file)
    no_length: bool = False  # storage sends no Content-Length: the body ends when the connection closes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Seen:
    server: str
    path: str
    query: dict
    headers: dict
    status: int = 0


class Site:
    """Two servers: `civitai` (the download endpoint) and `storage` (pre-signed URLs), with a shared request log."""

    def __init__(self) -> None:
        self.specs: dict[int, Spec] = {}
        self.log: list[Seen] = []
        self.lock = threading.Lock()
        self.civitai = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "civitai"))
        self.storage = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "storage"))
        for server in (self.civitai, self.storage):
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.civitai_url = f"http://127.0.0.1:{self.civitai.server_address[1]}"
        self.storage_url = f"http://127.0.0.1:{self.storage.server_address[1]}"

    def close(self) -> None:
        for server in (self.civitai, self.storage):
            server.shutdown()
            server.server_close()

    def add(self, version_id: int, spec: Spec) -> Spec:
        self.specs[version_id] = spec
        return spec

    def seen(self, server: str | None = None) -> list[Seen]:
        with self.lock:
            return [s for s in self.log if server is None or s.server == server]

    def bodies_served(self) -> int:
        return sum(1 for s in self.seen("storage") if s.status in (200, 206))

    def clear(self) -> None:
        with self.lock:
            self.log.clear()


def _handler(site: Site, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            seen = Seen(role, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()})
            with site.lock:
                site.log.append(seen)
            if role == "civitai":
                self._civitai(parts.path, seen)
            else:
                self._storage(parts.path, seen)

        def _send(self, seen: Seen, status: int, headers: dict, body: bytes = b"", length: bool = True) -> None:
            seen.status = status
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Content-Length" not in headers and length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def _json(self, seen: Seen, status: int, body: dict, extra: dict | None = None) -> None:
            self._send(seen, status, {"Content-Type": "application/json", **(extra or {})}, json.dumps(body).encode())

        def _civitai(self, path: str, seen: Seen) -> None:
            match = re.fullmatch(r"/api/download/models/(\d+)", path)
            spec = site.specs.get(int(match.group(1))) if match else None
            if spec is None:
                return self._json(seen, 404, {"error": "Model not found"})
            version_id = int(match.group(1))
            with site.lock:
                failure = spec.endpoint_failures.pop(0) if spec.endpoint_failures else None
            if failure is not None:
                status, retry_after = failure if isinstance(failure, tuple) else (failure, None)
                return self._json(seen, status, {"error": "busy"},
                                  {"Retry-After": str(retry_after)} if retry_after is not None else None)
            mode = spec.endpoint
            if mode == "keyed":
                mode = "redirect" if seen.headers.get("authorization") == f"Bearer {API_KEY}" else "401json"
            if mode == "401json":
                return self._json(seen, 401, {"error": "Unauthorized", "message": "The creator of this asset requires "
                                              "you to be logged in to download it"})
            if mode == "401redirect":
                return self._send(seen, 307, {"Location": f"/login?returnUrl=%2Fmodels%2F{version_id}"
                                                          "&reason=download-auth"})
            if mode == "403json":
                return self._json(seen, 403, {"error": "Early Access", "deadline": "2026-04-01T00:00:00.000Z"})
            if mode == "403redirect":
                return self._send(seen, 307, {"Location": f"/models/{version_id}?reason=early-access"})
            if mode == "404json":
                return self._json(seen, 404, {"error": "Model file not found"})
            if mode == "404echo":  # some servers say what they were asked for, query and all
                return self._json(seen, 404, {"error": "Model file not found", "message": f"nothing at {self.path}"})
            disposition = quote(f'attachment; filename="{spec.name}"', safe="")
            location = (f"{site.storage_url}/bucket/{version_id}/{spec.sha256}?X-Amz-Expires=86400"
                        f"&X-Amz-Signature=deadbeef&response-content-disposition={disposition}")
            return self._send(seen, 307, {"Location": location})

        def _storage(self, path: str, seen: Seen) -> None:
            match = re.fullmatch(r"/bucket/(\d+)/[0-9a-f]{64}", path)
            spec = site.specs.get(int(match.group(1))) if match else None
            if spec is None:
                return self._send(seen, 404, {"Content-Type": "application/xml"}, b"<Error>NoSuchKey</Error>")
            with site.lock:
                failure = spec.storage_failures.pop(0) if spec.storage_failures else None
            if failure is not None:
                return self._send(seen, failure, {"Content-Type": "application/xml"}, b"<Error>Expired</Error>")
            data = spec.data if spec.served is None else spec.served
            headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            if spec.disposition_header:
                headers["Content-Disposition"] = f'attachment; filename="{spec.name}"'
            wanted = re.fullmatch(r"bytes=(\d+)-", seen.headers.get("range", ""))
            start, status = 0, 200
            if wanted and not spec.ignore_range:
                start = int(wanted.group(1))
                if start >= len(data):
                    return self._send(seen, 416, {"Content-Range": f"bytes */{len(data)}"})
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            if not spec.no_length:
                headers["Content-Length"] = str(len(body))
            self._send(seen, status, headers, length=not spec.no_length)
            with site.lock:
                drop = spec.drop_after.pop(0) if spec.drop_after else None
            if drop is not None:  # send part of the body, then cut the connection
                self.wfile.write(body[:drop])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            for i in range(0, len(body), 1024):
                self.wfile.write(body[i:i + 1024])
                if spec.chunk_delay:
                    self.wfile.flush()
                    time.sleep(spec.chunk_delay)

    return Handler


@pytest.fixture()
def site():
    s = Site()
    yield s
    s.close()


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture()
def sleeps() -> Sleeps:
    return Sleeps()


def _downloader(site: Site, cache: Path, sleeps: Sleeps, **kw) -> ModelDownloader:
    options = {"base_url": site.civitai_url, "timeout": 10, "max_retries": 3, "backoff_base": 0.5,
               "chunk_size": 1024, "sleep": sleeps, "allow_hosts": (STORAGE_HOST,)}
    options.update(kw)
    return ModelDownloader(cache, **options)


def _cache_files(cache: Path) -> list[str]:
    """Everything in the cache except lock files (which may stay: deleting them would race)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


# --- the happy path and the cache ----------------------------------------------------------------------------------

def test_fetch_follows_redirect_verifies_and_caches_by_sha256(site, tmp_path, sleeps):
    spec = site.add(101, Spec(_blob(1), name="moxin_v3.safetensors"))
    calls = []
    downloader = _downloader(site, tmp_path, sleeps)
    path = downloader.fetch(101, spec.sha256.upper(), progress=lambda done, total: calls.append((done, total)))

    assert path == tmp_path / "sha256" / spec.sha256[:2] / spec.sha256
    assert path.read_bytes() == spec.data
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    assert sidecar["file_name"] == "moxin_v3.safetensors" and sidecar["size"] == SIZE and sidecar["version_id"] == 101
    assert [s.server for s in site.seen()] == ["civitai", "storage"]
    assert [s.status for s in site.seen()] == [307, 200]
    assert calls[0] == (0, SIZE) and calls[-1] == (SIZE, SIZE)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert _cache_files(tmp_path) == [f"sha256/{spec.sha256[:2]}/{spec.sha256}",
                                      f"sha256/{spec.sha256[:2]}/{spec.sha256}.json"]
    assert sleeps == []


def test_second_fetch_is_served_from_cache_with_no_requests(site, tmp_path, sleeps):
    spec = site.add(102, Spec(_blob(2)))
    first = _downloader(site, tmp_path, sleeps).fetch(102, spec.sha256)
    site.clear()
    again = _downloader(site, tmp_path, sleeps).fetch(102, spec.sha256)  # a new downloader, same cache
    same = _downloader(site, tmp_path, sleeps)
    assert same.cached_path(spec.sha256) == first == again
    assert same.fetch(102, spec.sha256) == first
    assert site.seen() == []
    assert same.cached_path("0" * 64) is None
    assert same.cached_file_name(spec.sha256) == "model.safetensors"


def test_file_name_from_the_signed_url_then_the_hint(site, tmp_path, sleeps):
    spec = site.add(103, Spec(_blob(3), name="from_query.safetensors", disposition_header=False))
    downloader = _downloader(site, tmp_path, sleeps)
    downloader.fetch(103, spec.sha256, file_name_hint="hint.safetensors")
    assert downloader.cached_file_name(spec.sha256) == "from_query.safetensors"


def test_filename_parsing_is_safe():
    assert filename_from_disposition('attachment; filename="a b.safetensors"') == "a b.safetensors"
    utf8 = "attachment; filename*=UTF-8''%E5%A2%A8%E5%BF%83.safetensors"
    assert filename_from_disposition(utf8) == "墨心.safetensors"
    assert filename_from_disposition('attachment; filename="../../etc/passwd"') == "passwd"
    assert filename_from_disposition('attachment; filename="..\\..\\x.ckpt"') == "x.ckpt"
    assert filename_from_disposition('attachment; filename=".."') is None
    assert filename_from_disposition(None) is None


def test_bad_sha256_is_refused_before_any_request(site, tmp_path, sleeps):
    with pytest.raises(ValueError):
        _downloader(site, tmp_path, sleeps).fetch(1, "not-a-hash")
    with pytest.raises(ValueError):
        _downloader(site, tmp_path, sleeps).cached_path("abc")
    assert site.seen() == []


# --- resume --------------------------------------------------------------------------------------------------------

def test_dropped_connection_resumes_with_range(site, tmp_path, sleeps):
    spec = site.add(201, Spec(_blob(4), drop_after=[3000]))
    calls = []
    path = _downloader(site, tmp_path, sleeps).fetch(201, spec.sha256, progress=lambda d, t: calls.append((d, t)))

    assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256
    storage = site.seen("storage")
    assert [s.status for s in storage] == [200, 206]
    assert "range" not in storage[0].headers
    assert storage[1].headers["range"] == "bytes=3000-"
    assert len(site.seen("civitai")) == 2  # each try asks for a fresh signed URL
    assert len(sleeps) == 1  # one backoff
    assert calls[-1] == (SIZE, SIZE) and (3000, SIZE) in calls
    assert not path.with_name(path.name + ".part").exists()


def test_server_that_ignores_range_restarts_from_zero(site, tmp_path, sleeps):
    spec = site.add(202, Spec(_blob(5), ignore_range=True, drop_after=[3000]))
    path = _downloader(site, tmp_path, sleeps).fetch(202, spec.sha256)
    storage = site.seen("storage")
    assert storage[1].headers["range"] == "bytes=3000-"
    assert [s.status for s in storage] == [200, 200]
    assert path.read_bytes() == spec.data


def test_interrupted_part_is_kept_and_resumed_by_a_later_run(site, tmp_path, sleeps):
    spec = site.add(203, Spec(_blob(6), drop_after=[4000]))
    with pytest.raises(DownloadError) as caught:
        _downloader(site, tmp_path, sleeps, max_retries=0).fetch(203, spec.sha256)
    assert type(caught.value) is DownloadError and "for resume" in str(caught.value)
    entry = tmp_path / "sha256" / spec.sha256[:2] / spec.sha256
    part = entry.with_name(entry.name + ".part")
    assert part.stat().st_size == 4000 and not entry.exists()
    assert _downloader(site, tmp_path, sleeps).cached_path(spec.sha256) is None

    site.clear()
    path = _downloader(site, tmp_path, sleeps).fetch(203, spec.sha256)
    assert site.seen("storage")[0].headers["range"] == "bytes=4000-"
    assert site.seen("storage")[0].status == 206
    assert path.read_bytes() == spec.data and not part.exists()


def test_complete_part_answered_416_is_verified_and_committed(site, tmp_path, sleeps):
    spec = site.add(204, Spec(_blob(7)))
    entry = tmp_path / "sha256" / spec.sha256[:2] / spec.sha256
    entry.parent.mkdir(parents=True)
    entry.with_name(entry.name + ".part").write_bytes(spec.data)  # killed between the last byte and the rename

    path = _downloader(site, tmp_path, sleeps).fetch(204, spec.sha256)
    assert path.read_bytes() == spec.data
    assert [(s.status, s.headers.get("range")) for s in site.seen("storage")] == [(416, f"bytes={SIZE}-")]


def test_oversized_part_answered_416_starts_again(site, tmp_path, sleeps):
    spec = site.add(205, Spec(_blob(8)))
    entry = tmp_path / "sha256" / spec.sha256[:2] / spec.sha256
    entry.parent.mkdir(parents=True)
    entry.with_name(entry.name + ".part").write_bytes(b"x" * (SIZE + 500))

    path = _downloader(site, tmp_path, sleeps).fetch(205, spec.sha256)
    assert path.read_bytes() == spec.data
    assert [s.status for s in site.seen("storage")] == [416, 200]
    assert "range" not in site.seen("storage")[1].headers
    assert sleeps == []


def test_stale_part_that_does_not_verify_is_downloaded_again_once(site, tmp_path, sleeps):
    spec = site.add(206, Spec(_blob(9)))
    entry = tmp_path / "sha256" / spec.sha256[:2] / spec.sha256
    entry.parent.mkdir(parents=True)
    entry.with_name(entry.name + ".part").write_bytes(b"\0" * 3000)  # a prefix from some other upload

    path = _downloader(site, tmp_path, sleeps).fetch(206, spec.sha256)
    assert path.read_bytes() == spec.data
    assert [(s.status, s.headers.get("range")) for s in site.seen("storage")] == [(206, "bytes=3000-"), (200, None)]


# --- errors --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, error, status", [
    ("401json", DownloadAuthRequired, 401),
    ("401redirect", DownloadAuthRequired, 307),
    ("403json", DownloadEarlyAccess, 403),
    ("403redirect", DownloadEarlyAccess, 307),
    ("404json", DownloadNotFound, 404),
])
def test_gated_and_missing_files_raise_distinct_errors(site, tmp_path, sleeps, mode, error, status):
    spec = site.add(301, Spec(_blob(10), endpoint=mode))
    with pytest.raises(error) as caught:
        _downloader(site, tmp_path, sleeps).fetch(301, spec.sha256)
    assert caught.value.status == status and caught.value.version_id == 301
    assert site.seen("storage") == [] and sleeps == []  # no retries for answers retrying cannot change
    assert _cache_files(tmp_path) == []
    if error is DownloadAuthRequired:
        assert "CIVITAI_API_KEY" in str(caught.value)
    if mode == "403json":
        assert caught.value.deadline == "2026-04-01T00:00:00.000Z" and "2026-04-01" in str(caught.value)


def test_unknown_version_is_not_found(site, tmp_path, sleeps):
    with pytest.raises(DownloadNotFound):
        _downloader(site, tmp_path, sleeps).fetch(999, "a" * 64)


def test_errors_are_distinct_classes_with_one_base():
    classes = (DownloadAuthRequired, DownloadEarlyAccess, DownloadNotFound, DownloadHashMismatch, DownloadTooLarge)
    assert all(issubclass(c, DownloadError) for c in classes)
    assert len({c for c in classes}) == len(classes)
    assert not any(issubclass(a, b) for a in classes for b in classes if a is not b)


def test_wrong_bytes_raise_hash_mismatch_and_leave_nothing(site, tmp_path, sleeps):
    spec = site.add(302, Spec(_blob(11), served=_blob(12)))
    with pytest.raises(DownloadHashMismatch) as caught:
        _downloader(site, tmp_path, sleeps).fetch(302, spec.sha256)
    assert caught.value.expected == spec.sha256 and caught.value.actual == hashlib.sha256(_blob(12)).hexdigest()
    assert _cache_files(tmp_path) == []
    assert _downloader(site, tmp_path, sleeps).cached_path(spec.sha256) is None


def test_size_cap(site, tmp_path, sleeps):
    spec = site.add(303, Spec(_blob(13)))
    with pytest.raises(DownloadTooLarge):
        _downloader(site, tmp_path, sleeps, max_bytes=SIZE - 1).fetch(303, spec.sha256)
    assert _cache_files(tmp_path) == []
    assert _downloader(site, tmp_path, sleeps, max_bytes=SIZE).fetch(303, spec.sha256).read_bytes() == spec.data


# --- retries -------------------------------------------------------------------------------------------------------

def test_retries_429_and_5xx_with_backoff_honouring_retry_after(site, tmp_path, sleeps):
    spec = site.add(401, Spec(_blob(14), endpoint_failures=[503, (429, 7), 502], storage_failures=[500]))
    path = _downloader(site, tmp_path, sleeps, max_retries=5).fetch(401, spec.sha256)
    assert path.read_bytes() == spec.data
    assert len(sleeps) == 4 and sleeps[1] >= 7
    assert [s.status for s in site.seen("civitai")] == [503, 429, 502, 307, 307]


def test_expired_signed_url_is_retried_with_a_fresh_redirect(site, tmp_path, sleeps):
    spec = site.add(402, Spec(_blob(15), storage_failures=[403]))
    path = _downloader(site, tmp_path, sleeps).fetch(402, spec.sha256)
    assert path.read_bytes() == spec.data
    assert [s.status for s in site.seen()] == [307, 403, 307, 200]


def test_gives_up_after_max_retries(site, tmp_path, sleeps):
    spec = site.add(403, Spec(_blob(16), endpoint_failures=[500] * 10))
    with pytest.raises(DownloadError) as caught:
        _downloader(site, tmp_path, sleeps, max_retries=2).fetch(403, spec.sha256)
    assert type(caught.value) is DownloadError and "HTTP 500" in str(caught.value)
    assert len(sleeps) == 2 and len(site.seen("civitai")) == 3
    assert _cache_files(tmp_path) == []


def test_connection_refused_is_retried_then_reported(tmp_path, sleeps):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    downloader = ModelDownloader(tmp_path, base_url=f"http://127.0.0.1:{port}", max_retries=2, sleep=sleeps,
                                 timeout=2)
    with pytest.raises(DownloadError, match="ConnectionError"):
        downloader.fetch(1, "b" * 64)
    assert len(sleeps) == 2


# --- the key -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("token_in_query", [False, True])
def test_key_goes_to_civitai_only_and_is_never_logged(site, tmp_path, sleeps, caplog, token_in_query):
    caplog.set_level(logging.DEBUG)  # urllib3 logs every request line at DEBUG
    spec = site.add(501, Spec(_blob(17), endpoint="keyed", endpoint_failures=[503], drop_after=[2000]))
    downloader = _downloader(site, tmp_path, sleeps, api_key=API_KEY, token_in_query=token_in_query)
    path = downloader.fetch(501, spec.sha256)
    assert path.read_bytes() == spec.data

    civitai, storage = site.seen("civitai"), site.seen("storage")
    assert all(s.headers.get("authorization") == f"Bearer {API_KEY}" for s in civitai)
    assert all(s.query.get("token") == ([API_KEY] if token_in_query else None) for s in civitai)
    assert len(storage) == 2
    for s in storage:
        assert "authorization" not in s.headers and "token" not in s.query
        assert API_KEY not in json.dumps([s.path, s.query, s.headers])

    gated = site.add(502, Spec(_blob(18), endpoint="401json"))
    with pytest.raises(DownloadAuthRequired) as caught:
        downloader.fetch(502, gated.sha256)
    assert API_KEY not in str(caught.value) and "not accept the API key" in str(caught.value)
    assert API_KEY not in repr(downloader)
    assert "GET /api/download/models/501" in caplog.text  # the debug lines were captured...
    assert API_KEY not in caplog.text  # ...with the key nowhere in them
    assert "deadbeef" not in caplog.text  # nor the storage signature in our own lines
    assert API_KEY not in "".join(str(p) for p in tmp_path.rglob("*"))
    for sidecar in tmp_path.rglob("*.json"):
        assert API_KEY not in sidecar.read_text()


def test_key_unlocks_a_gated_file(site, tmp_path, sleeps):
    spec = site.add(503, Spec(_blob(19), endpoint="keyed"))
    with pytest.raises(DownloadAuthRequired):
        _downloader(site, tmp_path, sleeps).fetch(503, spec.sha256)
    assert _downloader(site, tmp_path, sleeps, api_key=API_KEY).fetch(503, spec.sha256).read_bytes() == spec.data


# --- concurrency ---------------------------------------------------------------------------------------------------

def test_eight_threads_download_one_file_once(site, tmp_path, sleeps):
    spec = site.add(601, Spec(_blob(20), chunk_delay=0.03))  # ~0.3 s body: every thread arrives while it runs
    downloader = _downloader(site, tmp_path, sleeps)
    barrier = threading.Barrier(8)
    results, errors = [], []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(downloader.fetch(601, spec.sha256))
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(results) == 8 and len(set(results)) == 1
    assert results[0].read_bytes() == spec.data
    assert site.bodies_served() == 1 and len(site.seen("civitai")) == 1


def test_eight_downloaders_in_threads_share_the_file_lock(site, tmp_path, sleeps):
    """Separate downloader objects (no shared in-process lock) still serialise on the flock."""
    spec = site.add(602, Spec(_blob(21), chunk_delay=0.03))
    barrier = threading.Barrier(8)
    results = []

    def worker() -> None:
        downloader = _downloader(site, tmp_path, sleeps)
        barrier.wait()
        results.append(downloader.fetch(602, spec.sha256))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 8 and len(set(results)) == 1
    assert site.bodies_served() == 1 and len(site.seen("civitai")) == 1


_CHILD = """
import sys, time
from pathlib import Path
from crawlers.downloads import ModelDownloader
cache, base, sha, me, other = sys.argv[1:6]
d = ModelDownloader(Path(cache), base_url=base, timeout=10, allow_hosts=("127.0.0.1",))
before = d.cached_path(sha)
Path(cache, me).touch()
deadline = time.time() + 10
while not Path(cache, other).exists() and time.time() < deadline:
    time.sleep(0.005)
print(before, d.fetch(701, sha), flush=True)
"""


def test_two_processes_download_one_file_once(site, tmp_path):
    spec = site.add(701, Spec(_blob(22), chunk_delay=0.05))  # ~0.5 s body
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path), site.civitai_url, spec.sha256,
                                  f"ready{i}", f"ready{1 - i}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [child.communicate(timeout=30) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    entry = tmp_path / "sha256" / spec.sha256[:2] / spec.sha256
    assert sorted(out.split() for out, _ in outputs) == [["None", str(entry)]] * 2  # neither had it when it started
    assert entry.read_bytes() == spec.data
    assert site.bodies_served() == 1 and len(site.seen("civitai")) == 1


# --- settings ------------------------------------------------------------------------------------------------------

def test_from_settings(tmp_path):
    settings = Settings(zoo_home=tmp_path, database_url=None, civitai_base_url="https://civitai.example",
                        civitai_api_key="k-123", civitai_max_retries=4)
    downloader = from_settings(settings)
    assert downloader.cache_dir == tmp_path / "files"
    assert downloader.base_url == "https://civitai.example" and downloader.max_retries == 4
    assert downloader.entry_path("AB" * 32) == tmp_path / "files" / "sha256" / "ab" / ("ab" * 32)
    assert "k-123" not in repr(downloader)


# --- issue 13, item 7: error text, disk full, the catalogue's size ----------------------------------------------

def test_a_not_found_answer_that_echoes_the_request_does_not_leak_the_key(site, tmp_path, sleeps):
    spec = site.add(601, Spec(_blob(30), endpoint="404echo"))
    with pytest.raises(DownloadNotFound) as caught:
        _downloader(site, tmp_path, sleeps, api_key=API_KEY, token_in_query=True).fetch(601, spec.sha256)
    assert "nothing at /api/download/models/601" in str(caught.value)  # the server's words are kept...
    assert API_KEY not in str(caught.value) and quote(API_KEY, safe="") not in str(caught.value)  # ...not the key


class _FullDisk:
    """Wraps the downloader's `open`: writes to a .part fail with ENOSPC once `room` bytes are written."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, file, mode="r", *args, **kwargs):
        handle = open(file, mode, *args, **kwargs)
        if not str(file).endswith(".part") or "r" in mode:
            return handle
        disk, write = self, handle.write

        def limited(data):
            if len(data) > disk.room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            disk.room -= len(data)
            return write(data)

        handle.write = limited
        return handle


def test_disk_full_is_a_clear_download_error_and_removes_the_part(site, tmp_path, sleeps, monkeypatch):
    import crawlers.downloads as downloads

    spec = site.add(602, Spec(_blob(31, size=3 * 1024 * 1024)))
    monkeypatch.setattr(downloads, "open", _FullDisk(room=1024 * 1024), raising=False)
    with pytest.raises(DownloadError) as caught:
        _downloader(site, tmp_path, sleeps).fetch(602, spec.sha256)
    message = str(caught.value)
    assert type(caught.value) is DownloadError and not isinstance(caught.value, OSError)
    assert "no space left on" in message and str(tmp_path) in message and "needs 3.1 MB" in message, message
    assert _cache_files(tmp_path) == []  # the partial file is gone
    assert sleeps == []  # not retried: a full disk stays full
    monkeypatch.undo()
    assert _downloader(site, tmp_path, sleeps).fetch(602, spec.sha256).read_bytes() == spec.data


def test_a_file_larger_than_the_catalogue_says_is_refused_and_removed(site, tmp_path, sleeps):
    big = 4 * 1024 * 1024
    spec = site.add(603, Spec(_blob(32, size=big)))
    downloader = _downloader(site, tmp_path, sleeps)
    with pytest.raises(DownloadTooLarge) as caught:  # the catalogue says 1 MiB: 4 MiB is not that file
        downloader.fetch(603, spec.sha256, expected_bytes=1024 * 1024)
    assert "catalogue" in str(caught.value) and _cache_files(tmp_path) == []
    # Within the margin (Civitai's sizeKB is rounded, files are re-uploaded): accepted.
    path = downloader.fetch(603, spec.sha256, expected_bytes=big - 100_000)
    assert path.read_bytes() == spec.data


def test_a_body_longer_than_the_catalogue_says_is_cut_off_as_it_streams(site, tmp_path, sleeps):
    spec = site.add(604, Spec(_blob(33, size=3 * 1024 * 1024), no_length=True))
    sizes = []
    with pytest.raises(DownloadTooLarge):
        _downloader(site, tmp_path, sleeps, chunk_size=64 * 1024).fetch(
            604, spec.sha256, expected_bytes=1024 * 1024, progress=lambda done, total: sizes.append(done))
    assert sizes and max(sizes) <= 1024 * 1024 * 1.05 + 1024 * 1024  # nothing past the cap was kept
    assert _cache_files(tmp_path) == []


def test_a_redirect_away_from_civitai_to_a_private_address_is_refused(site, tmp_path, sleeps):
    """Without an allow list, the storage host the endpoint redirects to (loopback here) is refused before any
    request reaches it: Civitai data cannot point the downloader at the LAN or cloud metadata."""
    spec = site.add(190, Spec(_blob(90)))
    downloader = _downloader(site, tmp_path, sleeps, allow_hosts=())
    with pytest.raises(DownloadError, match="redirect refused"):
        downloader.fetch(190, spec.sha256)
    assert [s.server for s in site.seen()] == ["civitai"]
    assert _cache_files(tmp_path) == []
