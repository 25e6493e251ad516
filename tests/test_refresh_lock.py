"""Two runs at once (issue 13, item 2): every step that writes the catalogue or the index holds an advisory lock
(db/locks.py), so a second refresh waits for the first, or is refused with a message naming who holds the lock;
it never crashes on the first one's rows. The shards of one describe/embed run still work side by side.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, text

from db.locks import CATALOGUE, INDEX, ZooBusy, advisory_lock, shard_lock
from helpers import truncate_all
from orchestration.run import refresh_zoo
from testkit.civitai_items import civitai_item

REPO = Path(__file__).resolve().parent.parent
ITEMS = 1500

REFRESH = """
import json, sys, time
from dataclasses import replace
from pathlib import Path
from config import Settings
from orchestration.run import root_cause, run_refresh

url, dump, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
settings = replace(Settings(zoo_home=Path(sys.argv[4]), database_url=url), lock_wait_seconds=300)
time.sleep(max(0.0, start - time.time()))  # both processes start their refresh at the same moment
result = run_refresh(settings, dump_path=dump, workers=2)
failures = [f"{e.step_key}: {root_cause(e.event_specific_data.error)}" for e in result.all_events
            if e.is_step_failure]
catalogue = [e.materialization.metadata for e in result.get_asset_materialization_events()
             if e.asset_key.to_user_string() == "zoo_catalogue"]
print(json.dumps({"success": result.success, "failures": failures,
                  "normalised": catalogue[0]["normalised"].value if catalogue else None}))
"""


@pytest.fixture
def clean(engine: Engine) -> Engine:
    truncate_all(engine)
    return engine


def test_two_refreshes_at_once_both_succeed_and_store_each_item_once(clean: Engine, database_url: str,
                                                                     zoo_home: str, tmp_path: Path):
    dump = tmp_path / "many.jsonl"
    dump.write_bytes(b"".join(orjson.dumps(civitai_item(400_000 + n, versions=2)) + b"\n" for n in range(ITEMS)))
    start = time.time() + 25  # after both have imported Dagster
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    runs = [subprocess.Popen([sys.executable, "-c", REFRESH, database_url, str(dump), str(start), zoo_home],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outcomes = []
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    assert all(outcome["success"] for outcome in outcomes), outcomes
    assert sorted(outcome["normalised"] for outcome in outcomes) == [0, ITEMS]
    with clean.connect() as conn:
        assert conn.execute(text("SELECT count(*), count(DISTINCT id) FROM models")).one() == (ITEMS, ITEMS)
        assert conn.execute(text("SELECT count(*) FROM model_versions")).scalar_one() == 2 * ITEMS
        assert conn.execute(text("SELECT count(*) FROM quarantine")).scalar_one() == 0


def test_a_refresh_that_cannot_get_the_lock_is_refused_with_a_clear_message(settings, clean: Engine,
                                                                            tmp_path: Path):
    dump = tmp_path / "few.jsonl"
    dump.write_bytes(b"".join(orjson.dumps(civitai_item(410_000 + n)) + b"\n" for n in range(5)))
    impatient = replace(settings, lock_wait_seconds=1)
    with advisory_lock(clean, CATALOGUE, holder="zoo nightly refresh"):
        started = time.monotonic()
        outcome = refresh_zoo(impatient, dump_path=str(dump), workers=1)
        waited = time.monotonic() - started
    assert not outcome.success
    (failure,) = outcome.failures()
    assert failure.startswith("zoo_catalogue: ")
    assert "another run holds the zoo's catalogue lock (zoo nightly refresh (pid " in failure
    assert "waited 1 s" in failure and "ZOO_LOCK_WAIT_SECONDS" in failure
    assert waited < 60
    with clean.connect() as conn:  # the raw items were stored (their own lock was free); nothing was normalised
        assert conn.execute(text("SELECT count(*) FROM models_raw")).scalar_one() == 5
        assert conn.execute(text("SELECT count(*) FROM models")).scalar_one() == 0
    assert refresh_zoo(impatient, dump_path=str(dump), workers=1).success  # once the lock is free


def test_a_waiting_run_goes_on_when_the_holder_finishes(clean: Engine):
    release = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        with advisory_lock(clean, CATALOGUE, holder="zoo first run"):
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(30)
    threading.Timer(1.0, release.set).start()
    started = time.monotonic()
    with advisory_lock(clean, CATALOGUE, wait_seconds=30):
        waited = time.monotonic() - started
    holder.join(30)
    assert 0.8 < waited < 20


def test_shards_of_one_run_work_side_by_side_and_the_index_step_waits_for_them(clean: Engine):
    with advisory_lock(clean, INDEX, shared=True), advisory_lock(clean, shard_lock(0, 2)):
        # the other shard of the run: both locks at once
        with advisory_lock(clean, INDEX, shared=True, wait_seconds=0), advisory_lock(clean, shard_lock(1, 2),
                                                                                    wait_seconds=0):
            pass
        with pytest.raises(ZooBusy, match="describe/embed shard 0 of 2"):  # the same shard of another run
            with advisory_lock(clean, shard_lock(0, 2), wait_seconds=0):
                pass
        with pytest.raises(ZooBusy, match="index lock"):  # the index step
            with advisory_lock(clean, INDEX, wait_seconds=0.5):
                pass
        with advisory_lock(clean, CATALOGUE, wait_seconds=0):  # a catalogue refresh is not held up by describing
            pass


def test_a_killed_holder_leaves_no_lock_behind(clean: Engine, database_url: str):
    script = ("import sys, time\nfrom db.engine import engine_for_url\nfrom db.locks import advisory_lock\n"
              "with advisory_lock(engine_for_url(sys.argv[1]), 'catalogue'):\n"
              "    print('held', flush=True)\n    time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, database_url], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ZooBusy):
            with advisory_lock(clean, CATALOGUE, wait_seconds=0):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
    with advisory_lock(clean, CATALOGUE, wait_seconds=10):
        pass
