"""Which nearest-neighbour library should an in-process search engine use? Measured, not guessed.

The engine answers top-N inner product (L2-normalised vectors, 384 dims lite / 1,536 dims full) over level 1
(~6,700 checkpoints) and level 2 (adapters split by base-model family: ~40k, ~25k, ~10k at paper scale), with a
candidate pool N of 40-100. Each `--sizes` entry stands for one such set. Candidates:

  numpy-f32 / numpy-f16   exact: matrix @ vector + argpartition (the f16 row is numpy's own float16 matmul)
  faiss-hnsw-{flat,fp16,sq8}   IndexHNSWFlat / IndexHNSWSQ (QT_fp16, QT_8bit), METRIC_INNER_PRODUCT
  hnswlib-f32             hnswlib 'ip' space
  usearch-{f32,f16,i8}    usearch Index(metric='ip', dtype=...)

Data: clustered synthetic vectors as in real catalogues: `--clusters` unit Gaussian centres, each point = a random
centre + isotropic Gaussian noise of total norm `--spread` (per coordinate spread/sqrt(dim), so the geometry does
not change with the dimension: point-centre cosine ~ 1/sqrt(1+spread^2)), then L2-normalised. Queries are drawn
the same way from the same centres, independently of the points. Within a cluster the noise is isotropic, which
makes the exact top-10 a close race among near-equidistant neighbours: a hard (conservative) case for HNSW recall.

Per size and method the table gives:
  build_s    single-threaded build from float32 vectors (HNSW: M=`--m`, efConstruction=`--ef-construction`),
             wall clock; build_cpu the process CPU seconds of it (what an unloaded machine would take)
  MB         serialized bytes (what the pipeline would store in Postgres), in MB
  load_s     deserialize seconds from those bytes (what the engine does at start-up)
  rss_MB     resident memory added by deserializing (psutil RSS delta, after gc + malloc_trim)
  p50/p99    latency in microseconds of one query at a time, single thread, Python call included, at k=100 and
             k=40, for each search breadth in `--ef` (efSearch / ef / expansion_search). An ef below k is
             raised to k by hnswlib and usearch; faiss sizes its queue so too but explores less (lower recall@100):
             compare libraries at equal recall, not at equal ef
  cpu50@100, cpu99@100   p50/p99 of the thread's CPU time for the same k=100 calls: wall clock minus
             preemption by other processes (closer to what a machine of one's own would show)
  r10@40, r10@100, r100@100   recall of the top-10 (of a k=40 / k=100 search) and of the top-100 against exact
             float32 search over the same vectors
All methods, breadths and both k are timed query by query, interleaved in a fresh random order per query,
single-threaded (OMP/BLAS threads pinned to 1 before numpy/faiss load; faiss.omp_set_num_threads(1), hnswlib
num_threads=1, usearch threads=1), so load from other processes on a shared machine hits them alike: compare
ratios, not absolute numbers across runs. A method whose p50 over its first 50 timed queries exceeds `--give-up-ms`
is not timed further (its `n` column says on how many queries it was).

Then a scan of exact float32 search over growing sizes (interleaved) gives the size where it crosses
`--exact-budget-us` (300 us): below it, exact search needs no index; above, an ANN index starts to pay. Last, a
projection to `--project` (1M) vectors from the measured per-vector bytes, n log n build, exact latency linear in
n and HNSW latency growing as log n. Ends with one JSON line: {"bench": "ann_choice", "rows": [...]} where rows
are, per size and method, the smallest breadth reaching `--target-recall` recall@10 (or the broadest tried).

    python bench/ann_choice.py --sizes 6700,25000,40000 --dim 384 --queries 500 --k 100
    python bench/ann_choice.py --sizes 40000 --dim 1536
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and faiss load their thread pools: every method runs single-threaded

import argparse  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pickle  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib.metadata import version  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402

SMALL_K = 40
WARMUP = 20
GIVE_UP_AFTER = 50  # queries timed before a too-slow method is cut short

Search = Callable[[np.ndarray, int], np.ndarray]  # (query, k) -> ids, best first


# ---------------------------------------------------------------------------------------------------------- data

def clustered(rng: np.random.Generator, centres: np.ndarray, n: int, spread: float) -> np.ndarray:
    """n unit vectors: a random centre plus isotropic noise of expected norm `spread`, L2-normalised."""
    dim = centres.shape[1]
    picks = rng.integers(0, len(centres), n)
    x = centres[picks] + (spread / math.sqrt(dim)) * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(n: int, n_queries: int, dim: int, clusters: int, spread: float, seed: int
              ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, n, dim])
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return clustered(rng, centres, n, spread), clustered(rng, centres, n_queries, spread)


def exact_top(x: np.ndarray, queries: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """Ground truth: ids of the k largest inner products per query (float32), best first."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ x.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start:start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


