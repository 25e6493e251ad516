"""Retrieval benchmark: two-level pgvector HNSW search against exact numpy search and in-process FAISS HNSW.

Builds synthetic clustered zoos (db/synthetic.py) at the real dump's size and at paper scale in a fresh database
(embedded server, or a new database on DATABASE_URL's server), refreshes the catalogue's statistics as the refresh
does, builds the partial HNSW indexes (timed), then times the two-level query of `Retriever.search` (level 1:
checkpoints; level 2: adapters of the top checkpoint's base-model family) with query vectors given directly, and
scores recall@10 of each level against exact search over the same vectors with the same restrictions (level 2: the
family of the checkpoint that method chose). The synthetic texts hold Zipf-distributed words and each query carries
eight such words, so the lexical part (BM25 scoring, candidates holding the rarest words) does its real work; the
weights are pure similarity, so recall against exact search is meaningful. Peers on the same vectors and queries, in this process: exact numpy search (matrix product +
argpartition, one matrix per restriction) and FAISS HNSW (one index per restriction, efSearch = pgvector's
ef_search). A "postgres floor" row times the same round trips with no search in them (one autocommit statement
carrying the vector literal per level). Methods are interleaved query by query (rotating order) and run single-
threaded, so load from other processes hits them alike. Prints one table per scale; ends with one JSON line
(headline: paper scale at the Retriever's default ef_search).

    python bench/retrieval_speed.py [--scales real,paper] [--queries 200] [--ef 40,100,200] [--dimension 384]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import inspect
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOP_K = 10
QUERY_WORDS = 8
SCALES = ("real", "paper")


@dataclass
class Method:
    """One row of the table: level 1 (checkpoint ids) then level 2 (adapter ids) in the family `family_of` picks."""

    name: str
    level1: Callable[[np.ndarray], list[int]]
    level2: Callable[[np.ndarray, str], list[int]]
    family_of: Callable[[list[int]], str | None]
    scored: bool = True  # False: a timing reference with no answers
    latencies_ms: list[float] = field(default_factory=list)
    level1_ms: list[float] = field(default_factory=list)
    level2_ms: list[float] = field(default_factory=list)
    recall1: list[float] = field(default_factory=list)
    recall2: list[float] = field(default_factory=list)
    short_level2: int = 0  # queries where level 2 returned fewer than TOP_K adapters

    def once(self, q: np.ndarray) -> tuple[float, float, list[int], list[int], str | None]:
        t0 = time.perf_counter()
        checkpoints = self.level1(q)
        t1 = time.perf_counter()
        family = self.family_of(checkpoints) if checkpoints else None
        adapters = self.level2(q, family) if family is not None else []
        t2 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3, checkpoints, adapters, family

    def record(self, q: np.ndarray, exact: Exact) -> None:
        l1, l2, checkpoints, adapters, family = self.once(q)
        self.level1_ms.append(l1)
        self.level2_ms.append(l2)
        self.latencies_ms.append(l1 + l2)
        if self.scored:
            self.recall1.append(recall(checkpoints, exact.level1(q)))
            truth = exact.level2(q, family)
            self.recall2.append(recall(adapters, truth))
            self.short_level2 += len(adapters) < len(truth)

    def summary(self, baseline_p50: float) -> dict:
        p50 = float(np.percentile(self.latencies_ms, 50))
        return {
            "name": self.name, "p50_ms": round(p50, 3), "p99_ms": round(float(np.percentile(self.latencies_ms, 99)), 3),
            "level1_p50_ms": round(float(np.percentile(self.level1_ms, 50)), 3),
            "level2_p50_ms": round(float(np.percentile(self.level2_ms, 50)), 3),
            "recall1": round(float(np.mean(self.recall1)), 4) if self.scored else None,
            "recall2": round(float(np.mean(self.recall2)), 4) if self.scored else None,
            "short_level2": self.short_level2, "p50_vs_numpy": round(p50 / baseline_p50, 2),
        }


def recall(found: list[int], truth: list[int]) -> float:
    return len({int(x) for x in found} & set(truth)) / len(truth) if truth else 1.0


def parse_ints(value: str) -> list[int]:
    return [int(part) for part in value.split(",") if part.strip()]


def make_queries(rng: np.random.Generator, centres: np.ndarray, n: int, noise: float) -> np.ndarray:
    """Near cluster centres, like real prompts: a centre plus isotropic noise of norm about `noise`, normalised."""
    d = centres.shape[1]
    q = centres[rng.integers(0, len(centres), n)] + (noise / np.sqrt(d)) * rng.standard_normal((n, d))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


class Exact:
    """Exact inner-product search restricted like the two levels: checkpoints; adapters of one family."""

    def __init__(self, zoo) -> None:
        self.ckpt_ids, self.ckpt_vecs = zoo.checkpoint_ids, np.ascontiguousarray(zoo.checkpoint_vectors)
        self.ckpt_family = dict(zip(zoo.checkpoint_ids.tolist(), zoo.checkpoint_families.tolist()))
        self.family_ids, self.family_vecs = {}, {}
        for family in np.unique(zoo.adapter_families).tolist():
            mask = zoo.adapter_families == family
            self.family_ids[family] = zoo.adapter_ids[mask]
            self.family_vecs[family] = np.ascontiguousarray(zoo.adapter_vectors[mask])

    def level1(self, q: np.ndarray, k: int = TOP_K) -> list[int]:
        return self.ckpt_ids[top_k(self.ckpt_vecs @ q, k)].tolist()

    def level2(self, q: np.ndarray, family: str | None, k: int = TOP_K) -> list[int]:
        if family is None:
            return []
        return self.family_ids[family][top_k(self.family_vecs[family] @ q, k)].tolist()

    def family_of(self, checkpoints: list[int]) -> str:
        return self.ckpt_family[int(checkpoints[0])]


class FaissHNSW:
    """In-process HNSW: one index for checkpoints, one per base-model family for adapters (a pre-filter)."""

    def __init__(self, faiss, exact: Exact, m: int, ef_construction: int) -> None:
        self.faiss, self.exact = faiss, exact
        started = time.perf_counter()
        self.ckpt = self._index(exact.ckpt_vecs, m, ef_construction)
        self.families = {f: self._index(v, m, ef_construction) for f, v in exact.family_vecs.items()}
        self.build_s = time.perf_counter() - started

    def _index(self, vectors: np.ndarray, m: int, ef_construction: int):
        index = self.faiss.IndexHNSWFlat(vectors.shape[1], m, self.faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.add(vectors)
        return index

    def method(self, name: str, ef: int) -> Method:
        params = self.faiss.SearchParametersHNSW()
        params.efSearch = max(ef, TOP_K)

        def level1(q: np.ndarray) -> list[int]:
            _, idx = self.ckpt.search(q[None, :], TOP_K, params=params)
            return self.exact.ckpt_ids[idx[0][idx[0] >= 0]].tolist()

        def level2(q: np.ndarray, family: str) -> list[int]:
            _, idx = self.families[family].search(q[None, :], TOP_K, params=params)
            return self.exact.family_ids[family][idx[0][idx[0] >= 0]].tolist()

        return Method(name, level1, level2, self.exact.family_of)


def query_words(q: np.ndarray) -> str:
    """The words a query vector stands for: drawn like the zoo's texts, seeded by the vector (so each method gets
    the same words for the same query)."""
    from testkit.synthetic_zoo import synthetic_words

    seed = int.from_bytes(hashlib.blake2b(q.tobytes(), digest_size=8).digest(), "little")
    return synthetic_words(np.random.default_rng(seed), QUERY_WORDS)


def pg_method(retriever, name: str) -> Method:
    """The Retriever's own two round trips: level 1 top-10 checkpoints, level 2 for the first of them, each with
    the query's words (BM25 and its candidates; the lexical weights are 0, so recall is comparable)."""
    last: dict = {}

    def level1(q: np.ndarray) -> list[int]:
        hits = retriever.checkpoints(q, TOP_K, words=query_words(q))
        last["hit"] = hits[0] if hits else None
        return [hit.version_id for hit in hits]

    def level2(q: np.ndarray, family: str) -> list[int]:
        return [hit.version_id for hit in retriever.adapters(q, last["hit"], TOP_K, words=query_words(q))]

    return Method(name, level1, level2, lambda checkpoints: last["hit"].base_model_family)


