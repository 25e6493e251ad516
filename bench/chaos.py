"""Chaos run: refreshes of a few thousand generated items while the database connections are cut, the refresh
is SIGKILLed, Postgres refuses writes as a full disk would, and a second refresh starts beside the first.

Each round writes a dump (the same models, 30% of them renamed since the round before), starts `zoo refresh`'s
catalogue job in a subprocess (its own process group, two normalising workers) and, at random moments, injects:
- SIGKILL of the refresh's whole process group;
- pg_terminate_backend of a random session of the refresh (its work, its workers', its lock's);
- a second refresh of the same dump, started beside the first;
- "disk full": a statement trigger that fails a random 5% of the writes to models_raw and model_versions with
  SQLSTATE 53100 (what Postgres says when its disk is full). ENOSPC in a file cache is not injected: the raw-store
  and catalogue path writes no files (only the download cache does, which this run does not use).
The dump also holds bad items the catalogue must quarantine and never lose the rest for: a 20 kB baseModel, and
pairs of models that list one version id (one of each pair is stored, the other quarantined).

After every round the catalogue must be consistent (every stored model holds exactly its versions, files and
images; nothing good quarantined); after the rounds one clean refresh must complete it (every model, with its
last name) and a second one must find nothing to do. Prints the table of faults injected and survived, rows lost
and rows duplicated (both must be 0), and ends with one JSON line.

    python bench/chaos.py [--items 3000] [--rounds 12] [--seed 7] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from testkit.civitai_items import civitai_item, incompressible_text  # noqa: E402

REFRESH = """
import json, sys
from config import Settings
from orchestration.run import root_cause, run_refresh

url, dump, home = sys.argv[1:4]
settings = Settings.from_env({"ZOO_HOME": home, "DATABASE_URL": url, "ZOO_LOCK_WAIT_SECONDS": "120"})
result = run_refresh(settings, dump_path=dump, workers=2)
failures = [f"{e.step_key}: {root_cause(e.event_specific_data.error)}" for e in result.all_events
            if e.is_step_failure]
print(json.dumps({"success": result.success, "failures": failures}), flush=True)
"""
# What a refresh may answer a fault with: a clear failure, after which the next refresh goes on.
EXPECTED_FAILURES = {
    "connection cut": ("terminating connection", "server closed the connection", "consuming input failed",
                       "connection is closed", "the connection is lost", "connection to server", "BrokenProcessPool",
                       "process pool", "terminated abruptly"),
    "disk full": ("No space left on device",),
    "refused by the lock": ("another run holds the zoo's",),
    # two writers at once, possible only when a cut connection took a run's lock with it
    "deadlock (lock lost with a cut connection)": ("deadlock detected",),
}
DISK_FULL = """
CREATE OR REPLACE FUNCTION chaos_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF random() < 0.05 THEN
        RAISE EXCEPTION 'could not extend file: No space left on device (injected)' USING ERRCODE = 'disk_full';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_disk_full BEFORE INSERT OR UPDATE ON models_raw FOR EACH STATEMENT
    EXECUTE FUNCTION chaos_disk_full();
CREATE TRIGGER chaos_disk_full BEFORE INSERT OR UPDATE ON model_versions FOR EACH STATEMENT
    EXECUTE FUNCTION chaos_disk_full();