# ------------------------------------------------------------------------------------------------------ methods

@dataclass
class Method:
    """One candidate: how to build it (single thread), serialize it to bytes, load it back, and search it."""

    name: str
    build: Callable[[np.ndarray], object]
    dump: Callable[[object], bytes]
    load: Callable[[bytes, int], object]
    searcher: Callable[[object, int | None], Search]  # (index, breadth) -> search function
    breadths: tuple[int | None, ...] = (None,)  # (None,) for exact search


def numpy_exact(dtype: type) -> Method:
    label = np.dtype(dtype).name.replace("float", "f")

    def searcher(m: np.ndarray, _ef: int | None) -> Search:
        def search(q: np.ndarray, k: int) -> np.ndarray:
            scores = m @ q.astype(dtype, copy=False)
            top = np.argpartition(scores, -k)[-k:]
            return top[np.argsort(scores[top])[::-1]]
        return search

    return Method(f"numpy-{label}", build=lambda x: np.ascontiguousarray(x, dtype=dtype),
                  dump=lambda m: m.tobytes(),
                  load=lambda blob, dim: np.frombuffer(blob, dtype=dtype).reshape(-1, dim).copy(),
                  searcher=searcher)


def faiss_hnsw(quantizer: str | None, m: int, ef_construction: int, breadths: tuple[int, ...]) -> Method:
    import faiss

    def build(x: np.ndarray):
        dim = x.shape[1]
        if quantizer is None:
            index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        else:
            qtype = {"fp16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}[quantizer]
            index = faiss.IndexHNSWSQ(dim, qtype, m, faiss.METRIC_INNER_PRODUCT)
            index.train(x)
        index.hnsw.efConstruction = ef_construction
        index.add(x)
        return index

    def searcher(index, ef: int | None) -> Search:
        params = faiss.SearchParametersHNSW(efSearch=int(ef))

        def search(q: np.ndarray, k: int) -> np.ndarray:
            return index.search(q[None], k, params=params)[1][0]
        return search

    return Method(f"faiss-hnsw-{quantizer or 'flat'}", build=build,
                  dump=lambda index: faiss.serialize_index(index).tobytes(),
                  load=lambda blob, dim: faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8)),
                  searcher=searcher, breadths=breadths)


def hnswlib_hnsw(m: int, ef_construction: int, breadths: tuple[int, ...]) -> Method:
    import hnswlib

    def build(x: np.ndarray):
        index = hnswlib.Index(space="ip", dim=x.shape[1])
        index.init_index(max_elements=len(x), ef_construction=ef_construction, M=m, random_seed=100)
        index.set_num_threads(1)
        index.add_items(x, np.arange(len(x)), num_threads=1)
        return index

    def load(blob: bytes, _dim: int):
        index = pickle.loads(blob)  # hnswlib pickles the whole index (graph + vectors)
        index.set_num_threads(1)
        return index

    def searcher(index, ef: int | None) -> Search:
        def search(q: np.ndarray, k: int) -> np.ndarray:
            index.set_ef(ef)  # breadths share one index; set_ef only stores the number
            return index.knn_query(q, k=k, num_threads=1)[0][0]
        return search

    return Method("hnswlib-f32", build=build, dump=lambda index: pickle.dumps(index, protocol=5), load=load,
                  searcher=searcher, breadths=breadths)


def usearch_hnsw(dtype: str, m: int, ef_construction: int, breadths: tuple[int, ...]) -> Method:
    from usearch.index import Index

    def build(x: np.ndarray):
        index = Index(ndim=x.shape[1], metric="ip", dtype=dtype, connectivity=m, expansion_add=ef_construction)
        index.add(np.arange(len(x)), x, threads=1)
        return index

    def searcher(index, ef: int | None) -> Search:
        def search(q: np.ndarray, k: int) -> np.ndarray:
            index.expansion_search = ef  # breadths share one index; the setter only stores the number
            return index.search(q, k, threads=1).keys
        return search

    return Method(f"usearch-{dtype}", build=build, dump=lambda index: bytes(index.save()),
                  load=lambda blob, _dim: Index.restore(blob),  # copies into memory (view=False)
                  searcher=searcher, breadths=breadths)


