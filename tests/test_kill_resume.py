"""A crawl killed with SIGKILL at any moment resumes where it stood, and ends with exactly the same rows.

The crawl runs in a real subprocess against the fake Civitai (real sockets) and the module's real Postgres; the
test kills it, then finishes the crawl in-process.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import Engine, text

from crawlers.civitai_client import CivitaiClient
from crawlers.crawl import crawl_listing
from fake_civitai import FakeCivitai
from helpers import read_jsonl, truncate_all

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_PATH = "/api/v1/models"
PAGE_SIZE = 2

CRAWL_SCRIPT = """
import os
from crawlers.civitai_client import CivitaiClient
from crawlers.crawl import crawl_listing
from db.engine import engine_for_url

engine = engine_for_url(os.environ["DATABASE_URL"])
client = CivitaiClient(os.environ["CIVITAI_BASE_URL"], requests_per_second=1000, backoff_base=0.01, max_retries=8)
crawl_listing(engine, client)
"""


def fixture_items() -> list[dict]:
    return copy.deepcopy(read_jsonl("civitai_2023.jsonl") + read_jsonl("civitai_2024.jsonl"))


ITEMS = fixture_items()
FIXTURE_IDS = sorted(item["id"] for item in ITEMS)
TOTAL_PAGES = -(-len(ITEMS) // PAGE_SIZE)


def start_crawler(fake: FakeCivitai, database_url: str, stderr_path: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["DATABASE_URL"] = database_url
    env["CIVITAI_BASE_URL"] = fake.base_url
    with open(stderr_path, "wb") as stderr:
        return subprocess.Popen([sys.executable, "-c", CRAWL_SCRIPT], env=env, cwd=REPO_ROOT,
                                stdout=subprocess.DEVNULL, stderr=stderr)


def kill(proc: subprocess.Popen, stderr_path: Path) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (
        f"the crawler ended by itself (rc {proc.returncode}) before it was killed:\n"
        + stderr_path.read_text(errors="replace"))


def crawl_state(engine: Engine):
    with engine.connect() as conn:
        return conn.execute(text("SELECT pages_done, next_url, finished_at FROM crawl_state")).all()


def stored_rows(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT id, raw_sha, raw, source FROM models_raw ORDER BY id"))]


def resume_in_process(engine: Engine, fake: FakeCivitai):
    client = CivitaiClient(fake.base_url, requests_per_second=1000, backoff_base=0.01, max_retries=8)
    try:
        return crawl_listing(engine, client)
    finally:
        client.close()


def listing_requests(fake: FakeCivitai) -> list:
    return [r for r in fake.requests if r.path == MODELS_PATH]


def assert_complete_and_exact(engine: Engine) -> list[tuple]:
    rows = stored_rows(engine)
    assert [r[0] for r in rows] == FIXTURE_IDS  # ordered by primary key: no id twice, none missing
    by_id = {item["id"]: item for item in ITEMS}
    for model_id, _, raw, source in rows:
        assert raw == by_id[model_id]
        assert source == "api"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*), count(DISTINCT id) FROM models_raw")).one() == (16, 16)
    state = crawl_state(engine)
    assert len(state) == 1
    assert state[0].next_url is None and state[0].finished_at is not None
    assert state[0].pages_done == TOTAL_PAGES  # no page counted twice, none skipped
    return rows


def assert_at_most_one_page_refetched(fake: FakeCivitai) -> None:
    cursors = Counter(r.query.get("cursor", [None])[0] for r in listing_requests(fake))
    twice = [cursor for cursor, n in cursors.items() if n > 1]
    assert len(twice) <= 1, cursors
    assert all(n <= 2 for n in cursors.values()), cursors
    assert len(cursors) == TOTAL_PAGES  # every page was fetched (the first one has no cursor)


def test_killed_crawl_resumes_without_starting_over(engine: Engine, database_url: str, tmp_path: Path) -> None:
    truncate_all(engine)
    with FakeCivitai(fixture_items(), page_size=PAGE_SIZE, page_delay=0.3) as fake:
        proc = start_crawler(fake, database_url, tmp_path / "stderr.txt")
        try:
            deadline = time.monotonic() + 60  # a safety net for a broken crawler, not a speed assertion
            while True:
                state = crawl_state(engine)
                if state and state[0].pages_done >= 2:
                    break
                assert proc.poll() is None, (tmp_path / "stderr.txt").read_text(errors="replace")
                assert time.monotonic() < deadline, "the crawler never committed two pages"
                time.sleep(0.02)
        finally:
            kill(proc, tmp_path / "stderr.txt")

        at_kill = crawl_state(engine)[0]
        assert at_kill.finished_at is None and at_kill.next_url is not None
        assert 2 <= at_kill.pages_done < TOTAL_PAGES
        stored_at_kill = len(stored_rows(engine))
        assert stored_at_kill == PAGE_SIZE * at_kill.pages_done  # each committed page with its items, no more

        report = resume_in_process(engine, fake)

        assert report.pages == TOTAL_PAGES - at_kill.pages_done  # it went on from where it stood
        assert report.models_new == len(ITEMS) - stored_at_kill
        assert_complete_and_exact(engine)
        first_page = [r for r in listing_requests(fake) if "cursor" not in r.query]
        assert len(first_page) == 1  # the restarted crawl did not start from page 1
        assert_at_most_one_page_refetched(fake)
    with engine.connect() as conn:
        statuses = conn.execute(text("SELECT status FROM crawl_runs ORDER BY id")).scalars().all()
    assert statuses[-1] == "succeeded"


def wait_for_first_request(fake: FakeCivitai, proc: subprocess.Popen, stderr_path: Path) -> None:
    """Python start-up takes a noisy 0.5-2 s: the kill delays count from the crawler's first request."""
    deadline = time.monotonic() + 60  # a safety net for a broken crawler, not a speed assertion
    while not fake.requests:
        assert proc.poll() is None, stderr_path.read_text(errors="replace")
        assert time.monotonic() < deadline, "the crawler never sent a request"
        time.sleep(0.005)


def test_kill_at_a_random_moment_always_ends_with_the_same_rows(engine: Engine, database_url: str,
                                                                tmp_path: Path) -> None:
    outcomes: dict[float, list[tuple]] = {}
    pages_at_kills: dict[float, int] = {}
    for delay in (0.0, 0.1, 0.35, 0.6, 1.0):  # seconds after the first request; a listing takes >= 1.6 s
        truncate_all(engine)
        stderr_path = tmp_path / f"stderr-{delay}.txt"
        with FakeCivitai(fixture_items(), page_size=PAGE_SIZE, page_delay=0.2) as fake:
            proc = start_crawler(fake, database_url, stderr_path)
            try:
                wait_for_first_request(fake, proc, stderr_path)
                time.sleep(delay)
            finally:
                kill(proc, stderr_path)
            state = crawl_state(engine)
            assert len(state) == 1 and state[0].finished_at is None  # killed mid-crawl
            pages_at_kill = pages_at_kills[delay] = state[0].pages_done
            assert len(stored_rows(engine)) == PAGE_SIZE * pages_at_kill

            report = resume_in_process(engine, fake)

            outcomes[delay] = assert_complete_and_exact(engine)
            assert report.pages == TOTAL_PAGES - pages_at_kill, delay
            assert_at_most_one_page_refetched(fake)
            if pages_at_kill >= 1:
                assert len([r for r in listing_requests(fake) if "cursor" not in r.query]) == 1, delay
    first = next(iter(outcomes.values()))
    assert all(rows == first for rows in outcomes.values())
    assert len(set(pages_at_kills.values())) >= 2, pages_at_kills  # the kills did land at different moments
