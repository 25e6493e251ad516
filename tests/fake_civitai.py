"""A local fake of the Civitai REST API for crawler tests.

Why: the crawler must be tested against pagination, filters, duplicates, deletions and
network faults without touching civitai.com. This server mimics the parts of the real API
(see /work/shared/civitai/API.md sections 1.1-1.4, 1.8, 1.9) that a crawler can notice:
opaque cursors, `nextPage` links carrying all original params, `{"error": ...}` bodies,
429/5xx responses with or without `Retry-After`, and broken connections.

Stdlib only: `http.server.ThreadingHTTPServer` on 127.0.0.1, port 0, in a daemon thread.

Usage::

    with FakeCivitai(items, page_size=2) as fake:
        requests.get(fake.base_url + "/api/v1/models")
        fake.faults.append(Fault("503"))
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import socket
import string
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

__all__ = ["FAULT_KINDS", "ITEM_FAULT_KINDS", "LISTING_FAULT_KINDS", "PRIVATE_REDIRECT_TARGET",
           "TRANSPORT_FAULT_KINDS", "Fault", "FakeCivitai", "RequestRecord"]

# Faults of the transport: a crawler must survive every one of them and store the same rows.
TRANSPORT_FAULT_KINDS: frozenset[str] = frozenset(
    {"429", "429-retry-after", "500", "503", "slow", "truncate", "reset"}
)
# Faults of the listing itself, which a crawler must notice and fail on rather than loop or call complete:
# 'cursor-cycle' answers a page's nextCursor with the previous page's cursor (A -> B -> A), 'repeated-cursor'
# answers the cursor the page was asked with (a page that points at itself). Both apply to listing requests made
# with a cursor (the first page has none), and to nothing else.
LISTING_FAULT_KINDS: frozenset[str] = frozenset({"cursor-cycle", "repeated-cursor"})
# 'redirect-private': any request is answered 302 to PRIVATE_REDIRECT_TARGET (cloud metadata), for SSRF tests.
PRIVATE_REDIRECT_TARGET = "http://169.254.169.254/latest/meta-data/"
FAULT_KINDS: frozenset[str] = TRANSPORT_FAULT_KINDS | LISTING_FAULT_KINDS | {"redirect-private"}
# Faults of the items a listing page holds (the catalogue must quarantine the bad item and store the rest):
# 'oversized-value' gives the page's first item a 20 kB incompressible baseModel (too big for a btree index row),
# 'colliding-version-id' gives it the first version id of the listing's first item, 'renamed-field' renames
# modelVersions to versions in every item of the page (schema drift). The served items themselves are not changed.
ITEM_FAULT_KINDS: frozenset[str] = frozenset({"oversized-value", "colliding-version-id", "renamed-field"})
FAULT_KINDS = FAULT_KINDS | ITEM_FAULT_KINDS

MODELS_PATH = "/api/v1/models"
_MODEL_RE = re.compile(r"^/api/v1/models/([^/]+)$")
_VERSION_RE = re.compile(r"^/api/v1/model-versions/([^/]+)$")
_BY_HASH_RE = re.compile(r"^/api/v1/model-versions/by-hash/([^/]+)$")

# The real API caps page-based paging at page*limit <= 1000 (API.md 1.1).
PAGE_CAP = 1000
_CURSOR_PREFIX = "fake:"


@dataclass
class Fault:
    """One injected failure; `kind` is one of FAULT_KINDS, `seconds` is used by 'slow'."""

    kind: str
    seconds: float = 0.0

    def __post_init__(self) -> None:
        # Fail at construction so a typo in a test does not silently inject nothing.
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(FAULT_KINDS)}")


@dataclass
class RequestRecord:
    """What the server saw and did for one request, so tests can assert on crawler behaviour."""

    number: int  # 1-based arrival order, the same count `fault_on_request` uses
    method: str
    path: str  # path only, without the query string
    query: dict[str, list[str]]  # parse_qs(keep_blank_values=True)
    headers: dict[str, str]
    raw_path: str = ""  # request target as sent (path + query)
    status: int | None = None  # status line sent; None for 'reset' (nothing was sent)
    fault: str | None = None  # fault kind suffered, or None

    @property
    def authorization(self) -> str | None:
        """The Authorization header, whatever its capitalisation, or None."""
        for key, value in self.headers.items():
            if key.lower() == "authorization":
                return value
        return None


class _BadRequest(Exception):
    """Raised while handling a request to answer 400 {"error": message}."""


def _encode_cursor(offset: int) -> str:
    """Make an opaque, URL-safe cursor for an offset into the filtered listing."""
    raw = f"{_CURSOR_PREFIX}{offset}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    """Reverse _encode_cursor; anything else is a client error, as with the real API."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise _BadRequest(f"Invalid cursor: {cursor!r}") from exc
    if not raw.startswith(_CURSOR_PREFIX) or not raw[len(_CURSOR_PREFIX):].isdigit():
        raise _BadRequest(f"Invalid cursor: {cursor!r}")
    return int(raw[len(_CURSOR_PREFIX):])