def pg_floor(engine, exact: Exact) -> Method:
    """Round trips shaped like the Retriever's with no search in them: per level, one autocommit statement carrying
    the query vector as a literal (formatted as the Retriever does) on a pooled connection."""
    from sqlalchemy import text

    def level(q: np.ndarray) -> None:
        literal = "[" + ",".join(f"{x:.7g}" for x in q.tolist()) + "]"
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("SELECT length(CAST(:q AS text))"), {"q": literal}).all()

    def level1(q: np.ndarray) -> list[int]:
        level(q)
        return [-1]

    def level2(q: np.ndarray, family: str) -> list[int]:
        level(q)
        return []

    return Method("postgres floor (no search)", level1, level2, lambda checkpoints: "", scored=False)


def pg_index_check(retriever, space: str, q: np.ndarray) -> dict[str, bool]:
    """Whether the planner really walks each level's partial HNSW index (level 2: the chosen family's own one
    when it has one)."""
    from sqlalchemy import text

    from db.vectors import FAMILY, hnsw_index_name
    from serving.search.retrieval import FAMILY_INDEX

    checkpoint = retriever.checkpoints(q, 1)[0]
    family = checkpoint.base_model_family if retriever.adapter_plan(checkpoint, TOP_K)[1] == FAMILY_INDEX else None
    used = {}
    for role, name, (sql, params) in (
            ("checkpoint", hnsw_index_name(space, "checkpoint"), retriever.checkpoint_query(q, TOP_K)),
            ("adapter", hnsw_index_name(space, FAMILY if family else "adapter", family),
             retriever.adapter_query(q, checkpoint, TOP_K))):
        with retriever.engine.begin() as conn:
            plan = "\n".join(conn.execute(text("EXPLAIN " + sql), params).scalars())
        used[role] = name in plan
    return used


