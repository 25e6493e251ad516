"""Budget of the example-prompt collection (issue 15, item 5): what the prompts' arrays add to the refresh, to a
serving process's load and to its memory, on a real zoo.

Reads the zoo's database only: builds the search index of the newest stored generation's space, describer and
serving limits as the retrieval_index asset builds it (build_search_index, in a READ ONLY transaction), with
example_prompt_arrays timed inside it. Then stores that index twice in a throwaway database (bench/ingest.py's
fresh_database: an embedded server in a temporary folder, or a new database on DATABASE_URL's server), as built and
without its prompt_* arrays (no prompt-neighbour votes), timing each store_search_index, and loads each generation
in fresh interpreters, alternating, --repeats times each: load_search_index + SearchEngine timed, RSS before, peak
during and after, then --queries searches as the Retriever runs them (SearchEngine.search on real SFW prompts, each
with a stored vector as its query vector), RSS after. Medians are printed, with the budgets: the engine's own targets
(issue 10: load <= 3 s, engine memory <= 600 MB) twice over. Ends with one JSON line.

    python bench/prompt_budget.py --data-dir /tmp/eng/dump/data [--space S] [--repeats 3] [--queries 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.retrieval_speed import (
    TARGET_LOAD_S,
    TARGET_MB,
    PeakRss,
    deep_size,
    rss_bytes,
)

PROMPT_PREFIX = "prompt_"
BUDGET_FACTOR = 2  # issue 15: each within twice the engine's own targets
VARIANTS = ("with prompts", "without prompts")
MB = 2 ** 20


def zoo_url(args) -> str:
    """The zoo to measure: --data-dir's embedded server, --database-url, or the settings' database."""
    from config import Settings
    from db.embedded import embedded_database_url
    from db.engine import database_url, url_or_embedded

    if args.data_dir is not None:
        return embedded_database_url(args.data_dir)
    if args.database_url:
        return url_or_embedded(args.database_url, Settings.from_env().embedded_pg_dir)
    return database_url(Settings.from_env())


def newest_settings(engine, space: str | None) -> tuple[str, int, dict]:
    """(space, generation, settings) of the newest stored generation (of `space`, or of the only space stored);
    the settings gain the vectors' dimension."""
    from sqlalchemy import text

    with engine.connect() as conn:
        spaces = conn.execute(text("SELECT DISTINCT space FROM search_index_generations")).scalars().all()
        if space is None:
            if len(spaces) != 1:
                sys.exit(f"--space is needed: the zoo holds generations of {spaces or 'no space'}")
            space = spaces[0]
        row = conn.execute(text(
            "SELECT generation, manifest -> 'settings' || jsonb_build_object('dimension', "
            "manifest -> 'arrays' -> 'vectors' -> 'shape' -> 1) FROM search_index_generations WHERE space = :space "
            "ORDER BY generation DESC LIMIT 1"), {"space": space}).one_or_none()
    if row is None:
        sys.exit(f"no stored generation of {space}: run the refresh first")
    return space, row[0], row[1]


def timed_build(engine, space: str, settings: dict) -> tuple[object, dict]:
    """build_search_index as the retrieval_index asset runs it (same describer and serving limits as the newest
    generation), read-only, with example_prompt_arrays timed apart by wrapping it."""
    from sqlalchemy import text

    import embedding.search_index as search_index_module
    from db.descriptions import DescriberKey
    from embedding.refresh import FALLBACK_DESCRIBER
    from embedding.search_index import ServingLimits

    describer = DescriberKey(settings["describer"], settings["prompt_version"], **FALLBACK_DESCRIBER)
    limits = ServingLimits(settings["max_content_level"], settings["likeness"])
    prompt_s: list[float] = []
    original = search_index_module.example_prompt_arrays

    def timed_prompt_arrays(conn, row_of):
        started = time.perf_counter()
        try:
            return original(conn, row_of)
        finally:
            prompt_s.append(time.perf_counter() - started)

    search_index_module.example_prompt_arrays = timed_prompt_arrays
    try:
        with engine.connect() as conn:
            conn.execute(text("SET TRANSACTION READ ONLY"))
            started = time.perf_counter()
            index = search_index_module.build_search_index(conn, space, int(settings["dimension"]), describer,
                                                             limits)
            build_s = time.perf_counter() - started
            conn.rollback()
    finally:
        search_index_module.example_prompt_arrays = original
    return index, {"build_s": round(build_s, 2), "prompt_arrays_s": round(sum(prompt_s), 2)}


def without_prompts(index):
    """The same index with no example-prompt collection (the engine then gives no prompt-neighbour votes)."""
    return replace(index, arrays={n: a for n, a in index.arrays.items() if not n.startswith(PROMPT_PREFIX)},
                   prompt_lexemes=[])


