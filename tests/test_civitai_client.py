"""CivitaiClient and RateLimiter against the local fake Civitai (real sockets, no mocks).

Backoff delays are observed through the client's injectable `sleep`, never by measuring wall time.
"""

from __future__ import annotations

import copy
import logging
import socket
from collections.abc import Iterator

import pytest

from crawlers.civitai_client import CivitaiClient, CivitaiError, CivitaiNotFound, RateLimiter
from fake_civitai import Fault, FakeCivitai
from helpers import read_jsonl

MODELS_PATH = "/api/v1/models"


def fixture_items() -> list[dict]:
    return copy.deepcopy(read_jsonl("civitai_2023.jsonl") + read_jsonl("civitai_2024.jsonl"))


@pytest.fixture
def fake() -> Iterator[FakeCivitai]:
    with FakeCivitai(fixture_items(), page_size=3) as server:
        yield server


class SleepRecorder:
    """Stands in for time.sleep: records each requested delay and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_client(fake: FakeCivitai, sleep: SleepRecorder, **kwargs) -> CivitaiClient:
    # requests_per_second=0 disables the rate limiter, so every recorded sleep is a backoff delay.
    options = {"requests_per_second": 0, "backoff_base": 0.01, "max_retries": 8, "timeout": 5.0, "sleep": sleep}
    options.update(kwargs)
    return CivitaiClient(fake.base_url, **options)


def _model_item(fake: FakeCivitai, model_id: int) -> dict:
    return next(item for item in fake.items if item["id"] == model_id)


# ------------------------------------------------------------------ retries of every fault kind

@pytest.mark.parametrize("kind", ["429", "429-retry-after", "500", "503", "slow", "truncate", "reset"])
def test_each_fault_kind_is_retried_until_the_right_body(fake: FakeCivitai, kind: str) -> None:
    sleep = SleepRecorder()
    client = make_client(fake, sleep, timeout=1.0)  # shorter than the 'slow' fault below
    fake.faults.append(Fault(kind, seconds=2.0 if kind == "slow" else 0.0))
    try:
        body = client.model(100201)
    finally:
        client.close()
    assert body == _model_item(fake, 100201)
    records = [r for r in fake.requests if r.path == f"{MODELS_PATH}/100201"]
    assert [r.fault for r in records] == [kind, None]
    assert records[-1].status == 200
    assert len(sleep.calls) == 1


@pytest.mark.parametrize("kind", ["500", "reset", "truncate"])
def test_listing_page_is_retried_and_returns_the_full_page(fake: FakeCivitai, kind: str) -> None:
    sleep = SleepRecorder()
    client = make_client(fake, sleep)
    fake.faults.extend([Fault(kind), Fault(kind)])
    try:
        items, next_url = client.models_page(client.models_listing_url())
    finally:
        client.close()
    assert [i["id"] for i in items] == [i["id"] for i in fake.items[:3]]
    assert items == fake.items[:3]
    assert next_url is not None and "cursor=" in next_url
    assert [r.fault for r in fake.requests] == [kind, kind, None]
    assert len(sleep.calls) == 2


def test_retry_after_is_honoured_while_plain_429_uses_the_small_base(fake: FakeCivitai) -> None:
    sleep = SleepRecorder()
    client = make_client(fake, sleep, backoff_base=0.01)
    fake.faults.append(Fault("429-retry-after"))
    try:
        assert client.model(100101)["id"] == 100101
        assert len(sleep.calls) == 1 and sleep.calls[0] >= 1.0

        sleep.calls.clear()
        fake.faults.append(Fault("429"))
        assert client.model(100101)["id"] == 100101
        assert len(sleep.calls) == 1
        # first retry: base * 2**0, jittered into [base/2, base]
        assert 0.005 <= sleep.calls[0] <= 0.01

        sleep.calls.clear()
        fake.faults.append(Fault("503"))  # the fake's 503 carries Retry-After: 1
        assert client.model(100101)["id"] == 100101
        assert len(sleep.calls) == 1 and sleep.calls[0] >= 1.0
    finally:
        client.close()


def test_backoff_grows_exponentially_with_jitter_and_is_capped(fake: FakeCivitai) -> None:
    sleep = SleepRecorder()
    client = make_client(fake, sleep, backoff_base=0.01, backoff_cap=0.05, max_retries=8)
    fake.faults.extend([Fault("500")] * 6)
    try:
        assert client.model(100101)["id"] == 100101
    finally:
        client.close()
    assert len(sleep.calls) == 6
    for attempt, delay in enumerate(sleep.calls, start=1):
        ceiling = min(0.05, 0.01 * 2 ** (attempt - 1))
        assert ceiling * 0.5 <= delay <= ceiling, (attempt, delay)
    assert max(sleep.calls) <= 0.05


# ------------------------------------------------------------------ errors that are not retried

def test_404_raises_not_found_at_once(fake: FakeCivitai) -> None:
    sleep = SleepRecorder()
    client = make_client(fake, sleep)
    try:
        with pytest.raises(CivitaiNotFound) as caught:
            client.model(999999)
    finally:
        client.close()
    assert caught.value.status == 404
    assert len(fake.requests) == 1
    assert sleep.calls == []


def test_400_raises_civitai_error_without_retry(fake: FakeCivitai) -> None:
    sleep = SleepRecorder()
    client = make_client(fake, sleep)
    try:
        with pytest.raises(CivitaiError) as caught:
            client.get_json(client.models_listing_url() + "&cursor=not-a-cursor!")
    finally:
        client.close()
    assert not isinstance(caught.value, CivitaiNotFound)
    assert caught.value.status == 400
    assert "Invalid cursor" in str(caught.value)
    assert len(fake.requests) == 1
    assert sleep.calls == []


def test_gives_up_after_max_retries_naming_the_last_problem(fake: FakeCivitai) -> None:
    sleep = SleepRecorder()
    client = make_client(fake, sleep, max_retries=2)
    fake.faults.extend([Fault("500"), Fault("429"), Fault("503"), Fault("500")])
    try:
        with pytest.raises(CivitaiError) as caught:
            client.model(100101)
    finally:
        client.close()
    message = str(caught.value)
    assert "3 attempts" in message
    assert "last problem: HTTP 503" in message
    assert len(fake.requests) == 3
    assert len(sleep.calls) == 2
    assert [f.kind for f in fake.faults] == ["500"]  # the fourth fault was never consumed


def test_gives_up_after_connection_errors_naming_them(fake: FakeCivitai) -> None:
    sleep = SleepRecorder()
    client = make_client(fake, sleep, max_retries=1)
    fake.faults.extend([Fault("500"), Fault("reset")])
    try:
        with pytest.raises(CivitaiError) as caught:
            client.model(100101)
    finally:
        client.close()
    assert "last problem: ConnectionError" in str(caught.value)
    assert len(fake.requests) == 2


# ------------------------------------------------------------------ the API key

def test_api_key_is_sent_as_bearer_and_never_logged_or_shown(fake: FakeCivitai,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-test-Zq81secretKEY"
    sleep = SleepRecorder()
    caplog.set_level(logging.DEBUG)
    client = make_client(fake, sleep, api_key=secret, max_retries=2)
    fake.faults.extend([Fault("500"), Fault("reset")])
    try:
        assert client.model(100101)["id"] == 100101
        with pytest.raises(CivitaiNotFound) as not_found:
            client.model(424242)
        fake.faults.extend([Fault("503")] * 3)
        with pytest.raises(CivitaiError) as gave_up:
            client.model(100101)
        shown = repr(client)
    finally:
        client.close()
    assert len(fake.requests) == 7
    assert all(r.authorization == f"Bearer {secret}" for r in fake.requests)
    assert all(secret not in r.raw_path for r in fake.requests)
    assert caplog.records, "the retries should have logged something at DEBUG/INFO level"
    assert secret not in caplog.text
    assert all(secret not in r.getMessage() for r in caplog.records)
    assert secret not in shown
    assert secret not in str(not_found.value) and secret not in str(gave_up.value)


def test_no_authorization_header_without_a_key(fake: FakeCivitai) -> None:
    client = make_client(fake, SleepRecorder())
    try:
        client.model(100101)
    finally:
        client.close()
    assert fake.requests[0].authorization is None


# ------------------------------------------------------------------ rate limiting

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_rate_limiter_spaces_request_starts() -> None:
    fake_clock = FakeClock()
    limiter = RateLimiter(4.0, clock=fake_clock.clock, sleep=fake_clock.sleep)
    starts = []
    for _ in range(5):
        limiter.wait()
        starts.append(fake_clock.now)
    assert starts[0] == 100.0  # the first request goes at once
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps == pytest.approx([0.25] * 4)
    assert fake_clock.sleeps == pytest.approx([0.25] * 4)


def test_rate_limiter_only_waits_for_the_rest_of_the_interval_and_saves_no_credit() -> None:
    fake_clock = FakeClock()
    limiter = RateLimiter(2.0, clock=fake_clock.clock, sleep=fake_clock.sleep)
    limiter.wait()
    fake_clock.now += 0.2  # some work happened between two requests
    limiter.wait()
    assert fake_clock.sleeps == pytest.approx([0.3])
    fake_clock.now += 60.0  # idle for a minute: no burst allowed afterwards
    fake_clock.sleeps.clear()
    limiter.wait()
    limiter.wait()
    limiter.wait()
    assert fake_clock.sleeps == pytest.approx([0.5, 0.5])


def test_rate_limiter_with_zero_rate_never_waits() -> None:
    fake_clock = FakeClock()
    limiter = RateLimiter(0, clock=fake_clock.clock, sleep=fake_clock.sleep)
    for _ in range(10):
        limiter.wait()
    assert fake_clock.sleeps == []


def test_client_requests_go_through_its_rate_limiter(fake: FakeCivitai) -> None:
    sleep = SleepRecorder()
    # one request per 10 s: the second request must be told to wait almost all of those 10 s
    client = make_client(fake, sleep, requests_per_second=0.1)
    try:
        client.model(100101)
        assert sleep.calls == []
        client.model(100102)
    finally:
        client.close()
    assert len(sleep.calls) == 1
    assert 5.0 < sleep.calls[0] <= 10.0
    assert len(fake.requests) == 2


# ------------------------------------------------------------------ listing pages

def test_models_page_follows_next_cursor_keeping_filters(fake: FakeCivitai) -> None:
    fake.page_size = 2
    client = make_client(fake, SleepRecorder())
    types, bases = ["LORA", "Checkpoint"], ["SD 1.5", "Illustrious"]
    expected = [
        item["id"] for item in fake.items
        if item["type"] in types and any(v.get("baseModel") in bases for v in item["modelVersions"])
    ]
    assert len(expected) >= 5  # several pages of 2
    url = client.models_listing_url(types=types, base_models=bases)
    seen: list[int] = []
    pages = 0
    try:
        while url is not None:
            items, url = client.models_page(url)
            pages += 1
            seen.extend(item["id"] for item in items)
            if url is not None:
                assert url.startswith(fake.base_url + MODELS_PATH + "?")
            assert pages < 20
    finally:
        client.close()
    assert seen == expected  # nsfw=true: flagged models (e.g. 100202, 500102) are listed too
    assert {100202, 500102} <= set(seen)
    assert pages == -(-len(expected) // 2)
    listing = [r for r in fake.requests if r.path == MODELS_PATH]
    assert len(listing) == pages
    for record in listing:
        assert sorted(record.query["types"]) == sorted(types)
        assert sorted(record.query["baseModels"]) == sorted(bases)
        assert record.query["nsfw"] == ["true"]
        assert record.query["limit"] == ["100"]
        assert record.query["sort"] == ["Newest"]
    assert "cursor" not in listing[0].query
    cursors = [r.query["cursor"][0] for r in listing[1:]]
    assert len(cursors) == len(set(cursors)) == pages - 1


def test_models_page_of_an_empty_listing_ends(fake: FakeCivitai) -> None:
    client = make_client(fake, SleepRecorder())
    try:
        items, next_url = client.models_page(client.models_listing_url(types=["NoSuchType"]))
    finally:
        client.close()
    assert items == [] and next_url is None


def test_models_listing_url_shape() -> None:
    client = CivitaiClient("http://example.invalid/")
    url = client.models_listing_url(types=["LORA"], base_models=["SD 1.5"])
    client.close()
    assert url.startswith("http://example.invalid/api/v1/models?")
    assert "nsfw=true" in url and "limit=100" in url and "types=LORA" in url and "baseModels=SD+1.5" in url


# ------------------------------------------------------------------ reachable()

def test_reachable_is_false_for_a_closed_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = CivitaiClient(f"http://127.0.0.1:{port}")
    try:
        assert client.reachable(timeout=2.0) is False
    finally:
        client.close()


def test_reachable_is_true_for_the_fake_and_false_on_an_error_without_retrying(fake: FakeCivitai) -> None:
    client = make_client(fake, SleepRecorder())
    try:
        assert client.reachable(timeout=2.0) is True
        fake.faults.append(Fault("500"))
        assert client.reachable(timeout=2.0) is False
    finally:
        client.close()
    assert len(fake.requests) == 2
    assert fake.requests[0].query["limit"] == ["1"]