def all_methods(m: int, ef_construction: int, breadths: tuple[int, ...]) -> list[Method]:
    import faiss
    faiss.omp_set_num_threads(1)
    return [numpy_exact(np.float32), numpy_exact(np.float16),
            faiss_hnsw(None, m, ef_construction, breadths), faiss_hnsw("fp16", m, ef_construction, breadths),
            faiss_hnsw("sq8", m, ef_construction, breadths),
            hnswlib_hnsw(m, ef_construction, breadths),
            usearch_hnsw("f32", m, ef_construction, breadths), usearch_hnsw("f16", m, ef_construction, breadths),
            usearch_hnsw("i8", m, ef_construction, breadths)]


# -------------------------------------------------------------------------------------------------- measuring

def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_bytes() -> int:
    gc.collect()
    _malloc_trim()
    return psutil.Process().memory_info().rss


@dataclass
class Variant:
    """One (method, breadth) row being timed."""

    method: str
    breadth: int | None
    search: Search
    done: bool = False
    times_us: dict[int, list[float]] = field(default_factory=dict)
    cpu_us: dict[int, list[float]] = field(default_factory=dict)  # thread CPU time: wall minus preemption
    recall10: dict[int, list[float]] = field(default_factory=dict)
    recall_k: list[float] = field(default_factory=list)


@dataclass
class Loaded:
    method: Method
    index: object
    build_s: float
    build_cpu_s: float
    nbytes: int
    load_s: float
    rss_mb: float


def build_and_load(method: Method, x: np.ndarray) -> Loaded:
    """Build from float32 (timed), serialize, drop the built index, deserialize from bytes (timed, RSS delta)."""
    t0, c0 = time.perf_counter(), time.process_time()
    built = method.build(x)
    build_s, build_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    blob = method.dump(built)
    del built
    before = rss_bytes()
    t0 = time.perf_counter()
    index = method.load(blob, x.shape[1])
    load_s = time.perf_counter() - t0
    rss_mb = (rss_bytes() - before) / 2**20
    return Loaded(method, index, build_s, build_cpu_s, len(blob), load_s, rss_mb)


def overlap(found: np.ndarray, truth: np.ndarray) -> float:
    return len(set(found.tolist()) & set(truth.tolist())) / len(truth)


def time_variants(variants: list[Variant], queries: np.ndarray, truth: np.ndarray, ks: tuple[int, ...],
                  give_up_ms: float, seed: int) -> None:
    """One query at a time, every (variant, k) call of a query in a fresh random order (so no variant always runs
    right after the cache-flushing exact scans); recall is scored outside the timed call."""
    for v in variants:
        v.times_us = {k: [] for k in ks}
        v.cpu_us = {k: [] for k in ks}
        v.recall10 = {k: [] for k in ks}
        for q in queries[:WARMUP]:
            for k in ks:
                v.search(q, k)
    rng = np.random.default_rng(seed)
    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    for i, q in enumerate(queries):
        calls = [(v, k) for v in variants if not v.done for k in ks]
        for j in rng.permutation(len(calls)):
            v, k = calls[j]
            c0, t0 = cpu(), wall()
            ids = v.search(q, k)
            t1, c1 = wall(), cpu()
            v.times_us[k].append((t1 - t0) / 1e3)
            v.cpu_us[k].append((c1 - c0) / 1e3)
            v.recall10[k].append(overlap(ids[:10], truth[i, :10]))
            if k == ks[0]:
                v.recall_k.append(overlap(ids, truth[i, :k]))
        for v in variants:
            if len(v.times_us[ks[0]]) == GIVE_UP_AFTER and np.median(v.times_us[ks[0]]) > give_up_ms * 1e3:
                v.done = True


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure_size(n: int, args: argparse.Namespace, methods: list[Method]) -> list[dict]:
    x, queries = make_data(n, args.queries, args.dim, args.clusters, args.spread, args.seed)
    truth = exact_top(x, queries, args.k)
    loaded = []
    for method in methods:
        loaded.append(build_and_load(method, x))
        print(f"  built {method.name} ({n:,} x {args.dim}) in {loaded[-1].build_s:.2f}s "
              f"({loaded[-1].build_cpu_s:.2f}s CPU)", flush=True)
    variants, owner = [], {}
    for entry in loaded:
        for breadth in entry.method.breadths:
            variant = Variant(entry.method.name, breadth, entry.method.searcher(entry.index, breadth))
            variants.append(variant)
            owner[id(variant)] = entry
    ks = (args.k, SMALL_K)
    time_variants(variants, queries, truth, ks, args.give_up_ms, args.seed + n)
    rows = []
    for v in variants:
        entry = owner[id(v)]
        rows.append({
            "size": n, "dim": args.dim, "method": v.method, "ef": v.breadth,
            "build_s": round(entry.build_s, 3), "build_cpu_s": round(entry.build_cpu_s, 3), "bytes": entry.nbytes,
            "load_s": round(entry.load_s, 4),
            "rss_mb": round(entry.rss_mb, 1), "n": len(v.times_us[args.k]),
            "p50_us_k100": round(pct(v.times_us[args.k], 50), 1), "p99_us_k100": round(pct(v.times_us[args.k], 99), 1),
            "p50_us_k40": round(pct(v.times_us[SMALL_K], 50), 1), "p99_us_k40": round(pct(v.times_us[SMALL_K], 99), 1),
            "cpu_p50_us_k100": round(pct(v.cpu_us[args.k], 50), 1),
            "cpu_p99_us_k100": round(pct(v.cpu_us[args.k], 99), 1),
            "recall10_k40": round(float(np.mean(v.recall10[SMALL_K])), 4),
            "recall10_k100": round(float(np.mean(v.recall10[args.k])), 4),
            "recall100_k100": round(float(np.mean(v.recall_k)), 4),
        })
    del loaded, variants
    gc.collect()
    return rows