def sample_prompts(engine, n: int) -> list[str]:
    """n SFW example prompts of the zoo, a fixed pseudo-random sample: the words of the probe's searches."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT prompt FROM images WHERE NOT nsfw AND prompt IS NOT NULL AND length(prompt) BETWEEN 3 AND 4000 "
            "ORDER BY md5(id::text) LIMIT :n"), {"n": n}).scalars().all()


def probe(spec: dict) -> dict:
    """In a fresh interpreter (what a serving process pays): load one generation and build its SearchEngine (timed;
    RSS before, peak, after), then search the prompts; every module is imported before the first RSS reading."""
    from sqlalchemy import create_engine, text

    from embedding.search_index import load_search_index
    from serving.search.engine import SearchEngine

    db = create_engine(spec["url"])
    with db.connect() as conn:
        conn.execute(text("SELECT 1")).all()
    baseline = rss_bytes()
    with PeakRss() as peak:
        started = time.perf_counter()
        index = load_search_index(db, spec["space"], spec["generation"])
        loaded_s = time.perf_counter() - started
        search_engine = SearchEngine(index)
        load_s = time.perf_counter() - started
    after_load = rss_bytes()
    rows = np.random.default_rng(0).choice(len(index), len(spec["prompts"]), replace=len(index) < len(spec["prompts"]))
    latencies = []
    for row, prompt in zip(rows.tolist(), spec["prompts"], strict=True):
        started = time.perf_counter()
        search_engine.search(index.vectors[row], prompt)
        latencies.append((time.perf_counter() - started) * 1e3)
    after_queries = rss_bytes()
    prompt_arrays = sum(a.nbytes for n, a in index.arrays.items() if n.startswith(PROMPT_PREFIX))
    seen: set[int] = set()
    prompt_python = (deep_size(index.prompt_lexemes, seen)
                     + deep_size(search_engine.neighbours.__dict__.get("_term_of", {}), seen))
    return {"load_s": round(load_s, 3), "load_search_index_s": round(loaded_s, 3),
            "load_rss_mb": round((after_load - baseline) / MB, 1), "peak_mb": round((peak.peak - baseline) / MB, 1),
            "engine_rss_mb": round((after_queries - baseline) / MB, 1), "first_query_ms": round(latencies[0], 1),
            "query_p50_ms": round(float(np.percentile(latencies[1:] or latencies, 50)), 2),
            "prompt_arrays_mb": round(prompt_arrays / MB, 1), "prompt_python_mb": round(prompt_python / MB, 1),
            "baseline_rss_mb": round(baseline / MB, 1), "process_rss_mb": round(rss_bytes() / MB, 1)}


def run_probe(spec: dict) -> dict:
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--probe"], input=json.dumps(spec),
                          capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        sys.exit(f"the load probe failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stored_mb(index) -> float:
    """What the collection adds to a stored generation: its arrays and its lexemes blob."""
    import orjson

    arrays = sum(a.nbytes for n, a in index.arrays.items() if n.startswith(PROMPT_PREFIX))
    return round((arrays + len(orjson.dumps(index.prompt_lexemes))) / MB, 1)


def main() -> None:
    if sys.argv[1:] == ["--probe"]:
        print(json.dumps(probe(json.loads(sys.stdin.read()))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="the zoo's embedded Postgres data folder")
    parser.add_argument("--database-url", help="the zoo's database (default: the settings' one)")
    parser.add_argument("--space", help="embedding space (default: the only one with a stored generation)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process loads per variant (medians printed)")
    parser.add_argument("--queries", type=int, default=50, help="searches per load, on the zoo's own SFW prompts")
    args = parser.parse_args()
    if args.repeats < 1 or args.queries < 2:
        parser.error("--repeats must be at least 1 and --queries at least 2")
    from sqlalchemy import create_engine

    from bench.ingest import fresh_database
    from db.migrate import ensure_migrated
    from embedding.search_index import store_search_index

    zoo = create_engine(zoo_url(args))
    space, zoo_generation, settings = newest_settings(zoo, args.space)
    print(f"zoo: {space}, newest generation {zoo_generation} (format {settings.get('format')}, describer "
          f"{settings['describer']}); building its index read-only ...", flush=True)
    index, build = timed_build(zoo, space, settings)
    prompts = sample_prompts(zoo, args.queries)
    zoo.dispose()
    count = len(index.arrays.get("prompt_length", ()))
    print(f"build_search_index {build['build_s']:.1f} s, of which example_prompt_arrays {build['prompt_arrays_s']:.1f} s "
          f"({count:,} prompts, {len(index.prompt_lexemes):,} words; {len(index):,} versions)", flush=True)
    variants = {VARIANTS[0]: index, VARIANTS[1]: without_prompts(index)}
    results: dict[str, dict] = {name: {"probes": []} for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="zoo-prompt-budget-") as workdir:
        scratch = ensure_migrated(create_engine(fresh_database(Path(workdir))))
        for name, variant in variants.items():
            with scratch.begin() as conn:
                started = time.perf_counter()
                results[name]["generation"] = store_search_index(conn, variant)
                results[name]["store_s"] = round(time.perf_counter() - started, 2)
        url = scratch.url.render_as_string(hide_password=False)
        for repeat in range(args.repeats):
            for name in VARIANTS if repeat % 2 == 0 else VARIANTS[::-1]:
                spec = {"url": url, "space": space, "generation": results[name]["generation"], "prompts": prompts}
                results[name]["probes"].append(run_probe(spec))
                print(f"  load {repeat + 1}/{args.repeats} {name}: {results[name]['probes'][-1]['load_s']:.2f} s",
                      flush=True)
        scratch.dispose()
    report(space, build, index, results)


def report(space: str, build: dict, index, results: dict[str, dict]) -> None:
    """The table of medians, the budgets, one JSON line."""
    keys = ("load_s", "load_search_index_s", "load_rss_mb", "peak_mb", "engine_rss_mb", "first_query_ms",
            "query_p50_ms", "prompt_arrays_mb", "prompt_python_mb", "baseline_rss_mb", "process_rss_mb")
    medians = {name: {k: round(statistics.median(p[k] for p in r["probes"]), 3) for k in keys}
               for name, r in results.items()}
    with_, without = medians[VARIANTS[0]], medians[VARIANTS[1]]
    rows = [("refresh: build_search_index (s)", build["build_s"], build["build_s"] - build["prompt_arrays_s"]),
            ("refresh: store_search_index (s)", results[VARIANTS[0]]["store_s"], results[VARIANTS[1]]["store_s"]),
            ("stored prompt arrays + words (MB)", stored_mb(index), 0.0),
            ("load_search_index + SearchEngine (s)", with_["load_s"], without["load_s"]),
            ("  of which load_search_index (s)", with_["load_search_index_s"], without["load_search_index_s"]),
            ("RSS after the load (MB)", with_["load_rss_mb"], without["load_rss_mb"]),
            ("RSS peak during the load (MB)", with_["peak_mb"], without["peak_mb"]),
            ("engine RSS after the searches (MB)", with_["engine_rss_mb"], without["engine_rss_mb"]),
            ("  prompt_* arrays in memory (MB)", with_["prompt_arrays_mb"], without["prompt_arrays_mb"]),
            ("  prompt words, their lookup (MB)", with_["prompt_python_mb"], without["prompt_python_mb"]),
            ("first search (ms)", with_["first_query_ms"], without["first_query_ms"]),
            ("search p50 (ms)", with_["query_p50_ms"], without["query_p50_ms"]),
            ("whole process RSS (MB)", with_["process_rss_mb"], without["process_rss_mb"]),
            ("  of which interpreter + modules (MB)", with_["baseline_rss_mb"], without["baseline_rss_mb"])]
    runs = len(results[VARIANTS[0]]["probes"])
    print(f"\nexample-prompt collection of {space}: {len(index.arrays.get('prompt_length', ())):,} prompts, "
          f"{len(index):,} versions (medians of {runs} fresh-process loads each; refresh rows measured once, the "
          f"build without prompts = the build less example_prompt_arrays)")
    print(f"  {'':<40}{'with':>10}{'without':>10}{'added':>10}")
    for label, a, b in rows:
        print(f"  {label:<40}{a:>10.2f}{b:>10.2f}{a - b:>10.2f}")
    load_budget, mb_budget = BUDGET_FACTOR * TARGET_LOAD_S, BUDGET_FACTOR * TARGET_MB
    checks = {"load": with_["load_s"] <= load_budget, "memory": with_["engine_rss_mb"] <= mb_budget}
    print(f"budgets ({BUDGET_FACTOR}x the engine's targets): load {with_['load_s']:.2f} s <= {load_budget:.0f} s: "
          f"{'PASS' if checks['load'] else 'FAIL'}; engine {with_['engine_rss_mb']:.0f} MB RSS <= {mb_budget} MB: "
          f"{'PASS' if checks['memory'] else 'FAIL'}; the refresh gains {build['prompt_arrays_s']:.1f} s building and "
          f"{results[VARIANTS[0]]['store_s'] - results[VARIANTS[1]]['store_s']:.1f} s storing (whole-graph target "
          f"180 s, not measured here)")
    print(json.dumps({"bench": "prompt_budget", "space": space, "prompts": len(index.arrays.get("prompt_length", ())),
                      "versions": len(index), "build": build, "stored_prompt_mb": stored_mb(index),
                      "store_s": {name: r["store_s"] for name, r in results.items()}, "medians": medians,
                      "budgets": checks, "probes": {name: r["probes"] for name, r in results.items()}}))


if __name__ == "__main__":
    main()
