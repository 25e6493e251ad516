"""The one retry policy for HTTP calls: the Civitai client, file downloads and the OpenAI-compatible chat client.

Why one: every caller needs the same rules, and four hand-written loops had drifted apart. Built on `tenacity`.

- A failed attempt is retried when it is transient: the caller raises `TransientError` for what it classifies as
  such (429, 5xx, a truncated or unparsable body, ...; `raise_for_retryable_status` covers the statuses), and
  requests' timeouts, dropped or refused connections and broken bodies are transient on their own.
- The wait honours `Retry-After` (delta-seconds or an HTTP date, capped by `max_retry_after`), never shorter than
  our own backoff; otherwise jittered exponential backoff: base * 2**(n-1), capped, times a factor in [0.5, 1].
- Attempts are bounded; a failure that made progress (`TransientError(progressed=True)`, e.g. a download that
  received bytes) starts the count again, so a long transfer over a flaky line keeps going while it moves forward.
- A host name that does not resolve is not retried: offline, DNS fails the same way every time, so the call fails
  at once with `NameResolutionFailed` instead of sleeping through its retries in silence.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

import requests
import tenacity
import urllib3

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})
MAX_RETRY_AFTER_SECONDS = 300.0
# Raised by requests for failures a later attempt may not meet (ConnectTimeout is both a Timeout and a
# ConnectionError; SSLError and ProxyError are ConnectionErrors).
TRANSIENT_REQUEST_ERRORS: tuple[type[BaseException], ...] = (
    requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
# What a failed connection surfaces as: requests wraps urllib3, which wraps the socket's OSError.
_CONNECTION_ERRORS = (requests.ConnectionError, urllib3.exceptions.HTTPError, OSError)
_RESOLUTION_TEXT = ("name or service not known", "temporary failure in name resolution", "nodename nor servname",
                    "no address associated with hostname", "getaddrinfo failed", "failed to resolve")


class TransientError(Exception):
    """One attempt failed in a way a later attempt may not (the caller's classification).

    `retry_after` is the server's Retry-After in seconds, if it sent one; `progressed` says the attempt moved the
    work forward (bytes received), which starts the attempt count again."""

    def __init__(self, problem: str, *, retry_after: float | None = None, progressed: bool = False) -> None:
        super().__init__(problem)
        self.retry_after, self.progressed = retry_after, progressed


class RetriesExhausted(RuntimeError):
    """Every attempt failed; `problem` describes the last failure (the caller words its own error from it)."""

    def __init__(self, attempts: int, problem: str) -> None:
        super().__init__(f"gave up after {attempts} attempts; last problem: {problem}")
        self.attempts, self.problem = attempts, problem


class NameResolutionFailed(RuntimeError):
    """The host name did not resolve (offline, or DNS is down): raised at once, never retried."""

    def __init__(self, host: str | None) -> None:
        where = f"host {host!r}" if host else "the host"
        super().__init__(f"cannot resolve {where}: no network or DNS is down (not retried)")
        self.host = host


def retry_after_seconds(source: requests.Response | str | None, *, cap: float = MAX_RETRY_AFTER_SECONDS,
                        now: float | None = None) -> float | None:
    """A response's Retry-After (or the header's value) in seconds, at most `cap`; None when absent or unreadable.

    Either delta-seconds or an HTTP date (RFC 9110 10.2.3); a date in the past means "now" (0)."""
    value = source.headers.get("Retry-After") if isinstance(source, requests.Response) else source
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is always GMT
            return None
        seconds = max(when.timestamp() - (time.time() if now is None else now), 0.0)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, cap)


def raise_for_retryable_status(response: requests.Response,
                               statuses: frozenset[int] = RETRYABLE_STATUS) -> requests.Response:
    """The response itself, unless its status is worth retrying: then TransientError carrying its Retry-After."""
    if response.status_code in statuses:
        raise TransientError(f"HTTP {response.status_code}", retry_after=retry_after_seconds(response))
    return response


def _causes(error: BaseException, limit: int = 16) -> list[BaseException]:
    """The error and what it wraps: __cause__, __context__, urllib3's `.reason` and exceptions in `.args`."""
    seen: list[BaseException] = []
    pending = [error]
    while pending and len(seen) < limit:
        current = pending.pop()
        if any(current is other for other in seen):
            continue
        seen.append(current)
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        pending.extend(item for item in linked if isinstance(item, BaseException))
    return seen


def is_name_resolution_error(error: BaseException) -> bool:
    """True when a connection failed because the host name did not resolve (socket.gaierror underneath)."""
    for cause in _causes(error):
        if isinstance(cause, (socket.gaierror, NameResolutionFailed)):
            return True
        if type(cause).__name__ == "NameResolutionError":  # urllib3 >= 2
            return True
        if isinstance(cause, _CONNECTION_ERRORS) and any(
                text in str(cause).lower() for text in _RESOLUTION_TEXT):
            return True
    return False