def _multi(query: dict[str, list[str]], name: str) -> set[str]:
    """Values of a param given repeated and/or comma-separated, like the real `types`."""
    out: set[str] = set()
    for value in query.get(name, []):
        out.update(part.strip() for part in value.split(",") if part.strip())
    return out


def _last(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _int_param(query: dict[str, list[str]], name: str) -> int | None:
    value = _last(query, name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise _BadRequest(f"Expected number for '{name}', received {value!r}") from exc


class FakeCivitai:
    """A fake civitai.com serving `items` (Civitai-format model dicts) in the given order.

    `items`, `deleted_ids`, `faults` and `fault_on_request` are read at request time, so a test
    may change them between (or during) crawls.
    """

    def __init__(
        self,
        items: list[dict],
        *,
        page_size: int = 3,
        repeat_item_across_pages: bool = False,
        page_delay: float = 0.0,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.items: list[dict] = items
        self.page_size = page_size
        self.repeat_item_across_pages = repeat_item_across_pages
        self.page_delay = page_delay  # seconds slept before answering each /models listing page
        self.faults: list[Fault] = []
        self.fault_on_request: dict[int, Fault] = {}
        self.deleted_ids: set[int] = set()
        self.requests: list[RequestRecord] = []
        self.base_url: str = ""
        self._lock = threading.Lock()
        self._count = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> "FakeCivitai":
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        host, port = server.server_address[:2]
        self.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-civitai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections so no handler thread lingers."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeCivitai":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- inspection
    def page_requests(self) -> list[RequestRecord]:
        """The /api/v1/models listing requests answered 200 with a complete body."""
        with self._lock:
            records = list(self.requests)
        return [
            r for r in records
            if r.path == MODELS_PATH and r.status == 200 and r.fault not in ("truncate", "reset")
        ]

    # ---------------------------------------------------------------- internals
    def _register(self, record_fields: dict[str, Any]) -> tuple[RequestRecord, Fault | None]:
        """Number the request, log it and pick its fault (per-number first, then the queue)."""
        with self._lock:
            self._count += 1
            number = self._count
            fault = self.fault_on_request.get(number)
            if fault is None and self.faults:
                fault = self.faults.pop(0)
            record = RequestRecord(number=number, fault=fault.kind if fault else None, **record_fields)
            self.requests.append(record)
        return record, fault

    def _visible_items(self) -> list[dict]:
        deleted = self.deleted_ids
        return [item for item in list(self.items) if item.get("id") not in deleted]

    def route(self, method: str, path: str, query: dict[str, list[str]], raw_query: str) -> tuple[int, dict, dict[str, str]]:
        """Compute (status, JSON body, extra headers) for a request, as the real API would."""
        if method not in ("GET", "HEAD"):
            return 404, {"error": "Not found"}, {}
        path = path.rstrip("/") or "/"
        try:
            if path == MODELS_PATH:
                return self._list_models(query, raw_query)
            if m := _BY_HASH_RE.match(path):
                return self._by_hash(m.group(1))
            if m := _VERSION_RE.match(path):
                return self._version(m.group(1))
            if m := _MODEL_RE.match(path):
                return self._model(m.group(1))
        except _BadRequest as exc:
            return 400, {"error": str(exc)}, {}
        return 404, {"error": "Not found"}, {}

    def _list_models(self, query: dict[str, list[str]], raw_query: str) -> tuple[int, dict, dict[str, str]]:
        limit = _int_param(query, "limit")
        limit = 100 if limit is None else limit
        if not 0 <= limit <= 100:
            raise _BadRequest(f"'limit' must be between 0 and 100, received {limit}")
        cursor = _last(query, "cursor")
        page = None if cursor else _int_param(query, "page")
        if page is not None:
            if page < 1:
                raise _BadRequest(f"'page' must be >= 1, received {page}")
            if _last(query, "query"):
                raise _BadRequest("Cannot use page param with query search. Use cursor-based pagination.")
            if page * limit > PAGE_CAP:
                return 429, {"error": "You've requested too many pages, please use cursors instead"}, {}
        offset = _decode_cursor(cursor) if cursor else 0

        items = self._visible_items()
        if (_last(query, "nsfw") or "false").lower() != "true":
            items = [i for i in items if not i.get("nsfw")]
        if types := _multi(query, "types"):
            items = [i for i in items if i.get("type") in types]
        if base_models := _multi(query, "baseModels"):
            items = [
                i for i in items
                if any(v.get("baseModel") in base_models for v in i.get("modelVersions") or [])
            ]
        if ids_raw := _multi(query, "ids"):
            try:
                ids = {int(x) for x in ids_raw}
            except ValueError as exc:
                raise _BadRequest(f"Invalid ids: {sorted(ids_raw)}") from exc
            items = [i for i in items if i.get("id") in ids]

        size = min(limit, self.page_size)
        if page is not None:
            offset = (page - 1) * size
        chunk = items[offset:offset + size]
        if self.repeat_item_across_pages and offset > 0 and chunk:
            # Mimic the real cursor bugs: the previous page's last item shows up again.
            chunk = [items[offset - 1], *chunk]
        metadata: dict[str, Any] = {}
        next_offset = offset + size
        if size > 0 and next_offset < len(items):
            next_cursor = _encode_cursor(next_offset)
            params = [(k, v) for k, v in parse_qsl(raw_query, keep_blank_values=True) if k not in ("cursor", "page")]
            metadata["nextCursor"] = next_cursor
            if page is not None:
                params.append(("page", str(page + 1)))
            else:
                params.append(("cursor", next_cursor))
            metadata["nextPage"] = f"{self.base_url}{MODELS_PATH}?{urlencode(params)}"
        if page is not None:
            metadata["currentPage"] = page
            metadata["pageSize"] = size
        return 200, {"items": chunk, "metadata": metadata}, {}

    def listing_fault(self, kind: str, query: dict[str, list[str]], raw_query: str, body: dict) -> dict:
        """A listing page's body with its next cursor bent by a LISTING_FAULT_KINDS fault (see there)."""
        cursor = _last(query, "cursor")
        if not cursor:
            return body
        if kind == "repeated-cursor":
            bent = cursor
        else:
            limit = _int_param(query, "limit")
            size = min(100 if limit is None else limit, self.page_size)
            offset = _decode_cursor(cursor)
            if offset < size:
                return body
            bent = _encode_cursor(offset - size)
        params = [(k, v) for k, v in parse_qsl(raw_query, keep_blank_values=True) if k not in ("cursor", "page")]
        metadata = dict(body.get("metadata") or {})
        metadata["nextCursor"] = bent
        metadata["nextPage"] = f"{self.base_url}{MODELS_PATH}?{urlencode([*params, ('cursor', bent)])}"
        return {**body, "metadata": metadata}

    def item_fault(self, kind: str, body: dict) -> dict:
        """A listing page's body with its items damaged by an ITEM_FAULT_KINDS fault (see there)."""
        items = json.loads(json.dumps(body.get("items") or []))  # a copy: the served items stay as they are
        if kind == "renamed-field":
            items = [{("versions" if key == "modelVersions" else key): value for key, value in item.items()}
                     for item in items]
        elif items and items[0].get("modelVersions"):
            version = items[0]["modelVersions"][0]
            if kind == "oversized-value":
                rng = random.Random(len(items))
                version["baseModel"] = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(20_000))
            else:
                first = next((i for i in self.items if i.get("modelVersions")), None)
                if first is not None:
                    version["id"] = first["modelVersions"][0]["id"]
        return {**body, "items": items}

    def _model(self, raw_id: str) -> tuple[int, dict, dict[str, str]]:
        if not raw_id.isdigit():
            raise _BadRequest(f"Expected number for 'id', received {raw_id!r}")
        model_id = int(raw_id)
        for item in self._visible_items():
            if item.get("id") == model_id:
                return 200, item, {}
        return 404, {"error": f"No model with id {model_id}"}, {}

    def _version_payload(self, item: dict, version: dict) -> dict:
        """The /model-versions shape: the version plus modelId and a small `model` summary."""
        payload = dict(version)
        payload["modelId"] = item.get("id")
        payload["model"] = {
            "name": item.get("name"),
            "type": item.get("type"),
            "nsfw": bool(item.get("nsfw", False)),
            "poi": bool(item.get("poi", False)),
        }
        return payload

    def _version(self, raw_id: str) -> tuple[int, dict, dict[str, str]]:
        if not raw_id.isdigit():
            raise _BadRequest(f"Expected number for 'id', received {raw_id!r}")
        version_id = int(raw_id)
        for item in self._visible_items():
            for version in item.get("modelVersions") or []:
                if version.get("id") == version_id:
                    return 200, self._version_payload(item, version), {}
        return 404, {"error": f"Version not found: {version_id}"}, {}

    def _by_hash(self, hash_: str) -> tuple[int, dict, dict[str, str]]:
        wanted = hash_.lower()
        for item in self._visible_items():
            for version in item.get("modelVersions") or []:
                for file in version.get("files") or []:
                    hashes = (file.get("hashes") or {}).values()
                    if any(isinstance(h, str) and h.lower() == wanted for h in hashes):
                        return 200, self._version_payload(item, version), {}
        return 404, {"error": f"Model not found: {hash_}"}, {}


_FAULT_RESPONSES: dict[str, tuple[int, dict, dict[str, str]]] = {
    "429": (429, {"error": "Too Many Requests"}, {}),
    "429-retry-after": (429, {"error": "Too Many Requests"}, {"Retry-After": "1"}),
    "500": (500, {"error": "Internal Server Error"}, {}),
    "503": (503, {"error": "Server busy, please retry shortly."}, {"Retry-After": "1"}),
}


def _make_handler(fake: FakeCivitai) -> type[BaseHTTPRequestHandler]:
    """Build a handler class bound to one FakeCivitai (http.server wants a class)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind Cloudflare
        server_version = "FakeCivitai/1.0"
        sys_version = ""
        timeout = 60  # idle keep-alive connections eventually free their thread
        disable_nagle_algorithm = True  # headers and body are two writes: avoid 40 ms delayed-ACK stalls

        def setup(self) -> None:
            super().setup()
            with fake._lock:
                fake._connections.add(self.connection)

        def finish(self) -> None:
            with fake._lock:
                fake._connections.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def log_message(self, format: str, *args: Any) -> None:
            """Stay silent: tests check that secrets never reach any log."""

        def do_GET(self) -> None:
            self._handle()

        def do_HEAD(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def do_PUT(self) -> None:
            self._handle()

        def do_DELETE(self) -> None:
            self._handle()

        def do_PATCH(self) -> None:
            self._handle()

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)  # drain so the connection stays usable
            split = urlsplit(self.path)
            record, fault = fake._register(
                {
                    "method": self.command,
                    "path": split.path,
                    "query": parse_qs(split.query, keep_blank_values=True),
                    "headers": dict(self.headers.items()),
                    "raw_path": self.path,
                }
            )
            kind = fault.kind if fault else None
            if kind == "reset":
                self._reset()
                return
            if fault is not None and kind == "slow":
                time.sleep(fault.seconds)
            if kind in _FAULT_RESPONSES:
                status, body, extra = _FAULT_RESPONSES[kind]
            elif kind == "redirect-private":
                status, body, extra = 302, {"error": "Moved"}, {"Location": PRIVATE_REDIRECT_TARGET}
            else:
                status, body, extra = fake.route(self.command, split.path, record.query, split.query)
                if split.path.rstrip("/") == MODELS_PATH and fake.page_delay > 0:
                    time.sleep(fake.page_delay)
                if kind in LISTING_FAULT_KINDS and status == 200 and split.path.rstrip("/") == MODELS_PATH:
                    body = fake.listing_fault(kind, record.query, split.query, body)
                if kind in ITEM_FAULT_KINDS and status == 200 and split.path.rstrip("/") == MODELS_PATH:
                    body = fake.item_fault(kind, body)
            record.status = status
            self._send(status, body, extra, truncate=(kind == "truncate"))

        def _send(self, status: int, body: dict, extra: dict[str, str], *, truncate: bool) -> None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            if truncate:
                # Promise the full length, deliver half, then hang up (FIN): an incomplete read.
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            self.wfile.write(data)

        def _reset(self) -> None:
            """Abort the TCP connection (RST) without sending a byte."""
            self.close_connection = True
            conn = self.connection
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            with fake._lock:
                fake._connections.discard(conn)
            # detach + os-level close really closes now, even though rfile/wfile still hold refs.
            fd = conn.detach()
            if fd >= 0:
                socket.socket(fileno=fd).close()

    return Handler
