"""crawlers.http_retry, the one HTTP retry policy, against the local fake Civitai (real sockets, no mocks).

Delays are observed through the policy's injectable `sleep`, never by waiting. A host under the reserved `.invalid`
TLD (RFC 6761) never resolves, so the DNS tests need no network and no stand-in for it.
"""

from __future__ import annotations

import email.utils
import logging
import socket
import time
from collections.abc import Callable, Iterator

import pytest
import requests
import tenacity

from crawlers.civitai_client import CivitaiClient, CivitaiError
from crawlers.downloads import DownloadError, ModelDownloader
from crawlers.http_retry import (
    MAX_RETRY_AFTER_SECONDS,
    NameResolutionFailed,
    RetriesExhausted,
    RetryPolicy,
    TransientError,
    is_name_resolution_error,
    is_transient,
    raise_for_retryable_status,
    retry_after_seconds,
)
from fake_civitai import Fault, FakeCivitai
from helpers import read_jsonl
from test_downloads import Sleeps  # stands in for time.sleep: records each delay

UNRESOLVABLE = "zoo-http-retry-test.invalid"


@pytest.fixture()
def fake() -> Iterator[FakeCivitai]:
    with FakeCivitai(read_jsonl("civitai_2023.jsonl"), page_size=3) as server:
        yield server


@pytest.fixture()
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.trust_env = False  # no proxy from the environment: the request goes where the test says
        yield s


def policy(sleeps: Sleeps, **options: float) -> RetryPolicy:
    return RetryPolicy(**{"max_attempts": 4, "backoff_base": 0.01, "backoff_cap": 0.05, "sleep": sleeps, **options})


def get(session: requests.Session, url: str, calls: list[str] | None = None) -> Callable[[], requests.Response]:
    """One attempt as a caller writes it: 429/5xx are transient, any other answer is returned."""

    def attempt() -> requests.Response:
        if calls is not None:
            calls.append(url)
        return raise_for_retryable_status(session.get(url, timeout=5))

    return attempt


def scripted(outcomes: list[object]) -> Callable[[], object]:
    """An attempt that raises or returns the next of `outcomes` each time it is called."""
    pending = iter(outcomes)

    def attempt() -> object:
        outcome = next(pending)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return attempt


def model_url(fake: FakeCivitai, model_id: int = 100101) -> str:
    return f"{fake.base_url}/api/v1/models/{model_id}"


# ------------------------------------------------------------------ Retry-After