"""
NO_DISK_FULL = """
DROP TRIGGER IF EXISTS chaos_disk_full ON models_raw;
DROP TRIGGER IF EXISTS chaos_disk_full ON model_versions;
"""


@dataclass
class Zoo:
    """The generated items and what the catalogue must hold once they are all in."""

    items: list[dict]
    oversized: set[int]  # quarantined: a 20 kB baseModel
    pairs: list[tuple[int, int]]  # two models listing one version id: one stored, one quarantined
    names: dict[int, str] = field(default_factory=dict)

    @property
    def good(self) -> set[int]:
        return {item["id"] for item in self.items} - self.oversized - {m for pair in self.pairs for m in pair}

    def expected(self) -> dict[str, set]:
        rows: dict[str, set] = {"versions": set(), "files": set(), "images": set()}
        for item in self.items:
            for version in item["modelVersions"]:
                rows["versions"].add((item["id"], version["id"]))
                rows["files"].update((item["id"], file["id"]) for file in version["files"])
                rows["images"].update((item["id"], version["id"], image.get("id") or _url_id(image))
                                      for image in version["images"])
        return rows


def _url_id(image: dict) -> int:
    return int(image["url"].rsplit("/", 1)[1].split(".")[0])


def generate(count: int, rng: random.Random) -> Zoo:
    items = [civitai_item(900_000 + n, era=rng.choice(["2023", "2024"]), versions=rng.randint(1, 3),
                          images=rng.randint(0, 3), seed=n) for n in range(count)]
    oversized = set()
    for item in rng.sample(items, max(1, count // 100)):
        item["modelVersions"][0]["baseModel"] = incompressible_text(20_000, seed=item["id"])
        oversized.add(item["id"])
    pairs = []
    candidates = [item for item in items if item["id"] not in oversized]
    rng.shuffle(candidates)
    for owner, claimant in zip(candidates[0:max(1, count // 200) * 2:2], candidates[1:max(1, count // 200) * 2:2]):
        claimant["modelVersions"][0]["id"] = owner["modelVersions"][0]["id"]
        pairs.append((owner["id"], claimant["id"]))
    return Zoo(items, oversized, pairs, {item["id"]: item["name"] for item in items})


def write_round_dump(zoo: Zoo, path: Path, rng: random.Random, round_number: int) -> None:
    for item in rng.sample(zoo.items, len(zoo.items) * 3 // 10):
        item["name"] = zoo.names[item["id"]] = f"Generated model {item['id']} (round {round_number})"
    path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in zoo.items))


# ---------------------------------------------------------------------------------------------------------------
# one round
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Refresh:
    process: subprocess.Popen
    log: Path
    killed: bool = False

    def outcome(self) -> dict:
        if self.killed:
            return {"killed": True}
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.startswith("{")]
        if self.process.returncode != 0 or not lines:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
            return {"success": False, "failures": [f"exit {self.process.returncode}: {' | '.join(tail)}"]}
        return json.loads(lines[-1])


def start_refresh(url: str, dump: Path, home: Path, log: Path) -> Refresh:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", REFRESH, url, str(dump), str(home)], cwd=REPO, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Refresh(process, log)


def kill(refresh: Refresh) -> bool:
    if refresh.process.poll() is not None:
        return False
    os.killpg(refresh.process.pid, signal.SIGKILL)  # the refresh and its normalising workers
    refresh.killed = True
    return True


def terminate_a_backend(engine: Engine, rng: random.Random, refreshes: list[Refresh]) -> bool:
    """Cut a random session of the refreshes (waiting for one to connect while they run)."""
    while any(refresh.process.poll() is None for refresh in refreshes):
        with engine.connect() as conn:
            pids = conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'")).scalars().all()
            if pids and conn.execute(text("SELECT pg_terminate_backend(:pid)"),
                                     {"pid": rng.choice(pids)}).scalar_one():
                return True
        time.sleep(0.2)
    return False


def run_round(engine: Engine, url: str, dump: Path, home: Path, workdir: Path, rng: random.Random,
              number: int, duration: float, faults: Counter) -> list[dict]:
    """One refresh with faults at random moments; returns the outcomes of the refreshes it started."""
    disk_full = rng.random() < 0.3
    if disk_full:
        with engine.begin() as conn:
            conn.exec_driver_sql(DISK_FULL)
        faults["disk full"] += 1
    first = start_refresh(url, dump, home, workdir / f"round{number}a.log")
    refreshes = [first]
    plan = [(rng.uniform(0.25 * duration, duration), "connection cut") for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.4:
        plan.append((rng.uniform(0.0, duration * 0.6), "second refresh"))
    if rng.random() < 0.5:
        plan.append((rng.uniform(0.2 * duration, duration), "SIGKILL"))
    started = time.monotonic()
    for at, fault in sorted(plan):
        time.sleep(max(0.0, at - (time.monotonic() - started)))
        if all(refresh.process.poll() is not None for refresh in refreshes):
            break
        if fault == "SIGKILL":
            faults[fault] += kill(first)
        elif fault == "connection cut":
            faults[fault] += terminate_a_backend(engine, rng, refreshes)
        else:
            refreshes.append(start_refresh(url, dump, home, workdir / f"round{number}b.log"))
            faults[fault] += 1
    for refresh in refreshes:
        try:
            refresh.process.wait(timeout=900)
        except subprocess.TimeoutExpired:
            kill(refresh)
            refresh.process.wait(timeout=60)
            refresh.killed = False  # a hang is not a fault we injected
    if disk_full:
        with engine.begin() as conn:
            conn.exec_driver_sql(NO_DISK_FULL)
    return [refresh.outcome() for refresh in refreshes]


def classify(outcome: dict) -> str:
    if outcome.get("killed"):
        return "killed"
    if outcome.get("success"):
        return "succeeded"
    text_ = " ".join(outcome.get("failures", []))
    for kind, marks in EXPECTED_FAILURES.items():
        if any(mark in text_ for mark in marks):
            return kind
    return "crashed"


# ---------------------------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------------------------


def stored(engine: Engine) -> dict[str, set]:
    with engine.connect() as conn:
        return {
            "models": set(conn.execute(text("SELECT id FROM models")).scalars()),
            "versions": {tuple(r) for r in conn.execute(text("SELECT model_id, id FROM model_versions"))},
            "files": {tuple(r) for r in conn.execute(text(
                "SELECT v.model_id, f.id FROM model_files f JOIN model_versions v ON v.id = f.version_id"))},
            "images": {tuple(r) for r in conn.execute(text("SELECT model_id, version_id, id FROM images"))},
            "quarantined": set(conn.execute(text(
                "SELECT model_id FROM quarantine WHERE stage IN ('normalise', 'load')")).scalars()),
            "names": dict(conn.execute(text("SELECT id, name FROM models")).all()),
        }


def inconsistencies(zoo: Zoo, engine: Engine) -> dict[str, int]:
    """What is wrong with the catalogue as it stands (mid-way: only models stored so far are judged)."""
    now, expected = stored(engine), zoo.expected()
    models = now["models"]
    wrong = {}
    for table in ("versions", "files", "images"):
        want = {row for row in expected[table] if row[0] in models}  # a stored model holds all of its rows
        have = now[table]
        wrong[f"{table} missing"] = len(want - have)
        wrong[f"{table} not expected"] = len(have - expected[table])
    paired = {m for pair in zoo.pairs for m in pair}
    wrong["false quarantines"] = len(now["quarantined"] - zoo.oversized - paired)
    wrong["bad items stored"] = len(models & zoo.oversized)
    wrong["pairs both stored"] = sum(1 for a, b in zoo.pairs if a in models and b in models)
    return wrong


def final_accounts(zoo: Zoo, engine: Engine) -> dict[str, int]:
    now = stored(engine)
    lost = inconsistencies(zoo, engine)
    accounts = {
        "models lost": len(zoo.good - now["models"]),
        "pairs lost": sum(1 for a, b in zoo.pairs if a not in now["models"] and b not in now["models"]),
        "bad items not quarantined": len(zoo.oversized - now["quarantined"]),
        "stale names": sum(1 for model_id, name in now["names"].items() if zoo.names.get(model_id) != name),
        **{key: value for key, value in lost.items() if key.endswith("missing")},
    }
    with engine.connect() as conn:
        duplicated = sum(conn.execute(text(f"SELECT count(*) - count(DISTINCT ({key})) FROM {table}")).scalar_one()
                         for table, key in (("models_raw", "id"), ("models", "id"), ("model_versions", "id"),
                                            ("model_files", "id"), ("images", "id, version_id"),
                                            ("image_resources", "image_id, version_id, position")))
    return {"rows lost": sum(accounts.values()) + lost["false quarantines"],
            "rows duplicated": duplicated + lost["pairs both stored"] + sum(
                value for key, value in lost.items() if key.endswith("not expected")),
            **accounts}


# ---------------------------------------------------------------------------------------------------------------


def fresh_url(workdir: Path, given: str | None) -> str:
    if given:
        return given
    from ingest import fresh_database  # bench/ingest.py: a new database on DATABASE_URL's server or embedded

    return fresh_database(workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", help="an empty database to use (default: a new one)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    zoo = generate(args.items, rng)
    with tempfile.TemporaryDirectory(prefix="zoo-chaos-") as tmp:
        workdir = Path(tmp)
        url = fresh_url(workdir, args.database_url)
        from db.engine import engine_for_url
        from db.migrate import ensure_migrated

        ensure_migrated(engine_for_url(url)).dispose()  # the schema, before any fault can stop a refresh making it
        engine = create_engine(url, poolclass=NullPool)  # no idle session of ours for the chaos to cut
        faults, outcomes, rounds_consistent = Counter(), Counter(), 0
        round_faults: list[Counter] = []
        duration = 25.0  # about one refresh of 3,000 items here: faults land during it
        for number in range(args.rounds):
            dump = workdir / f"round{number}.jsonl"
            write_round_dump(zoo, dump, rng, number)
            before = Counter(faults)
            started = time.monotonic()
            for outcome in run_round(engine, url, dump, workdir, workdir, rng, number, duration, faults):
                outcomes[classify(outcome)] += 1
                if classify(outcome) == "crashed":
                    print(f"round {number}: a refresh crashed: {outcome}", file=sys.stderr)
            if not faults["SIGKILL"] - before["SIGKILL"]:  # faults land within a refresh's usual length
                duration = max(8.0, (duration + time.monotonic() - started) / 2)
            wrong = inconsistencies(zoo, engine)
            consistent = not any(wrong.values())
            rounds_consistent += consistent
            round_faults.append((faults - before) if consistent else Counter())
            if not consistent:
                print(f"round {number}: inconsistent: {wrong}", file=sys.stderr)
        final_dump = workdir / "final.jsonl"
        write_round_dump(zoo, final_dump, rng, args.rounds)
        final = start_refresh(url, final_dump, workdir, workdir / "final.log")
        final.process.wait(timeout=900)
        final_outcome = final.outcome()
        again = start_refresh(url, final_dump, workdir, workdir / "again.log")
        again.process.wait(timeout=900)
        again_outcome = again.outcome()
        with engine.connect() as conn:
            pending = conn.execute(text(
                "SELECT count(*) FROM models_raw WHERE normalised_sha IS DISTINCT FROM raw_sha")).scalar_one()
        accounts = final_accounts(zoo, engine)
        engine.dispose()
    survived = sum(round_faults, Counter())
    complete = final_outcome.get("success") and again_outcome.get("success") and pending == 0
    if not complete:
        survived = Counter()
    print(f"{args.items} generated items ({len(zoo.oversized)} with a 20 kB baseModel, {len(zoo.pairs)} pairs "
          f"sharing a version id), {args.rounds} rounds, seed {args.seed}")
    print(f"{'fault':<52}{'injected':>10}{'survived':>10}")
    labels = {"SIGKILL": "SIGKILL of the refresh (its process group)",
              "connection cut": "connection terminated (pg_terminate_backend)",
              "second refresh": "second refresh started beside the first",
              "disk full": "Postgres disk full (SQLSTATE 53100, 5% of writes)"}
    for key, label in labels.items():
        print(f"{label:<52}{faults[key]:>10}{survived[key]:>10}")
    print(f"{'ENOSPC in the file cache':<52}{'n/a':>10}{'':>10}  (the raw-store/catalogue path writes no files)")
    print(f"refreshes: {dict(outcomes)}; rounds consistent: {rounds_consistent}/{args.rounds}; "
          f"final refresh {'succeeded' if final_outcome.get('success') else final_outcome}, "
          f"then {pending} pending")
    print(f"rows lost: {accounts['rows lost']}   rows duplicated: {accounts['rows duplicated']}   "
          f"({', '.join(f'{k} {v}' for k, v in accounts.items() if k not in ('rows lost', 'rows duplicated'))})")
    print(json.dumps({"bench": "chaos", "items": args.items, "rounds": args.rounds, "seed": args.seed,
                      "faults_injected": dict(faults), "faults_survived": dict(survived),
                      "refreshes": dict(outcomes), "crashes": outcomes["crashed"],
                      "rounds_consistent": rounds_consistent, "final_refresh_ok": bool(complete),
                      "rows_lost": accounts["rows lost"], "rows_duplicated": accounts["rows duplicated"]}))


if __name__ == "__main__":
    main()
