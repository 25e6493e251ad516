"""A polite, fault-tolerant client for Civitai's public REST API (API.md): rate-limited, retrying, key-safe.

Retries 429, 5xx, timeouts, connection errors and truncated or unparsable bodies through the shared HTTP retry
policy (`crawlers.http_retry`: jittered exponential backoff, Retry-After honoured, a host that does not resolve
fails at once); other 4xx fail at once. The API key travels only in the Authorization header and is never logged or
put in URLs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests

from crawlers.http_retry import (
    NameResolutionFailed,
    RetriesExhausted,
    RetryPolicy,
    TransientError,
    raise_for_retryable_status,
)

USER_AGENT = "zoo-catalogue/0.1 (+crawler of the zoo model catalogue; python-requests)"


class CivitaiError(RuntimeError):
    """Civitai answered with an error that retrying will not fix, or kept failing until retries ran out."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CivitaiNotFound(CivitaiError):
    """404: the model or version does not exist, or was deleted or unpublished."""


class RateLimiter:
    """At most `per_second` request starts per second, shared by every thread using the client."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self._sleep(start - now)


class CivitaiClient:
    def __init__(self, base_url: str = "https://civitai.com", *, api_key: str | None = None,
                 requests_per_second: float = 1.0, timeout: float = 30.0, max_retries: int = 8,
                 backoff_base: float = 1.0, backoff_cap: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_root = self.base_url + "/api/v1/"
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self._policy = RetryPolicy(max_attempts=max_retries + 1, backoff_base=backoff_base, backoff_cap=backoff_cap,
                                   sleep=sleep)
        self._limiter = RateLimiter(requests_per_second, sleep=sleep)
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._session.headers["Accept"] = "application/json"
        if api_key:
            self._session.headers["Authorization"] = f"Bearer {api_key}"

    def __repr__(self) -> str:  # never show the key
        return f"CivitaiClient({self.base_url!r})"

    def close(self) -> None:
        self._session.close()

    def url(self, path: str, params: dict | None = None) -> str:
        url = urljoin(self.api_root, path.lstrip("/"))
        return f"{url}?{urlencode(params, doseq=True)}" if params else url

    def models_listing_url(self, types: Iterable[str] = (), base_models: Iterable[str] = (),
                           sort: str = "Newest", limit: int = 100) -> str:
        """The first page of /models: nsfw=true so the crawl is complete (the zoo filters locally)."""
        params: dict = {"limit": limit, "nsfw": "true", "sort": sort}
        if types:
            params["types"] = list(types)
        if base_models:
            params["baseModels"] = list(base_models)
        return self.url("models", params)

    def get_json(self, url: str) -> dict:
        """GET a URL of this API and parse its JSON body, retrying what is worth retrying (the shared policy)."""
        try:
            return self._policy.call(lambda: self._get_json_once(url), label=url)
        except RetriesExhausted as gave_up:
            raise CivitaiError(f"{url}: {gave_up}") from gave_up
        except NameResolutionFailed as offline:
            raise CivitaiError(f"{url}: {offline}") from offline

    def _get_json_once(self, url: str) -> dict:
        """One rate-limited attempt: 429/5xx and an unparsable (e.g. truncated) body are transient."""
        self._limiter.wait()
        response = raise_for_retryable_status(self._session.get(url, timeout=self.timeout))
        if response.status_code == 404:
            raise CivitaiNotFound(f"{url}: 404 {_error_text(response)}", 404)
        if response.status_code >= 400:
            raise CivitaiError(f"{url}: HTTP {response.status_code} {_error_text(response)}", response.status_code)
        try:
            body = response.json()
        except ValueError as error:
            raise TransientError(f"unparsable body ({len(response.content)} bytes): {error}") from None
        if not isinstance(body, dict):
            raise CivitaiError(f"{url}: expected a JSON object, got {type(body).__name__}")
        return body

    def reachable(self, timeout: float = 5.0) -> bool:
        """One quick, unretried probe: can this API answer a listing at all? (Offline machines fail fast.)"""
        try:
            response = self._session.get(self.url("models", {"limit": 1}), timeout=timeout)
            return response.status_code == 200 and isinstance(response.json(), dict)
        except (requests.RequestException, ValueError):
            return False

    def models_page(self, url: str) -> tuple[list, str | None]:
        """One listing page: its items and the next page's URL (None at the end).

        The next URL is this page's URL with `nextCursor` swapped in, so every filter is kept and the host stays
        ours (recorded nextPage values point at other hosts)."""
        body = self.get_json(url)
        items = body.get("items")
        if not isinstance(items, list):
            raise CivitaiError(f"{url}: listing has no items array")
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        cursor = metadata.get("nextCursor")
        if cursor in (None, "") or not items:
            return items, None
        return items, _with_param(url, "cursor", str(cursor))

    def model(self, model_id: int) -> dict:
        return self.get_json(self.url(f"models/{int(model_id)}"))



def _with_param(url: str, key: str, value: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != key]
    query.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)[:300]
    return str(body)[:300]
