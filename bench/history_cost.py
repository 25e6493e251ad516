"""What the catalogue's history costs: a dump, then two refreshes from copies with a share of the models changed.

The copies are built in a temporary folder from the dump itself: each refresh changes a different `--share` of the
models (round robin: the card rewritten, a version added, a file added, the NSFW flag flipped, the licence changed)
and the download counts of ten times as many (counts alone are not history, so these must cost nothing). Each copy
is stored by the ingest step every refresh starts with (crawlers/dump.ingest_dump, where history is recorded; the
normalising steps after it record nothing) into a fresh throwaway embedded Postgres (or a fresh database on
DATABASE_URL's server). Prints the bytes of model_changes and models_raw_history after each refresh beside those of
models_raw (what keeping a full copy per refresh, the obvious alternative, would cost), and ends with one JSON line.

    python bench/history_cost.py ../shared/civitai/models-2023-07-04.jsonl.gz [--share 0.01] [--limit N]
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import orjson
from sqlalchemy import Engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import fresh_database  # noqa: E402

TABLES = ("models_raw", "model_changes", "models_raw_history")


def lines(dump: Path) -> Iterator[bytes]:
    opener = gzip.open if dump.suffix == ".gz" else open
    with opener(dump, "rb") as handle:
        yield from (line for line in handle if line.strip())


def _rewrite_card(item: dict, new_id: Iterator[int]) -> None:
    item["description"] = f"{item.get('description') or ''}<p>Updated: see the new version notes.</p>"


def _add_version(item: dict, new_id: Iterator[int]) -> None:
    versions = item.get("modelVersions") or []
    if not versions:
        return _rewrite_card(item, new_id)
    added = copy.deepcopy(versions[0])
    added["id"], added["name"] = next(new_id), f"{added.get('name', '')} v2"
    for file in added.get("files") or []:
        file["id"] = next(new_id)
    versions.insert(0, added)


def _add_file(item: dict, new_id: Iterator[int]) -> None:
    versions = item.get("modelVersions") or []
    files = versions[0].get("files") if versions else None
    if not files:
        return _rewrite_card(item, new_id)
    files.append({**copy.deepcopy(files[0]), "id": next(new_id), "name": f"pruned-{files[0].get('name', '')}",
                  "primary": False})


def _flip_nsfw(item: dict, new_id: Iterator[int]) -> None:
    item["nsfw"] = not item.get("nsfw")


def _change_licence(item: dict, new_id: Iterator[int]) -> None:
    item["allowCommercialUse"] = "None" if item.get("allowCommercialUse") != "None" else "Sell"
    item["allowDerivatives"] = not item.get("allowDerivatives")


CHANGES: tuple[Callable[[dict, Iterator[int]], None], ...] = (
    _rewrite_card, _add_version, _add_file, _flip_nsfw, _change_licence)


def changed_copy(source: Path, target: Path, items: int, share: float, rng: random.Random,
                 new_id: Iterator[int]) -> Path:
    """Copy the dump with `share` of its items changed (one change each, round robin) and ten times as many with
    new download counts; streamed, so the dump is never held in memory whole."""
    picked = rng.sample(range(items), min(items, round(share * items) * 11))
    changed = {index: n for n, index in enumerate(picked[:len(picked) // 11])}
    counted = set(picked[len(picked) // 11:])
    with gzip.open(target, "wb", compresslevel=1) as handle:
        for index, line in enumerate(lines(source)):
            if index in changed or index in counted:
                item = orjson.loads(line)
                if index in changed:
                    CHANGES[changed[index] % len(CHANGES)](item, new_id)
                elif isinstance(item.get("stats"), dict):
                    item["stats"]["downloadCount"] = int(item["stats"].get("downloadCount") or 0) + rng.randint(1, 500)
                line = orjson.dumps(item) + b"\n"
            handle.write(line)
    return target


def table_bytes(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        conn.execute(text("CHECKPOINT"))
        return {table: conn.execute(text("SELECT pg_total_relation_size(CAST(:t AS regclass))"),
                                    {"t": table}).scalar_one() for table in TABLES}


def run_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        run = conn.execute(text("SELECT max(id) FROM crawl_runs")).scalar_one()
        counts = dict(conn.execute(text("SELECT change, count(*) FROM model_changes WHERE run_id = :run "
                                        "GROUP BY change"), {"run": run}).all())
        counts["raw_kept"] = conn.execute(text("SELECT count(*) FROM models_raw_history WHERE run_id = :run"),
                                          {"run": run}).scalar_one()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump", type=Path, help="JSON Lines dump of /models items (.jsonl or .jsonl.gz)")
    parser.add_argument("--share", type=float, default=0.01, help="share of the models each refresh changes")
    parser.add_argument("--limit", type=int, help="use only the dump's first N items (a documented subset)")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    if not args.dump.is_file():
        print(f"skipped: dump not found: {args.dump}")
        return
    from crawlers.dump import ingest_dump
    from db.engine import engine_for_url
    from db.migrate import ensure_migrated

    rng = random.Random(args.seed)
    new_id = iter(range(2_000_000_000, 3_000_000_000))
    with tempfile.TemporaryDirectory(prefix="zoo-history-bench-") as workdir:
        base = Path(workdir) / "copy0.jsonl.gz"
        with gzip.open(base, "wb", compresslevel=1) as handle:
            handle.writelines(islice(lines(args.dump), args.limit))
        items = sum(1 for _ in lines(base))
        first = changed_copy(base, Path(workdir) / "copy1.jsonl.gz", items, args.share, rng, new_id)
        second = changed_copy(first, Path(workdir) / "copy2.jsonl.gz", items, args.share, rng, new_id)
        copies = [("dump as recorded", base), (f"refresh 1 ({args.share:.0%} changed)", first),
                  (f"refresh 2 ({args.share:.0%} more changed)", second)]
        engine = ensure_migrated(engine_for_url(fresh_database(Path(workdir))))
        rows, previous = [], dict.fromkeys(TABLES, 0)
        for name, path in copies:
            started = time.perf_counter()
            report = ingest_dump(engine, path)
            seconds = time.perf_counter() - started
            sizes = table_bytes(engine)
            history = sum(sizes[t] - previous[t] for t in ("model_changes", "models_raw_history"))
            rows.append({"refresh": name, "seconds": round(seconds, 1), "items": report.items_received,
                         "raw_changed": report.models_changed, **run_counts(engine), **sizes,
                         "history_bytes_added": history})
            previous = sizes
        engine.dispose()
    print(f"{'refresh':<28}{'items':>7}{'raw chg':>8}{'added':>7}{'changed':>8}{'kept':>6}{'s':>7}"
          f"{'models_raw MB':>14}{'changes MB':>11}{'raw hist MB':>12}{'history +MB':>12}")
    for row in rows:
        print(f"{row['refresh']:<28}{row['items']:>7}{row['raw_changed']:>8}{row.get('added', 0):>7}"
              f"{row.get('changed', 0):>8}{row['raw_kept']:>6}{row['seconds']:>7.1f}"
              f"{row['models_raw'] / 2**20:>14.2f}{row['model_changes'] / 2**20:>11.3f}"
              f"{row['models_raw_history'] / 2**20:>12.3f}{row['history_bytes_added'] / 2**20:>12.3f}")
    raw = rows[0]["models_raw"]  # one full copy of the raw catalogue (later sizes include dead rows)
    per_refresh = [row["history_bytes_added"] for row in rows[1:]]
    print(f"history per refresh: {', '.join(f'{b / 2**20:.2f} MB' for b in per_refresh)} = "
          f"{', '.join(f'{b / raw:.2%}' for b in per_refresh)} of models_raw after the first ingest ({raw / 2**20:.1f} MB): "
          "what a full copy per refresh would cost")
    print(json.dumps({"bench": "history_cost", "items": rows[0]["items"], "share": args.share,
                      "models_raw_bytes": raw, "first_ingest_history_bytes": rows[0]["history_bytes_added"],
                      "refresh_history_bytes": per_refresh,
                      "refresh_history_share_of_raw": [round(b / raw, 4) for b in per_refresh],
                      "changed_recorded": [row.get("changed", 0) for row in rows[1:]],
                      "raw_changed": [row["raw_changed"] for row in rows[1:]]}))


if __name__ == "__main__":
    main()