def single_threaded():
    """One thread for BLAS and OpenMP (numpy, FAISS): per-query latency, like one Postgres backend per query."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def synthetic_vectors(args, d: int, checkpoints: int, adapters: int, spread: float, first_id: int):
    """The vectors create_synthetic_zoo would insert, without a database."""
    from testkit.synthetic_zoo import FAMILIES, SyntheticZoo, clustered_unit_vectors

    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    total = checkpoints + adapters
    ids = np.arange(first_id, first_id + total)
    vectors = clustered_unit_vectors(rng, centres, total, spread)
    families = np.array([FAMILIES[f][1] for f in rng.integers(0, len(FAMILIES), total)])
    return SyntheticZoo(ids[:checkpoints], vectors[:checkpoints], families[:checkpoints], ids[checkpoints:],
                        vectors[checkpoints:], families[checkpoints:], centres)


def run_scale(scale: str, checkpoints: int, adapters: int, args, engine, faiss, first_id: int) -> dict:
    from sqlalchemy import text

    from testkit.synthetic_zoo import SyntheticSpace, create_synthetic_zoo
    from db.vectors import HNSW_MAX_DIMENSIONS, ensure_hnsw_indexes
    from serving.search.retrieval import Retriever, Weights

    d = args.dimension
    print(f"\n== scale {scale}: {checkpoints:,} checkpoints, {adapters:,} adapters, {d} dims, {args.queries} queries "
          f"(clusters {args.clusters}, item noise {args.noise}, query noise {args.query_noise})", flush=True)
    synthetic = SyntheticSpace(f"bench-{scale}", d)
    space = f"{synthetic.name}|none|{d}+0"
    spread = args.noise / np.sqrt(d)
    defaults = inspect.signature(Retriever.__init__).parameters
    default_ef = max(defaults["ef_search"].default, defaults["candidate_pool"].default)
    default_pool = defaults["candidate_pool"].default
    info: dict = {"scale": scale, "checkpoints": checkpoints, "adapters": adapters, "dimension": d,
                  "default_ef_search": default_ef}
    if engine is not None and d > HNSW_MAX_DIMENSIONS:
        print(f"skipped: pgvector rows ({d} dims; pgvector 0.6 indexes up to {HNSW_MAX_DIMENSIONS})")
        info["skipped"] = f"pgvector: {d} dims"
        engine = None

    if engine is not None:
        from db.catalogue_store import refresh_statistics

        started = time.perf_counter()
        zoo = create_synthetic_zoo(engine, space, checkpoints=checkpoints, adapters=adapters, dimension=d,
                                   clusters=args.clusters, spread=spread, seed=args.seed, first_id=first_id)
        # as the refresh does after bulk loads: with stale statistics on the catalogue the planner can put the
        # HNSW scan on the inner side of a nested loop (one index walk per model version of the family)
        refresh_statistics(engine)
        info["insert_s"] = round(time.perf_counter() - started, 2)
        builds = {}
        for role in ("checkpoint", "adapter"):
            started = time.perf_counter()
            ensure_hnsw_indexes(engine, space, d, roles=(role,))
            builds[role] = round(time.perf_counter() - started, 2)
        info["pg_build_s"] = builds
        with engine.connect() as conn:
            info["pgvector"] = conn.execute(text(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar_one()
            info["shared_buffers"] = conn.execute(text("SHOW shared_buffers")).scalar_one()
            info["pg_index_mb"] = round(conn.execute(text(
                "SELECT sum(pg_relation_size(indexrelid)) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname LIKE :p"), {"p": f"{hnsw_prefix(space)}%"}).scalar_one() / 2**20, 1)
    else:
        zoo = synthetic_vectors(args, d, checkpoints, adapters, spread, first_id)

    rng = np.random.default_rng(args.seed + 1)
    queries = make_queries(rng, zoo.centres, args.queries, args.query_noise)
    warmup = make_queries(rng, zoo.centres, args.warmup, args.query_noise)
    exact = Exact(zoo)
    methods = [Method("numpy exact", exact.level1, exact.level2, exact.family_of)]

    if engine is not None:
        methods.append(pg_floor(engine, exact))
        weights = Weights(checkpoint_popularity=0, adapter_popularity=0, co_usage=0, checkpoint_lexical=0,
                          adapter_lexical=0)
        for ef in args.ef:
            # the Retriever keeps ef_search >= candidate_pool, and a pgvector 0.6 index scan returns at most
            # ef_search rows: below the default pool the pool shrinks with ef
            pool = args.pool if args.pool is not None else min(default_pool, ef)
            retriever = Retriever(engine, synthetic, weights=weights, ef_search=ef, candidate_pool=pool)
            if "pg_index_used" not in info:
                info["pg_index_used"] = pg_index_check(retriever, space, queries[0])
            methods.append(pg_method(retriever, f"pgvector ef={retriever.ef_search} pool={retriever.candidate_pool}"))

    if faiss is not None:
        fx = FaissHNSW(faiss, exact, args.faiss_m, args.ef_construction)
        info["faiss_build_s"] = round(fx.build_s, 2)
        methods += [fx.method(f"faiss hnsw M={args.faiss_m} ef={ef}", ef) for ef in args.ef]

    with single_threaded():
        for q in warmup:
            for method in methods:
                method.once(q)
        gc.collect()
        gc.disable()
        try:
            for i, q in enumerate(queries):
                for j in range(len(methods)):
                    methods[(i + j) % len(methods)].record(q, exact)
        finally:
            gc.enable()

    base = float(np.percentile(methods[0].latencies_ms, 50))
    summaries = [method.summary(base) for method in methods]

    def cell(value) -> str:
        return f"{value:>9.3f}" if value is not None else f"{'-':>9}"

    print(f"{'method':<28}{'p50 ms':>9}{'p99 ms':>9}{'R@10 L1':>9}{'R@10 L2':>9}{'p50/numpy':>11}"
          f"{'L1 p50':>9}{'L2 p50':>9}")
    for s in summaries:
        print(f"{s['name']:<28}{s['p50_ms']:>9.3f}{s['p99_ms']:>9.3f}{cell(s['recall1'])}{cell(s['recall2'])}"
              f"{s['p50_vs_numpy']:>11.2f}{s['level1_p50_ms']:>9.3f}{s['level2_p50_ms']:>9.3f}")
    short = [f"{s['name']}: {s['short_level2']}" for s in summaries if s["short_level2"]]
    if short:
        print(f"queries where level 2 returned fewer than {TOP_K} adapters: " + "; ".join(short))
    extras = {k: info[k] for k in ("insert_s", "pg_build_s", "pg_index_mb", "faiss_build_s", "pg_index_used",
                                   "shared_buffers", "pgvector") if k in info}
    print("setup: " + ", ".join(f"{k}={v}" for k, v in extras.items()))
    headline = next((s for s in summaries if s["name"].startswith(f"pgvector ef={default_ef} ")), None)
    if headline is not None:
        ok_latency = headline["p50_ms"] < 5.0
        ok_recall = min(headline["recall1"], headline["recall2"]) >= 0.95
        print(f"targets at the default ef_search={default_ef}: two-level p50 {headline['p50_ms']:.2f} ms < 5 ms: "
              f"{'PASS' if ok_latency else 'FAIL'}; recall@10 L1 {headline['recall1']:.3f} / "
              f"L2 {headline['recall2']:.3f} >= 0.95: {'PASS' if ok_recall else 'FAIL'}")
    info["rows"], info["headline"] = summaries, headline
    return info


def hnsw_prefix(space: str) -> str:
    from db.vectors import hnsw_index_name

    return hnsw_index_name(space, "checkpoint").rsplit("_checkpoint_", 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="real,paper", help="comma list of: real, paper")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dimension", type=int, default=384, help="384: the lite preset's MiniLM space")
    parser.add_argument("--real-checkpoints", type=int, default=4500)
    parser.add_argument("--real-adapters", type=int, default=13500)
    parser.add_argument("--paper-checkpoints", type=int, default=6700)
    parser.add_argument("--paper-adapters", type=int, default=75000)
    parser.add_argument("--ef", type=parse_ints, default=[40, 100, 200], help="hnsw.ef_search values to sweep")
    parser.add_argument("--pool", type=int, default=None,
                        help="candidate_pool for every pgvector row (default: min(the Retriever's default, ef))")
    parser.add_argument("--clusters", type=int, default=64)
    parser.add_argument("--noise", type=float, default=1.0,
                        help="norm of an item's noise around its unit cluster centre (same-cluster cosine ~ 1/(1+n^2))")
    parser.add_argument("--query-noise", type=float, default=0.5, help="norm of a query's noise around its centre")
    parser.add_argument("--faiss-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=64, help="FAISS efConstruction (pgvector's is 64)")
    args = parser.parse_args()
    scales = [s.strip() for s in args.scales.split(",") if s.strip()]
    if not scales or set(scales) - set(SCALES) or args.queries < 1 or not args.ef:
        parser.error(f"--scales takes a comma list of {', '.join(SCALES)}; --queries and --ef must be given")

    skipped: list[str] = []
    try:
        import faiss
    except ImportError as err:
        faiss = None
        print(f"skipped: FAISS rows (faiss not importable: {err}); pgvector and numpy still run")
        skipped.append("faiss not importable")

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as workdir:
        from sqlalchemy import create_engine
        from sqlalchemy.exc import SQLAlchemyError

        engine = None
        try:
            from bench.ingest import fresh_database
            from db.migrate import ensure_migrated

            engine = ensure_migrated(create_engine(fresh_database(Path(workdir))))
        except (ImportError, OSError, RuntimeError, SQLAlchemyError) as err:  # numpy and FAISS still run
            print(f"skipped: pgvector rows (no database: {type(err).__name__}: {err})")
            skipped.append(f"no database: {type(err).__name__}")
        sizes = {"real": (args.real_checkpoints, args.real_adapters),
                 "paper": (args.paper_checkpoints, args.paper_adapters)}
        for n, scale in enumerate(scales):
            results[scale] = run_scale(scale, *sizes[scale], args, engine, faiss, first_id=10_000_000 * (n + 1))
            if "skipped" in results[scale]:
                skipped.append(results[scale]["skipped"])
        if engine is not None:
            engine.dispose()

    main_scale = "paper" if "paper" in results else scales[-1]
    info = results[main_scale]
    headline = info["headline"] or {}
    by_name = {r["name"]: r for r in info["rows"]}
    faiss_row = by_name.get(f"faiss hnsw M={args.faiss_m} ef={info['default_ef_search']}")
    out = {
        "bench": "retrieval_speed", "scale": main_scale, "checkpoints": info["checkpoints"],
        "adapters": info["adapters"], "dimension": info["dimension"], "ef_search": info["default_ef_search"],
        "queries": args.queries, "p50_ms": headline.get("p50_ms"), "p99_ms": headline.get("p99_ms"),
        "recall_at_10": min(headline["recall1"], headline["recall2"]) if headline else None,
        "recall_at_10_level1": headline.get("recall1"), "recall_at_10_level2": headline.get("recall2"),
        "numpy_p50_ms": by_name["numpy exact"]["p50_ms"], "faiss_p50_ms": faiss_row["p50_ms"] if faiss_row else None,
        "p50_vs_numpy": headline.get("p50_vs_numpy"),
        "floor_p50_ms": by_name.get("postgres floor (no search)", {}).get("p50_ms"),
        "pg_build_s": info.get("pg_build_s"), "faiss_build_s": info.get("faiss_build_s"),
        "rows": info["rows"],
        "other_scales": {s: {k: (r["headline"] or {}).get(k) for k in ("p50_ms", "p99_ms", "recall1", "recall2")}
                         | {"checkpoints": r["checkpoints"], "adapters": r["adapters"],
                            "numpy_p50_ms": r["rows"][0]["p50_ms"]}
                         for s, r in results.items() if s != main_scale},
    }
    if skipped:
        out["skipped"] = "; ".join(skipped)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