def test_retry_after_reads_seconds_and_http_dates_capped() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(" 2.5 ") == 2.5
    assert retry_after_seconds("0") == 0.0
    assert retry_after_seconds("100000") == MAX_RETRY_AFTER_SECONDS
    assert retry_after_seconds("100000", cap=10.0) == 10.0
    assert retry_after_seconds(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert retry_after_seconds(email.utils.formatdate(now + 86_400, usegmt=True), now=now) == MAX_RETRY_AFTER_SECONDS
    assert retry_after_seconds(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0  # past: now
    for unreadable in (None, "", "soon", "-5", "nan", "inf", "Mon, 99 Foo 2024"):
        assert retry_after_seconds(unreadable) is None, unreadable


def test_retry_after_of_a_real_response(fake: FakeCivitai, session: requests.Session) -> None:
    fake.faults.append(Fault("429-retry-after"))  # the fake sends Retry-After: 1
    assert retry_after_seconds(session.get(model_url(fake), timeout=5)) == 1.0
    assert retry_after_seconds(session.get(model_url(fake), timeout=5)) is None  # a 200 without the header


def test_server_retry_after_is_honoured_then_capped(fake: FakeCivitai, session: requests.Session) -> None:
    sleeps = Sleeps()
    fake.faults.append(Fault("429-retry-after"))
    assert policy(sleeps).call(get(session, model_url(fake))).status_code == 200
    assert len(sleeps) == 1 and sleeps[0] >= 1.0  # not the 0.01 s backoff

    sleeps.clear()
    fake.faults.append(Fault("503"))  # also Retry-After: 1
    assert policy(sleeps, max_retry_after=0.25).call(get(session, model_url(fake))).status_code == 200
    assert sleeps == [0.25]


def test_retry_after_as_an_http_date_is_waited_for() -> None:
    rules = RetryPolicy(backoff_base=0.01, max_retry_after=60.0)
    in_20s = retry_after_seconds(email.utils.formatdate(time.time() + 20, usegmt=True))
    assert in_20s is not None and 18.0 <= rules.delay(1, in_20s) <= 20.0
    in_a_day = retry_after_seconds(email.utils.formatdate(time.time() + 86_400, usegmt=True))
    assert rules.delay(1, in_a_day) == 60.0
    assert rules.delay(4, 0.0) >= 0.04  # a Retry-After of 0 never shortens our own backoff (0.08 jittered)


# ------------------------------------------------------------------ backoff and attempts

def test_backoff_is_jittered_exponential_and_capped() -> None:
    rules = RetryPolicy(backoff_base=0.01, backoff_cap=0.05)
    for failures in range(1, 9):
        ceiling = min(0.05, 0.01 * 2 ** (failures - 1))
        delays = [rules.delay(failures) for _ in range(200)]
        assert all(ceiling * 0.5 <= d <= ceiling for d in delays), failures
        assert len(set(delays)) > 1  # jittered, so clients that failed together do not retry together


def test_5xx_resets_and_truncated_bodies_are_retried(fake: FakeCivitai, session: requests.Session) -> None:
    sleeps, calls = Sleeps(), []
    fake.faults.extend([Fault("500"), Fault("reset"), Fault("truncate"), Fault("503")])
    response = policy(sleeps, max_attempts=5).call(get(session, model_url(fake), calls))
    assert response.status_code == 200 and response.json()["id"] == 100101
    assert len(calls) == 5 and len(sleeps) == 4
    assert [r.fault for r in fake.requests] == ["500", "reset", "truncate", "503", None]


def test_attempts_are_bounded_and_the_last_problem_is_named(fake: FakeCivitai, session: requests.Session) -> None:
    sleeps, calls = Sleeps(), []
    fake.faults.extend([Fault("500")] * 5)
    with pytest.raises(RetriesExhausted) as caught:
        policy(sleeps, max_attempts=3).call(get(session, model_url(fake), calls))
    assert caught.value.attempts == 3 and caught.value.problem == "HTTP 500"
    assert "gave up after 3 attempts; last problem: HTTP 500" in str(caught.value)
    assert len(calls) == 3 and len(sleeps) == 2 and len(fake.requests) == 3


def test_progress_starts_the_count_again() -> None:
    sleeps = Sleeps()
    attempt = scripted([TransientError("dropped", progressed=True)] * 4 + ["done"])
    assert policy(sleeps, max_attempts=2).call(attempt) == "done"  # 5 attempts, each failure moved forward
    assert len(sleeps) == 4 and all(s <= 0.01 for s in sleeps)  # the backoff starts again too

    def stuck() -> None:
        raise TransientError("no progress")

    with pytest.raises(RetriesExhausted):
        policy(Sleeps(), max_attempts=2).call(stuck)


# ------------------------------------------------------------------ what is not retried

@pytest.mark.parametrize(("path", "status"), [("/api/v1/models/999999", 404),
                                              ("/api/v1/models?cursor=not-a-cursor!", 400)])
def test_4xx_other_than_429_are_not_retried(fake: FakeCivitai, session: requests.Session, path: str,
                                            status: int) -> None:
    sleeps = Sleeps()
    response = policy(sleeps).call(get(session, fake.base_url + path))
    assert response.status_code == status
    assert len(fake.requests) == 1 and sleeps == []


def test_an_error_the_caller_did_not_call_transient_propagates_at_once() -> None:
    sleeps, calls = Sleeps(), []

    def attempt() -> None:
        calls.append(1)
        raise ValueError("not a retry matter")

    with pytest.raises(ValueError, match="not a retry matter"):
        policy(sleeps).call(attempt)
    assert calls == [1] and sleeps == []


def test_a_refused_connection_is_retried() -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps, calls = Sleeps(), []
    with requests.Session() as session, pytest.raises(RetriesExhausted, match="ConnectionError"):
        session.trust_env = False
        policy(sleeps, max_attempts=3).call(get(session, f"http://127.0.0.1:{port}/", calls))
    assert len(calls) == 3 and len(sleeps) == 2


def test_a_host_that_does_not_resolve_fails_at_once(session: requests.Session) -> None:
    sleeps, calls = Sleeps(), []
    started = time.monotonic()
    with pytest.raises(NameResolutionFailed) as caught:
        policy(sleeps, max_attempts=8).call(get(session, f"http://{UNRESOLVABLE}/api/v1/models", calls))
    assert time.monotonic() - started < 1.0
    assert len(calls) == 1 and sleeps == []
    assert caught.value.host == UNRESOLVABLE
    assert "cannot resolve" in str(caught.value) and UNRESOLVABLE in str(caught.value)
    assert isinstance(caught.value.__cause__, requests.ConnectionError)


def _raised(error: BaseException, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise error from inner
    except BaseException as outer:
        return outer


@pytest.mark.parametrize("error", [
    requests.ConnectionError(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")),
    _raised(requests.ConnectionError("connection failed"),
            socket.gaierror(socket.EAI_NONAME, "Name or service not known")),
    requests.ConnectionError("Failed to establish a new connection: [Errno 8] nodename nor servname provided, "
                             "or not known"),
    socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
])
def test_name_resolution_errors_are_recognised_and_not_retried(error: BaseException) -> None:
    assert is_name_resolution_error(error) and not is_transient(error)
    sleeps, calls = Sleeps(), []

    def attempt() -> None:
        calls.append(1)
        raise error

    with pytest.raises(NameResolutionFailed):
        policy(sleeps).call(attempt)
    assert calls == [1] and sleeps == []


@pytest.mark.parametrize("error", [
    requests.ConnectionError(ConnectionRefusedError(111, "Connection refused")),
    requests.ConnectionError(ConnectionResetError(104, "Connection reset by peer")),
    requests.ReadTimeout("read timed out"),
    requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"),
    TransientError("HTTP 503", retry_after=1.0),
])
def test_other_transport_failures_are_transient(error: BaseException) -> None:
    assert is_transient(error) and not is_name_resolution_error(error)


def test_callers_fail_fast_offline(tmp_path) -> None:
    """`zoo generate` offline used to retry DNS for minutes in silence: now each caller says why at once."""
    sleeps = Sleeps()
    started = time.monotonic()
    client = CivitaiClient(f"http://{UNRESOLVABLE}", requests_per_second=0, max_retries=8, sleep=sleeps)
    client._session.trust_env = False
    with pytest.raises(CivitaiError, match="cannot resolve"):
        client.model(1)
    client.close()
    downloader = ModelDownloader(tmp_path, base_url=f"http://{UNRESOLVABLE}", max_retries=5, sleep=sleeps)
    with pytest.raises(DownloadError, match="cannot resolve"):
        downloader.fetch(1, "c" * 64)
    assert sleeps == [] and time.monotonic() - started < 2.0


# ------------------------------------------------------------------ the API

def test_retrying_is_a_tenacity_controller_and_options_are_checked() -> None:
    sleeps = Sleeps()
    controller = policy(sleeps).retrying(label="probe")
    assert isinstance(controller, tenacity.Retrying)
    assert controller(scripted([TransientError("HTTP 503"), "ok"])) == "ok" and len(sleeps) == 1
    for bad in ({"max_attempts": 0}, {"max_attempts": True}, {"backoff_base": -1.0}, {"max_retry_after": "5"}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


def test_problems_are_redacted_in_logs_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "tok-SECRET-123"

    def attempt() -> None:
        raise TransientError(f"HTTP 503 for https://host/file?token={secret}")

    with pytest.raises(RetriesExhausted) as caught:
        policy(Sleeps(), max_attempts=3).call(attempt, label="download", redact=lambda t: t.replace(secret, "***"))
    assert secret not in str(caught.value) and "token=***" in str(caught.value)
    assert "download: retrying in" in caplog.text and secret not in caplog.text