def exact_crossing(dim: int, budget_us: float, args: argparse.Namespace
                   ) -> tuple[int | None, list[tuple[int, float]]]:
    """p50 of exact float32 numpy search (k = args.k) over doubling sizes, interleaved in a random order per query;
    the size where it crosses budget_us, interpolated linearly between the two sizes around it (the smallest size
    if it is already over budget; None if even the largest is within it)."""
    sizes = [125 * 2**i for i in range(12)]
    rng = np.random.default_rng([args.seed, dim, 7])
    centres = rng.standard_normal((args.clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sizes = [s for s in sizes if s >= args.k and s * dim * 4 <= 256 * 2**20]  # 384 dims: up to 128k
    matrices = [clustered(rng, centres, s, args.spread) for s in sizes]
    queries = clustered(rng, centres, 200, args.spread)
    search = numpy_exact(np.float32).searcher
    searches = [search(m, None) for m in matrices]
    times: list[list[float]] = [[] for _ in sizes]
    for q in queries:
        for j in rng.permutation(len(sizes)):
            t0 = time.perf_counter_ns()
            searches[j](q, args.k)
            times[j].append((time.perf_counter_ns() - t0) / 1e3)
    p50 = [(s, float(np.median(t))) for s, t in zip(sizes, times)]
    for (s0, t0), (s1, t1) in zip(p50, p50[1:]):
        if t0 <= budget_us < t1:
            return int(s0 + (budget_us - t0) * (s1 - s0) / (t1 - t0)), p50
    return (sizes[0] if p50[0][1] > budget_us else None), p50


# --------------------------------------------------------------------------------------------------- reporting

COLUMNS = [  # (header, row key, width, format spec); negative width: left-aligned
    ("size", "size", 7, ","), ("dim", "dim", 5, ""), ("method", "method", -17, ""), ("ef", "ef", 4, ""),
    ("build_s", "build_s", 8, ".1f"), ("build_cpu", "build_cpu_s", 9, ".1f"), ("MB", "mb", 7, ".1f"),
    ("load_s", "load_s", 7, ".3f"),
    ("rss_MB", "rss_mb", 7, ".1f"), ("n", "n", 4, ""),
    ("p50@100", "p50_us_k100", 8, ".0f"), ("p99@100", "p99_us_k100", 8, ".0f"),
    ("p50@40", "p50_us_k40", 7, ".0f"), ("p99@40", "p99_us_k40", 7, ".0f"),
    ("cpu50@100", "cpu_p50_us_k100", 9, ".0f"), ("cpu99@100", "cpu_p99_us_k100", 9, ".0f"),
    ("r10@40", "recall10_k40", 7, ".4f"), ("r10@100", "recall10_k100", 7, ".4f"),
    ("r100@100", "recall100_k100", 8, ".4f")]


def print_table(rows: list[dict]) -> None:
    def cell(text: str, width: int) -> str:
        return text.ljust(-width) if width < 0 else text.rjust(width)

    header = " ".join(cell(name, width) for name, _, width, _ in COLUMNS)
    print(header)
    print("-" * len(header))
    last = None
    for row in rows:
        if last is not None and row["size"] != last:
            print()
        values = dict(row, mb=row["bytes"] / 2**20, ef="-" if row["ef"] is None else row["ef"])
        print(" ".join(cell(format(values[key], spec if not isinstance(values[key], str) else ""), width)
                       for _, key, width, spec in COLUMNS))
        last = row["size"]


def headline(rows: list[dict], target: float) -> list[dict]:
    """Per size and method: the smallest breadth whose recall@10 (both k) reaches target, else the broadest."""
    out = []
    for key in dict.fromkeys((r["size"], r["method"]) for r in rows):
        group = [r for r in rows if (r["size"], r["method"]) == key]
        good = [r for r in group if min(r["recall10_k40"], r["recall10_k100"]) >= target]
        out.append(good[0] if good else group[-1])
    return out


def projection(rows: list[dict], target_n: int) -> list[str]:
    """Extrapolate each method's headline row from the largest measured size to target_n vectors: memory from
    bytes per vector, build as n log n, exact latency linear in n, HNSW latency as log n (graph depth; optimistic:
    caches miss more as the graph grows, so read it as a floor)."""
    lines = []
    for method in dict.fromkeys(r["method"] for r in rows):
        big = max((r for r in rows if r["method"] == method), key=lambda r: r["size"])
        scale = target_n / big["size"]
        memory_mb = big["bytes"] / big["size"] * target_n / 2**20
        build_s = big["build_cpu_s"] * scale * math.log(target_n) / math.log(big["size"])
        if big["ef"] is None:
            p50 = big["p50_us_k100"] * scale
        else:
            p50 = big["p50_us_k100"] * math.log(target_n) / math.log(big["size"])
        ef = "-" if big["ef"] is None else big["ef"]
        lines.append(f"  {method:<17} ef={ef:>4}: memory {memory_mb:8.0f} MB, build {build_s:8.0f} CPU s "
                     f"single-thread, p50 at k=100 ~{p50:9.0f} us")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="6700,25000,40000", help="comma-separated set sizes")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=100, help="the large candidate pool (the small one is 40)")
    parser.add_argument("--ef", default="40,100,200", help="search breadths (efSearch / ef / expansion_search)")
    parser.add_argument("--m", type=int, default=16, help="HNSW M / connectivity")
    parser.add_argument("--ef-construction", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--spread", type=float, default=1.0, help="noise norm relative to the unit cluster centre")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-recall", type=float, default=0.99)
    parser.add_argument("--give-up-ms", type=float, default=25.0, help="p50 beyond which a method is cut short")
    parser.add_argument("--exact-budget-us", type=float, default=300.0)
    parser.add_argument("--project", type=int, default=1_000_000)
    parser.add_argument("--no-scan", action="store_true", help="skip the exact-search crossing scan")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    breadths = tuple(int(e) for e in args.ef.split(","))

    versions = ", ".join(f"{p} {version(p)}" for p in ("numpy", "faiss-cpu", "hnswlib", "usearch"))
    print(f"ann_choice: {platform.machine()}, {psutil.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; {versions}; "
          f"M={args.m} efConstruction={args.ef_construction}; {args.clusters} clusters, spread {args.spread}; "
          f"{args.queries} queries", flush=True)
    methods = all_methods(args.m, args.ef_construction, breadths)
    rows = []
    for n in sizes:
        rows += measure_size(n, args, methods)
    print()
    print("times in microseconds, one query at a time, single thread (p50/p99: wall clock; cpu50/cpu99: thread "
          "CPU time, i.e. without preemption);\nrecall against exact float32; ef: search breadth (ef < k: see the "
          "docstring)")
    print_table(rows)
    best = headline(rows, args.target_recall)
    if not args.no_scan:
        crossing, p50 = exact_crossing(args.dim, args.exact_budget_us, args)
        print(f"\nexact float32 numpy p50 (k={args.k}, dim {args.dim}): "
              + ", ".join(f"{s:,}: {t:.0f} us" for s, t in p50))
        if crossing is None:
            where = f"more than {p50[-1][0]:,} vectors (not crossed)"
        elif p50[0][1] > args.exact_budget_us:
            where = f"fewer than {crossing:,} vectors (already over at the smallest size)"
        else:
            where = f"~{crossing:,} vectors"
        print(f"exact float32 crosses {args.exact_budget_us:.0f} us per query at {where} (dim {args.dim})")
    else:
        crossing = None
    print(f"\nprojection to {args.project:,} vectors (headline rows: smallest ef with recall@10 >= "
          f"{args.target_recall}):")
    for line in projection(best, args.project):
        print(line)
    print(json.dumps({"bench": "ann_choice", "dim": args.dim, "m": args.m, "ef_construction": args.ef_construction,
                      "exact_f32_crossing_size": crossing, "exact_budget_us": args.exact_budget_us, "rows": best}))


if __name__ == "__main__":
    main()
