"""Download model files (checkpoints, LoRAs, ...) from Civitai into a verified, content-addressed cache.

`ModelDownloader.fetch(version_id, sha256)` asks `{site}/api/download/models/{version_id}` for a version's primary
file (API.md 1.10), follows the 307 to the pre-signed storage URL itself, and returns the cached path once the bytes
hash to the expected SHA256 (the caller passes `model_files.sha256`). The cache is

    <cache_dir>/sha256/<first 2 hex>/<sha256>          the verified file (never anything else)
    <cache_dir>/sha256/<first 2 hex>/<sha256>.json     sidecar: the original file name, size, version id
    <cache_dir>/sha256/<first 2 hex>/<sha256>.part     an interrupted download, resumed with HTTP Range
    <cache_dir>/sha256/<first 2 hex>/<sha256>.lock     flock'd while one thread or process downloads the file

so a file already in the cache costs no network at all, and concurrent requests (threads or processes) for one file
download it once: the lock is taken, then the cache checked again.

Failures: 401 / login redirect -> DownloadAuthRequired; 403 early access / join redirect -> DownloadEarlyAccess;
404 -> DownloadNotFound; wrong bytes -> DownloadHashMismatch (the .part is deleted); over the size cap (`max_bytes`,
or the catalogue's size of the file given as `expected_bytes` plus a margin) -> DownloadTooLarge (the .part is
deleted); a full disk -> DownloadError "no space left on <cache> (needs N MB)" (the .part is deleted, to give the
space back); everything else that retrying cannot fix, or retries running out -> DownloadError (the base of all of
them). 429, 5xx, connection errors, truncated bodies and a refused storage signature (401/403 from the storage
host, e.g. an expired pre-signed URL) are retried through the shared policy (`crawlers.http_retry`: jittered
exponential backoff, Retry-After honoured; a host that does not resolve fails at once); each retry asks the download
endpoint for a fresh redirect and resumes from the bytes already written. An attempt that made progress resets the
retry count, so a long download over a flaky line keeps going while it moves forward.

The API key goes only to the Civitai origin (Bearer header; also `?token=` when `token_in_query=True`, for hosts
that only read the query). Redirects are followed by hand and Authorization is never sent to another origin (the
storage host). The key, `token=` values and storage signatures are scrubbed from every log line and error message.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import requests
import urllib3

from crawlers.civitai_client import USER_AGENT
from crawlers.url_guard import RefusedURL, UnresolvableHost, UrlGuard
from crawlers.http_retry import (
    NameResolutionFailed,
    RetriesExhausted,
    RetryPolicy,
    TransientError,
    raise_for_retryable_status,
)

try:  # POSIX: a lock shared by processes; elsewhere only threads of this process are serialised
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

Progress = Callable[[int, "int | None"], None]
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
# A file may be this much larger than the catalogue's size of it (Civitai's sizeKB is rounded; authors re-upload)
# before it is taken for something else and refused.
SIZE_MARGIN_SHARE, SIZE_MARGIN_BYTES = 0.05, 1 << 20
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_SECRET_PARAM_RE = re.compile(
    r"(?i)\b(token|x-amz-signature|x-amz-credential|x-amz-security-token|signature)=[^&\s'\"]+")


# --- errors -------------------------------------------------------------------------------------------------------

class DownloadError(RuntimeError):
    """A download that did not produce a verified file. Subclasses say why; `status` is the HTTP status if any."""

    def __init__(self, message: str, *, version_id: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.version_id = version_id
        self.status = status


class DownloadAuthRequired(DownloadError):
    """401 or a redirect to /login?reason=download-auth: the creator requires a logged-in (API key) download."""


class DownloadEarlyAccess(DownloadError):
    """403 "Early Access" or a redirect with reason=early-access: only supporters may download it until `deadline`."""

    def __init__(self, message: str, *, version_id: int | None = None, status: int | None = None,
                 deadline: str | None = None) -> None:
        super().__init__(message, version_id=version_id, status=status)
        self.deadline = deadline


class DownloadNotFound(DownloadError):
    """404: the version or its file does not exist (deleted, unpublished, or never existed)."""


class DownloadHashMismatch(DownloadError):
    """The downloaded bytes do not hash to the expected SHA256; nothing was kept."""

    def __init__(self, message: str, *, version_id: int | None = None, expected: str = "", actual: str = "") -> None:
        super().__init__(message, version_id=version_id)
        self.expected, self.actual = expected, actual


class DownloadTooLarge(DownloadError):
    """The file is bigger than the downloader's `max_bytes` cap; nothing was kept."""


