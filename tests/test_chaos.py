"""The chaos run, small (bench/chaos.py has the big one): generated items refreshed while connections are cut,
the refresh is SIGKILLed, Postgres refuses writes as a full disk would and a second refresh starts beside the
first; no row lost, none duplicated, no refresh crashed, and one clean refresh completes the catalogue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_small_chaos_run_loses_and_duplicates_nothing(database_url: str) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "chaos.py"), "--items", "400", "--rounds", "5", "--seed", "3",
         "--database-url", database_url],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "chaos"
    assert sum(result["faults_injected"].values()) > 0, done.stdout
    assert result["crashes"] == 0, done.stdout + done.stderr[-3000:]
    assert result["rows_lost"] == 0 and result["rows_duplicated"] == 0, done.stdout
    assert result["rounds_consistent"] == result["rounds"] and result["final_refresh_ok"], done.stdout
    assert result["faults_survived"] == result["faults_injected"], done.stdout