def is_transient(error: BaseException) -> bool:
    """The default classification: the caller's TransientError and requests' transport failures, DNS excepted."""
    if isinstance(error, TransientError):
        return True
    return isinstance(error, TRANSIENT_REQUEST_ERRORS) and not is_name_resolution_error(error)


def describe_problem(error: BaseException) -> str:
    """One line for logs and the final error: the caller's own words for a TransientError, else type: message."""
    return str(error) if isinstance(error, TransientError) else f"{type(error).__name__}: {error}"


def _host_of(error: BaseException) -> str | None:
    request = getattr(error, "request", None)
    url = getattr(request, "url", None)
    return urlsplit(url).hostname if isinstance(url, str) else None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. `sleep` is injectable so tests (and rate-limited callers) observe delays."""

    max_attempts: int = 5  # the first attempt included; failures since the last progress count
    backoff_base: float = 1.0  # the first retry waits base/2 .. base
    backoff_cap: float = 30.0  # ceiling of the exponential backoff
    max_retry_after: float = MAX_RETRY_AFTER_SECONDS  # ceiling of a server's Retry-After
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or isinstance(self.max_attempts, bool) or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        for name in ("backoff_base", "backoff_cap", "max_retry_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """The wait before the next attempt after `failures` failures in a row (1 for the first retry)."""
        exponential = min(self.backoff_cap, self.backoff_base * 2.0 ** min(max(failures - 1, 0), 64))
        jittered = exponential * random.uniform(0.5, 1.0)
        if retry_after is None:
            return jittered
        return max(min(retry_after, self.max_retry_after), jittered)

    def retrying(self, *, label: str = "request", transient: Callable[[BaseException], bool] = is_transient,
                 redact: Callable[[str], str] = str) -> tenacity.Retrying:
        """A tenacity controller for ONE call (it counts that call's failures): stop, wait, retry and logging."""
        run = _Run(self, label, transient, redact)
        return tenacity.Retrying(sleep=self.sleep, stop=run.stop, wait=run.wait, retry=run.retry, after=run.after,
                                 before_sleep=run.before_sleep)

    def call(self, fn: Callable[[], T], *, label: str = "request",
             transient: Callable[[BaseException], bool] = is_transient, redact: Callable[[str], str] = str) -> T:
        """fn's result, retried while it fails transiently.

        Raises RetriesExhausted when the attempts run out, NameResolutionFailed at once for a host that does not
        resolve, and anything else fn raises (not transient) unchanged. `label` names the call in log lines;
        `redact` scrubs secrets from the problems logged and reported."""
        try:
            return self.retrying(label=label, transient=transient, redact=redact)(fn)
        except tenacity.RetryError as gave_up:
            last = gave_up.last_attempt
            error = last.exception()
            assert error is not None  # only failed attempts are retried
            raise RetriesExhausted(last.attempt_number, redact(describe_problem(error))) from error
        except _CONNECTION_ERRORS as error:
            if is_name_resolution_error(error):
                raise NameResolutionFailed(_host_of(error)) from error
            raise


class _Run:
    """The state of one call: failures in a row since the last progress, and the last Retry-After."""

    def __init__(self, policy: RetryPolicy, label: str, transient: Callable[[BaseException], bool],
                 redact: Callable[[str], str]) -> None:
        self.policy, self.label, self.transient, self.redact = policy, label, transient, redact
        self.failures = 0
        self.retry_after: float | None = None

    @staticmethod
    def _error(state: tenacity.RetryCallState) -> BaseException | None:
        return state.outcome.exception() if state.outcome is not None and state.outcome.failed else None

    def retry(self, state: tenacity.RetryCallState) -> bool:
        error = self._error(state)
        return error is not None and self.transient(error)

    def after(self, state: tenacity.RetryCallState) -> None:  # runs once per retried failure, before wait and stop
        error = self._error(state)
        progressed = isinstance(error, TransientError) and error.progressed
        self.failures = 1 if progressed else self.failures + 1
        self.retry_after = error.retry_after if isinstance(error, TransientError) else None

    def stop(self, state: tenacity.RetryCallState) -> bool:
        return self.failures >= self.policy.max_attempts

    def wait(self, state: tenacity.RetryCallState) -> float:
        return self.policy.delay(self.failures, self.retry_after)

    def before_sleep(self, state: tenacity.RetryCallState) -> None:
        error = self._error(state)
        log.info("%s: retrying in %.2fs (failure %d of at most %d): %s", self.label, state.upcoming_sleep,
                 self.failures, self.policy.max_attempts, self.redact(describe_problem(error)) if error else "")