@dataclass(frozen=True)
class _Cap:
    """The most bytes a download may have, and how to say so when it has more."""

    limit: int
    why: str  # e.g. "the 1000000-byte cap"


class _Restart(Exception):
    """The .part file cannot be resumed (416 beyond its end, a range we did not ask for): start again from zero."""


# --- helpers ------------------------------------------------------------------------------------------------------

def normalise_sha256(value: str) -> str:
    """The lower-case hex form used for cache paths; `model_files.sha256` is stored upper-cased."""
    value = (value or "").strip()
    if not _SHA256_RE.match(value):
        raise ValueError(f"not a SHA256 hex digest: {value!r}")
    return value.lower()


def filename_from_disposition(value: str | None) -> str | None:
    """The file name of a Content-Disposition value (RFC 6266 / 2231 `filename*` included), made safe to store:
    no directories, no control characters, never '.' or '..'."""
    if not value:
        return None
    message = Message()
    message["content-disposition"] = value
    try:
        name = message.get_filename()
    except Exception:  # noqa: BLE001 - a malformed header is just "no name"
        return None
    return _safe_name(name)


def _safe_name(name: str | None) -> str | None:
    if not name:
        return None
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if name in ("", ".", ".."):
        return None
    return name[:255]


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header such as 'bytes 100-199/1000' or 'bytes */1000'."""
    match = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value or "")
    if not match:
        return None, None
    first = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return first, total


def _hash_file(path: Path, hasher: Any | None = None, block: int = 1 << 20) -> Any:
    hasher = hasher or hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            hasher.update(chunk)
    return hasher


def _body_chunks(response: requests.Response, size: int) -> Iterator[bytes]:
    """The body as it arrives. `read1` hands over every byte received before a dropped connection (a fixed-size
    read loses its partly filled last block), so a resume starts exactly where the bytes stopped."""
    raw = response.raw
    if not hasattr(raw, "read1"):  # pragma: no cover - urllib3 1.x
        yield from response.iter_content(size)
        return
    while data := raw.read1(size):
        yield data


class _RedactQueryToken(logging.Filter):
    """Scrubs `token=` and pre-signed URL signatures from urllib3's debug lines (it logs every request URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = _SECRET_PARAM_RE.sub(r"\1=***", message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        return True


_URLLIB3_FILTER = _RedactQueryToken()


# --- the downloader -----------------------------------------------------------------------------------------------

class ModelDownloader:
    """Fetches model files by version id into a content-addressed, SHA256-verified cache. Thread- and process-safe."""

    def __init__(self, cache_dir: Path, *, base_url: str, api_key: str | None = None, timeout: float = 60,
                 max_retries: int = 5, backoff_base: float = 1.0, chunk_size: int = 1 << 20,
                 sleep: Callable[[float], None] = time.sleep, backoff_cap: float = 60.0,
                 max_bytes: int | None = None, token_in_query: bool = False, max_redirects: int = 5,
                 allow_hosts: tuple[str, ...] = ()) -> None:
        """`allow_hosts` (Settings.fetch_allow_hosts): the non-public hosts a redirect away from Civitai may lead to."""
        self.cache_dir = Path(cache_dir)
        self.base_url = base_url.rstrip("/")
        if urlsplit(self.base_url).scheme not in ("http", "https"):
            raise ValueError(f"base_url must be an http(s) site root, got {base_url!r}")
        self._api_key = api_key or None
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.chunk_size = chunk_size
        self.max_bytes = max_bytes
        self.token_in_query = token_in_query
        self.max_redirects = max_redirects
        self._policy = RetryPolicy(max_attempts=max_retries + 1, backoff_base=backoff_base, backoff_cap=backoff_cap,
                                   sleep=sleep)
        self._origin = _origin(self.base_url)
        self._guard = UrlGuard(allow_hosts)
        self._thread_locks: dict[str, threading.Lock] = {}
        self._thread_locks_guard = threading.Lock()
        # urllib3 logs each request line at DEBUG, query included: scrub `token=` and the storage signatures.
        pool_logger = logging.getLogger("urllib3.connectionpool")
        if _URLLIB3_FILTER not in pool_logger.filters:
            pool_logger.addFilter(_URLLIB3_FILTER)

    def __repr__(self) -> str:  # never show the key
        return f"ModelDownloader({str(self.cache_dir)!r}, base_url={self.base_url!r})"

    # -- the cache --

    def entry_path(self, sha256: str) -> Path:
        """Where the verified file for this hash lives (whether or not it is there yet)."""
        digest = normalise_sha256(sha256)
        return self.cache_dir / "sha256" / digest[:2] / digest

    def cached_path(self, sha256: str) -> Path | None:
        """The verified file if it is in the cache, else None. Never touches the network."""
        path = self.entry_path(sha256)
        return path if path.is_file() else None

    def cached_file_name(self, sha256: str) -> str | None:
        """The file's original name (from Content-Disposition, else the caller's hint), if the sidecar has one."""
        sidecar = self._sidecar_path(self.entry_path(sha256))
        try:
            return json.loads(sidecar.read_text(encoding="utf-8")).get("file_name")
        except (OSError, ValueError, AttributeError):
            return None

    @staticmethod
    def _sidecar_path(entry: Path) -> Path:
        return entry.with_name(entry.name + ".json")

    @staticmethod
    def _part_path(entry: Path) -> Path:
        return entry.with_name(entry.name + ".part")

    # -- fetching --

    def fetch(self, version_id: int, sha256: str, *, file_name_hint: str | None = None,
              progress: Progress | None = None, expected_bytes: int | None = None) -> Path:
        """The cached, verified file of this version: from the cache if present (no network), else downloaded once
        (other threads and processes asking for the same hash wait for it), resumed from a .part if one is left.

        `expected_bytes` is the catalogue's size of the file (model_files.size_kb): a file larger by more than
        5% + 1 MiB is refused as it arrives and removed. `progress(done, total)` hears of every chunk written."""
        version_id = int(version_id)
        entry = self.entry_path(sha256)
        digest = entry.name
        if entry.is_file():
            self._ensure_sidecar(entry, version_id, file_name_hint)
            return entry
        cap = self._cap(version_id, expected_bytes)
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            with self._locked(entry):
                if entry.is_file():  # another thread or process finished it while we waited
                    self._ensure_sidecar(entry, version_id, file_name_hint)
                    return entry
                return self._download(version_id, digest, entry, file_name_hint, progress, cap)
        except OSError as error:  # the cache's own files: its folder, the lock, the rename
            if error.errno in _DISK_FULL:
                raise self._disk_full(version_id, self._part_path(entry), None) from None
            raise DownloadError(f"model version {version_id}: cannot write the download cache {self.cache_dir}: "
                                f"{error.strerror or error}", version_id=version_id) from None

    def _cap(self, version_id: int, expected_bytes: int | None) -> _Cap | None:
        caps = []
        if self.max_bytes is not None:
            caps.append(_Cap(self.max_bytes, f"the {self.max_bytes}-byte cap"))
        if expected_bytes is not None and expected_bytes > 0:
            limit = int(expected_bytes * (1 + SIZE_MARGIN_SHARE)) + SIZE_MARGIN_BYTES
            caps.append(_Cap(limit, f"the catalogue's size of its file ({expected_bytes} bytes; at most {limit} "
                                    "accepted)"))
        return min(caps, key=lambda cap: cap.limit) if caps else None

    def _disk_full(self, version_id: int, part: Path, total: int | None) -> DownloadError:
        """The .part is removed (a full disk must get its space back) and the error says how much is needed."""
        part.unlink(missing_ok=True)
        try:
            free = f", {shutil.disk_usage(self.cache_dir).free / 1e6:,.1f} MB free"
        except OSError:
            free = ""
        needs = f"needs {total / 1e6:,.1f} MB{free}" if total else f"the file's size is unknown{free}"
        return DownloadError(f"model version {version_id}: no space left on {self.cache_dir} ({needs}); the partial "
                             "download was removed: free some space (or point ZOO_HOME elsewhere) and try again",
                             version_id=version_id)

    @contextmanager
    def _locked(self, entry: Path) -> Iterator[None]:
        with self._thread_locks_guard:
            thread_lock = self._thread_locks.setdefault(entry.name, threading.Lock())
        with thread_lock:
            if fcntl is None:  # pragma: no cover
                yield
                return
            fd = os.open(entry.with_name(entry.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)

    def _download(self, version_id: int, digest: str, entry: Path, hint: str | None,
                  progress: Progress | None, cap: _Cap | None) -> Path:
        part = self._part_path(entry)
        log.info("downloading model version %d (sha256 %s) from %s", version_id, digest[:12], self._origin[1])
        with requests.Session() as session:
            try:
                name = self._policy.call(lambda: self._verified_try(session, version_id, digest, part, progress, cap),
                                         label=f"model version {version_id}", redact=self._redact)
            except RetriesExhausted as gave_up:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"model version {version_id}: gave up after {self.max_retries} retries; last problem: "
                    f"{gave_up.problem}" + (f" ({kept} bytes kept in {part.name} for resume)" if kept else ""),
                    version_id=version_id) from None
            except NameResolutionFailed as offline:
                raise DownloadError(f"model version {version_id}: {offline}", version_id=version_id) from None
            except requests.RequestException as error:  # not transient (an invalid redirect URL, ...)
                raise DownloadError(f"model version {version_id}: {self._redact(f'{type(error).__name__}: {error}')}",
                                    version_id=version_id) from None
            except DownloadNotFound:
                part.unlink(missing_ok=True)  # the file is gone; there is nothing to resume
                raise
        return self._commit(part, entry, version_id, name or _safe_name(hint))

    def _verified_try(self, session: requests.Session, version_id: int, digest: str, part: Path,
                      progress: Progress | None, cap: _Cap | None, *, fresh: bool = False) -> str | None:
        """One try, resuming the .part, up to bytes that hash to `digest`; returns the server's file name if any.

        A .part that cannot be resumed (416 beyond its end, a range we did not ask for), or a resumed file that does
        not verify (the kept prefix may be from another upload of the file), is deleted and fetched again from zero
        at once, `fresh`, once: no failure counted, no backoff."""
        offset = part.stat().st_size if part.exists() else 0
        try:
            actual, name, resumed = self._attempt(session, version_id, part, offset, progress, cap)
        except _Restart as why:
            part.unlink(missing_ok=True)
            if fresh:
                raise TransientError(str(why)) from None
            log.info("model version %d: %s; starting again from zero", version_id, self._redact(str(why)))
            return self._verified_try(session, version_id, digest, part, progress, cap, fresh=True)
        if actual == digest:
            return name
        part.unlink(missing_ok=True)
        if resumed and not fresh:
            log.warning("model version %d: resumed download does not verify; downloading again from zero", version_id)
            return self._verified_try(session, version_id, digest, part, progress, cap, fresh=True)
        raise DownloadHashMismatch(
            f"model version {version_id}: downloaded bytes hash to sha256 {actual}, expected {digest}; "
            "nothing was kept", version_id=version_id, expected=digest, actual=actual)

    def _attempt(self, session: requests.Session, version_id: int, part: Path, offset: int,
                 progress: Progress | None, cap: _Cap | None) -> tuple[str, str | None, bool]:
        """One try: from the download endpoint through its redirects to the bytes. Returns (sha256 of the whole .part,
        file name if the server gave one, whether earlier bytes were kept)."""
        url = self._endpoint_url(version_id)
        for _hop in range(self.max_redirects + 1):
            to_civitai = _origin(url) == self._origin
            headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
            if to_civitai:
                # JSON errors (401/403/404 bodies) instead of login pages, and the key only for this origin.
                headers["Accept"] = "application/json, application/octet-stream;q=0.9, */*;q=0.8"
                headers["Content-Type"] = "application/json"
                if self._api_key:
                    headers["Authorization"] = f"Bearer {self._api_key}"
            else:
                headers["Accept"] = "*/*"
            if offset:
                headers["Range"] = f"bytes={offset}-"
            response = session.get(url, headers=headers, stream=True, allow_redirects=False, timeout=self.timeout)
            with response:
                status = response.status_code
                if status in REDIRECT_STATUS:
                    location = response.headers.get("Location")
                    if not location:
                        raise DownloadError(f"model version {version_id}: HTTP {status} redirect without a Location",
                                            version_id=version_id, status=status)
                    url = urljoin(url, location)
                    self._check_gate_redirect(url, version_id, status)
                    if urlsplit(url).scheme not in ("http", "https"):
                        raise DownloadError(f"model version {version_id}: redirect to a non-http URL",
                                            version_id=version_id, status=status)
                    if _origin(url) != self._origin:
                        self._refuse_unsafe_hop(url, version_id, status)
                    log.debug("model version %d: HTTP %d redirect to %s", version_id, status, urlsplit(url).hostname)
                    continue
                if status in (200, 206):
                    return self._receive(response, url, to_civitai, version_id, part, offset, progress, cap)
                if status == 416:
                    return self._range_not_satisfiable(response, part, offset)
                self._raise_for_status(response, to_civitai, version_id)
        raise DownloadError(f"model version {version_id}: more than {self.max_redirects} redirects",
                            version_id=version_id)

    def _refuse_unsafe_hop(self, url: str, version_id: int, status: int) -> None:
        """A redirect away from the configured Civitai site must lead to a public address (or an allowed host), as
        an example image's must: Civitai data cannot point the downloader at loopback, the LAN or cloud metadata.
        The name is resolved here and again by the request (no pinned connection, unlike the image fetcher)."""
        try:
            self._guard.check(url)
        except (RefusedURL, UnresolvableHost) as error:
            raise DownloadError(f"model version {version_id}: HTTP {status} redirect {error}",
                                version_id=version_id, status=status) from None

    def _endpoint_url(self, version_id: int) -> str:
        url = f"{self.base_url}/api/download/models/{version_id}"
        if self.token_in_query and self._api_key:
            url += f"?token={quote(self._api_key, safe='')}"
        return url

    def _check_gate_redirect(self, url: str, version_id: int, status: int) -> None:
        """Civitai answers browsers (and clients it does not take for JSON ones) with redirects instead of 401/403."""
        parts = urlsplit(url)
        reasons = {value.lower() for value in parse_qs(parts.query).get("reason", [])}
        if "early-access" in reasons:
            raise DownloadEarlyAccess(
                f"model version {version_id} is in early access: only supporters can download it for now",
                version_id=version_id, status=status)
        login_page = _origin(url) == self._origin and parts.path.rstrip("/").endswith("/login")
        if "download-auth" in reasons or login_page:
            raise DownloadAuthRequired(self._auth_message(version_id), version_id=version_id, status=status)

    def _auth_message(self, version_id: int) -> str:
        if self._api_key:
            return (f"model version {version_id}: the creator requires a logged-in download and Civitai did not "
                    "accept the API key (check CIVITAI_API_KEY)")
        return (f"model version {version_id}: the creator requires you to be logged in to download it; "
                "set CIVITAI_API_KEY")

    def _raise_for_status(self, response: requests.Response, to_civitai: bool, version_id: int) -> None:
        status = response.status_code
        body = self._error_body(response)
        text = str(body.get("message") or body.get("error") or body.get("_text") or "").strip()[:300]
        raise_for_retryable_status(response)
        if status in (404, 410):
            where = "" if to_civitai else " (the storage host has no such object)"
            raise DownloadNotFound(
                f"model version {version_id}: not found{where}: HTTP {status} {self._redact(text)}".rstrip(),
                version_id=version_id, status=status)
        if not to_civitai and status in (401, 403):
            # e.g. an expired signature: the retry asks the download endpoint for a fresh one
            raise TransientError(f"storage host refused the signed URL: HTTP {status}")
        if status == 401:
            raise DownloadAuthRequired(self._auth_message(version_id), version_id=version_id, status=status)
        if status == 403:
            error = f"{body.get('error', '')} {body.get('message', '')}".lower()
            if "early access" in error or "early-access" in error or "deadline" in body:
                deadline = body.get("deadline")
                raise DownloadEarlyAccess(
                    f"model version {version_id} is in early access" + (f" until {deadline}" if deadline else "")
                    + ": only supporters can download it for now",
                    version_id=version_id, status=status, deadline=None if deadline is None else str(deadline))
        raise DownloadError(f"model version {version_id}: HTTP {status} {self._redact(text)}".rstrip(),
                            version_id=version_id, status=status)

    @staticmethod
    def _error_body(response: requests.Response) -> dict:
        """The first 64 KB of an error body, as JSON if it is a JSON object, else {'_text': ...}."""
        try:
            raw = next(response.iter_content(1 << 16), b"")
        except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError):
            raw = b""
        try:
            body = json.loads(raw)
        except ValueError:
            return {"_text": raw.decode("utf-8", "replace")[:300]}
        return body if isinstance(body, dict) else {"_text": str(body)[:300]}

    def _range_not_satisfiable(self, response: requests.Response, part: Path,
                               offset: int) -> tuple[str, str | None, bool]:
        """416 to `Range: bytes=N-`: the .part may already hold the whole file (killed before the rename)."""
        _, total = _content_range(response.headers.get("Content-Range"))
        if offset and total is not None and total == offset:
            return _hash_file(part).hexdigest(), None, True
        raise _Restart(f"HTTP 416 for a resume from byte {offset} (file size {total if total is not None else '?'})")

    def _receive(self, response: requests.Response, url: str, to_civitai: bool, version_id: int, part: Path,
                 offset: int, progress: Progress | None, cap: _Cap | None) -> tuple[str, str | None, bool]:
        """Stream a 200 (whole file) or 206 (the rest after `offset`) into the .part, hashing as it goes."""
        headers = response.headers
        content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
        if to_civitai and content_type == "text/html":
            raise DownloadError(f"model version {version_id}: Civitai answered with an HTML page instead of the file "
                                "(a login or challenge page?)", version_id=version_id, status=response.status_code)
        total: int | None
        if response.status_code == 206:
            first, total = _content_range(headers.get("Content-Range"))
            if first is None or not offset:
                raise _Restart(f"HTTP 206 with an unexpected Content-Range {headers.get('Content-Range')!r}")
            if first != offset:
                raise _Restart(f"asked for bytes from {offset}, got a range from {first}")
        else:
            if offset:
                log.info("model version %d: the server ignored Range; downloading again from zero", version_id)
            offset = 0
            length = headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if cap is not None and total is not None and total > cap.limit:
            part.unlink(missing_ok=True)
            raise DownloadTooLarge(f"model version {version_id}: {total} bytes is more than {cap.why}; nothing was "
                                   "kept", version_id=version_id, status=response.status_code)
        name = filename_from_disposition(headers.get("Content-Disposition")) or self._name_from_signed_url(url)
        try:
            done, digest = self._write_body(response, version_id, part, offset, total, progress, cap)
        except OSError as error:  # writing the .part (reading the body wraps its own errors)
            if error.errno in _DISK_FULL:
                raise self._disk_full(version_id, part, total) from None
            raise DownloadError(f"model version {version_id}: cannot write {part}: {error.strerror or error}",
                                version_id=version_id) from None
        if total is not None and done < total:
            raise TransientError(f"truncated body: {done} of {total} bytes", progressed=done > offset)
        return digest, name, offset > 0

    def _write_body(self, response: requests.Response, version_id: int, part: Path, offset: int, total: int | None,
                    progress: Progress | None, cap: _Cap | None) -> tuple[int, str]:
        """Append the body to the .part; returns the bytes the .part holds and the sha256 of them all."""
        hasher = _hash_file(part) if offset else hashlib.sha256()
        done = offset
        if progress:
            progress(done, total)
        chunks = _body_chunks(response, self.chunk_size)
        with open(part, "ab" if offset else "wb") as out:
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                        OSError) as error:
                    out.flush()
                    raise TransientError(
                        f"connection lost after {done} of {total or '?'} bytes: {type(error).__name__}",
                        progressed=done > offset) from None
                if not chunk:
                    continue
                if cap is not None and done + len(chunk) > cap.limit:
                    out.close()
                    part.unlink(missing_ok=True)
                    raise DownloadTooLarge(f"model version {version_id}: more than {cap.why}; nothing was kept",
                                           version_id=version_id, status=response.status_code)
                out.write(chunk)
                hasher.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        return done, hasher.hexdigest()

    @staticmethod
    def _name_from_signed_url(url: str) -> str | None:
        """Pre-signed storage URLs carry the name as `response-content-disposition=attachment; filename="..."`."""
        values = parse_qs(urlsplit(url).query).get("response-content-disposition")
        return filename_from_disposition(values[0]) if values else None

    def _commit(self, part: Path, entry: Path, version_id: int, name: str | None) -> Path:
        """Move the verified .part into place (atomic rename), then record its name in the sidecar."""
        os.replace(part, entry)
        self._write_sidecar(entry, version_id, name)
        try:  # make the rename durable
            fd = os.open(entry.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
        log.info("model version %d: cached %s (%d bytes) as %s", version_id, name or "file", entry.stat().st_size,
                 entry)
        return entry

    def _ensure_sidecar(self, entry: Path, version_id: int, hint: str | None) -> None:
        if not self._sidecar_path(entry).exists():
            self._write_sidecar(entry, version_id, _safe_name(hint))

    def _write_sidecar(self, entry: Path, version_id: int, name: str | None) -> None:
        sidecar = self._sidecar_path(entry)
        record = {"sha256": entry.name, "file_name": name, "size": entry.stat().st_size, "version_id": version_id,
                  "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        tmp = sidecar.with_name(f"{sidecar.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, sidecar)
        except OSError as error:  # the file itself is cached; the name is a nicety
            log.warning("sidecar not written for %s: %s", entry.name, error)
            tmp.unlink(missing_ok=True)

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***").replace(quote(self._api_key, safe=""), "***")
        return _SECRET_PARAM_RE.sub(r"\1=***", text)


def from_settings(settings: Any, **overrides: Any) -> ModelDownloader:
    """The downloader the project uses: cache under ZOO_HOME/files, Civitai site and key from the settings."""
    options: dict[str, Any] = {
        "base_url": settings.civitai_base_url,
        "api_key": settings.civitai_api_key,
        "timeout": max(60.0, float(settings.civitai_timeout_seconds)),
        "max_retries": int(settings.civitai_max_retries),
        "allow_hosts": tuple(settings.fetch_allow_hosts),
    }
    options.update(overrides)
    return ModelDownloader(Path(settings.zoo_home) / "files", **options)
