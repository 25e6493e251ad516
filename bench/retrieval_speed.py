"""Retrieval benchmark: the in-memory search engine against pgvector SQL, exact numpy search and FAISS HNSW.

Builds synthetic clustered zoos (testkit/synthetic_zoo.py) at the real dump's size and at paper scale in a fresh
database (embedded server, or a new database on DATABASE_URL's server), refreshes the catalogue's statistics as the
refresh does, builds the partial HNSW indexes (timed), then builds, stores and loads the search index the way
production does (`refresh_serving_policy`, `build_search_index` + `store_search_index`, then `load_search_index` +
`SearchEngine`), and times the two-level query (level 1: checkpoints; level 2: adapters of the top checkpoint's
base-model family) with query vectors given directly. Recall@10 of each level is scored against exact search over the same vectors with the
same restrictions (level 2: the family of the checkpoint that method chose). The synthetic texts hold
Zipf-distributed words and each query carries eight such words, so the lexical part (BM25 scoring, candidates
holding the rarest words) does its real work; the weights are pure similarity, so recall against exact search is
meaningful.

Rows, interleaved query by query (rotating order), single-threaded (BLAS/OpenMP pinned to 1 thread):
  numpy exact                      matrix product + argpartition, one matrix per restriction (the truth)
  pgvector sql ef=..               plain similarity-only SQL on the partial HNSW indexes: per level one
                                   SELECT ... ORDER BY emb <#> q LIMIT k (level 2 on the family's own index)
  faiss hnsw M=.. ef=..            FAISS HNSW-Flat per restriction, in this process
  engine (vector given)            SearchEngine.checkpoints + .adapters (ANN graphs, pools, BM25, hits)
  engine exact nearest (no graphs) the same engine over the same index with its graphs left out
  engine search() 3+10+negatives   SearchEngine.search as the Retriever calls it (timed whole; not scored)
  engine end-to-end onnx / torch   the product's query encoder (embedding.presets.build_query_encoders, lite:
                                   MiniLM on ONNX Runtime, ORT's default threads; and the torch MiniLM) encodes a
                                   prompt-like text (30-70 words: phrases + the query's words), then both levels with
                                   that vector; recall not meaningful (the zoo's vectors are unrelated to text)
  engine end-to-end onnx 1 thread  the same with ORT's intra-op pool at 1 thread (its idle threads spin after a
                                   run, on the cores the search then needs)
Then, for the engine: throughput with 1, 2 and 8 threads (a ThreadPoolExecutor running both levels for
--qps-seconds), a cProfile of its query (where the time goes), build/store/load seconds, memory (array and graph
bytes; RSS of a fresh serving-like process loading the index from Postgres, with and without the query encoder),
a projection of memory to 1M versions, and PASS/FAIL against its targets. Prints one table per scale; ends with
one JSON line (main scale: paper when run).

    python bench/retrieval_speed.py [--scales real,paper] [--queries 200] [--ef 40,100,200] [--dimension 384]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import hashlib
import json
import math
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Self

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOP_K = 10
QUERY_WORDS = 8
SCALES = ("real", "paper")
DEFAULT_EF = 100  # the ef_search whose SQL and FAISS rows the JSON line names (the engine's efSearch)
QPS_THREADS = (1, 2, 8)
PROJECT_ROWS = 1_000_000
# Targets for the engine at paper scale (query vector given).
TARGET_P50_MS, TARGET_P99_MS, TARGET_RECALL, TARGET_QPS, TARGET_LOAD_S, TARGET_MB = 2.0, 10.0, 0.99, 500, 3.0, 600
# Prompt-like texts for the end-to-end rows (the words of real prompts: subjects, styles, details).
_SUBJECTS = ("a knight", "an old fisherman", "a red fox", "a cyberpunk girl", "a gothic cathedral", "a tiny island",
             "a samurai", "a witch's cottage", "a steam locomotive", "a koi pond", "a desert caravan", "a robot chef")
_STYLES = ("oil painting", "watercolor", "anime screencap", "35mm film photo", "isometric render", "ink wash",
           "studio portrait", "concept art", "pixel art", "charcoal sketch", "octane render", "ukiyo-e print")
_DETAILS = ("volumetric fog", "rim lighting", "bokeh", "intricate details", "soft pastel colors", "golden hour",
            "dramatic shadows", "8k uhd", "film grain", "highly detailed skin", "depth of field", "rain reflections",
            "masterpiece", "best quality", "ultra detailed", "sharp focus", "cinematic lighting", "wide shot")


@dataclass
class Method:
    """One row of the table: level 1 (checkpoint ids) then level 2 (adapter ids) in the family `family_of` picks."""

    name: str
    level1: Callable[[np.ndarray], list[int]]
    level2: Callable[[np.ndarray, str], list[int]]
    family_of: Callable[[list[int]], str | None]
    scored: bool = True  # False: a timing reference (no answers, or answers to another vector)
    latencies_ms: list[float] = field(default_factory=list)
    level1_ms: list[float] = field(default_factory=list)
    level2_ms: list[float] = field(default_factory=list)
    recall1: list[float] = field(default_factory=list)
    recall2: list[float] = field(default_factory=list)
    short_level2: int = 0  # queries where level 2 returned fewer than TOP_K adapters
    extra_ms: dict[str, list[float]] = field(default_factory=dict)  # parts timed inside a level (encoding)

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
        recall1 = round(float(np.mean(self.recall1)), 4) if self.scored else None
        recall2 = round(float(np.mean(self.recall2)), 4) if self.scored else None
        row = {
            "name": self.name, "p50_ms": round(p50, 3), "p99_ms": round(float(np.percentile(self.latencies_ms, 99)), 3),
            "level1_p50_ms": round(float(np.percentile(self.level1_ms, 50)), 3),
            "level2_p50_ms": round(float(np.percentile(self.level2_ms, 50)), 3),
            "recall1": recall1, "recall2": recall2,
            "recall_at_10": min(recall1, recall2) if self.scored else None,
            "short_level2": self.short_level2, "p50_vs_numpy": round(p50 / baseline_p50, 2),
        }
        for part, samples in self.extra_ms.items():
            row[f"{part}_p50_ms"] = round(float(np.percentile(samples, 50)), 3)
        return row


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


def _vector_rng(q: np.ndarray, salt: int = 0) -> np.random.Generator:
    seed = int.from_bytes(hashlib.blake2b(q.tobytes(), digest_size=8).digest(), "little")
    return np.random.default_rng(seed + salt)


def query_words(q: np.ndarray) -> str:
    """The words a query vector stands for: drawn like the zoo's texts, seeded by the vector (so each method gets
    the same words for the same query)."""
    from testkit.synthetic_zoo import synthetic_words

    return synthetic_words(_vector_rng(q), QUERY_WORDS)


def prompt_text(q: np.ndarray) -> str:
    """A prompt-like text for the end-to-end rows (seeded by the vector): 30-70 words of subjects, styles and
    details, then the query's Zipf words (so the lexical part finds the same work as in the other engine rows)."""
    rng = _vector_rng(q, salt=7)
    phrases = [str(rng.choice(_SUBJECTS)), str(rng.choice(_STYLES))]
    phrases += [str(rng.choice(_DETAILS + _STYLES)) for _ in range(int(rng.integers(10, 25)))]
    return ", ".join(phrases) + ", " + query_words(q)


# ---- SQL rows ---------------------------------------------------------------------------------------------------

class PlainSql:
    """The obvious SQL alternative that stays: similarity only, per level one SELECT ... ORDER BY emb <#> q LIMIT k
    on the partial HNSW indexes db.vectors.ensure_hnsw_indexes builds (level 1: the space's checkpoint index;
    level 2: the chosen family's own index, its checkpoints dropped after the walk, as the family index holds every
    role). One autocommit psycopg connection per ef_search (set once), the vector sent in binary."""

    def __init__(self, engine, space: str, dimension: int, ef: int) -> None:
        import psycopg
        from pgvector.psycopg import register_vector

        from db.vectors import sql_literal

        self.space, self.dimension, self.ef = space, dimension, ef
        url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn = psycopg.connect(url, autocommit=True)
        register_vector(self.conn)
        self.conn.execute(f"SET hnsw.ef_search = {int(ef)}")
        self._literal = sql_literal
        distance = f"emb::vector({dimension}) <#> CAST(%s AS vector({dimension}))"
        self.level1_sql = (f"SELECT version_id, base_model_family FROM embeddings WHERE space = {sql_literal(space)} "
                           f"AND role = 'checkpoint' ORDER BY {distance} LIMIT {TOP_K}")
        self._distance = distance
        self._level2_sql: dict[str, str] = {}

    def level2_sql(self, family: str) -> str:
        if family not in self._level2_sql:  # constants, so the planner matches the family index's predicate
            self._level2_sql[family] = (
                f"SELECT version_id FROM embeddings WHERE space = {self._literal(self.space)} "
                f"AND base_model_family = {self._literal(family)} AND role <> 'checkpoint' "
                f"ORDER BY {self._distance} LIMIT {TOP_K}")
        return self._level2_sql[family]

    def method(self) -> Method:
        last: dict = {}

        def level1(q: np.ndarray) -> list[int]:
            rows = self.conn.execute(self.level1_sql, (q,)).fetchall()
            last["family"] = rows[0][1] if rows else None
            return [row[0] for row in rows]

        def level2(q: np.ndarray, family: str) -> list[int]:
            return [row[0] for row in self.conn.execute(self.level2_sql(family), (q,)).fetchall()]

        return Method(f"pgvector sql ef={self.ef}", level1, level2, lambda checkpoints: last["family"])

    def index_check(self, q: np.ndarray) -> dict[str, bool]:
        """Whether each level's plan walks its partial HNSW index (and not a sequential scan)."""
        from db.vectors import FAMILY, hnsw_index_name

        family = self.conn.execute(self.level1_sql, (q,)).fetchone()[1]
        used = {}
        for role, name, sql in (("checkpoint", hnsw_index_name(self.space, "checkpoint"), self.level1_sql),
                                ("adapter", hnsw_index_name(self.space, FAMILY, family), self.level2_sql(family))):
            plan = "\n".join(row[0] for row in self.conn.execute("EXPLAIN " + sql, (q,)).fetchall())
            used[role] = name in plan
        return used

    def close(self) -> None:
        self.conn.close()


# ---- the engine -------------------------------------------------------------------------------------------------

def similarity_only():
    """Engine weights that leave only similarity in the score (BM25 and the candidate sources still run)."""
    from serving.search.scoring import Weights

    return Weights(checkpoint_popularity=0, adapter_popularity=0, co_usage=0, checkpoint_lexical=0,
                   adapter_lexical=0)


def engine_method(search_engine, name: str) -> Method:
    """SearchEngine.checkpoints then .adapters for the first checkpoint, query vector given, with the query's
    words."""
    last: dict = {}

    def level1(q: np.ndarray) -> list[int]:
        hits = search_engine.checkpoints(q, TOP_K, words=query_words(q))
        last["hit"] = hits[0] if hits else None
        return [hit.version_id for hit in hits]

    def level2(q: np.ndarray, family: str) -> list[int]:
        return [hit.version_id for hit in search_engine.adapters(q, last["hit"], TOP_K, words=query_words(q))]

    return Method(name, level1, level2, lambda checkpoints: last["hit"].base_model_family)


def search_method(search_engine, name: str) -> Method:
    """SearchEngine.search as the Retriever calls it (3 checkpoints, 10 adapters for the first, its negative
    embeddings), vector given, timed whole as level 1; not scored (3 checkpoints cannot score recall@10)."""
    last: dict = {}

    def level1(q: np.ndarray) -> list[int]:
        result = search_engine.search(q, query_words(q), top_k=TOP_K, top_checkpoints=3)
        last["hit"] = result.checkpoints[0] if result.checkpoints else None
        return [hit.version_id for hit in result.checkpoints]

    def level2(q: np.ndarray, family: str) -> list[int]:
        return []

    return Method(name, level1, level2, lambda checkpoints: last["hit"].base_model_family, scored=False)


def end_to_end_method(search_engine, query_vector: Callable[[str], np.ndarray], name: str) -> Method:
    """Encode the query's prompt-like text (timed inside level 1, also reported alone as encode_p50_ms), then both
    levels with the encoded vector and the text as words. Not scored: the zoo's vectors are unrelated to text."""
    last: dict = {}
    encode_ms: list[float] = []

    def level1(q: np.ndarray) -> list[int]:
        text = prompt_text(q)
        t0 = time.perf_counter()
        vector = query_vector(text)
        encode_ms.append((time.perf_counter() - t0) * 1e3)
        hits = search_engine.checkpoints(vector, TOP_K, words=text)
        last.update(hit=hits[0] if hits else None, vector=vector, text=text)
        return [hit.version_id for hit in hits]

    def level2(q: np.ndarray, family: str) -> list[int]:
        return [hit.version_id for hit in search_engine.adapters(last["vector"], last["hit"], TOP_K,
                                                                 words=last["text"])]

    method = Method(name, level1, level2, lambda checkpoints: last["hit"].base_model_family, scored=False)
    method.extra_ms["encode"] = encode_ms
    return method


def lite_model_choice(models_dir: Path):
    """The lite preset's models (card-text describer, MiniLM, no image encoder), weights cached in `models_dir`."""
    from config import Settings
    from embedding.presets import ModelChoice

    settings = Settings.from_env({"ZOO_HOME": str(models_dir.parent), "ZOO_PRESET": "lite"})
    return replace(ModelChoice.from_settings(settings), cache_dir=str(models_dir))


def build_and_store(engine, space: str, dimension: int, describer) -> dict:
    """What the retrieval_index asset pays: the serving policy (content levels and roles, when this checkout has
    it), then build_search_index with the default serving limits (the graph builds timed apart by wrapping
    embedding.search_index.build_graph) and store_search_index, in one transaction."""
    import embedding.search_index as search_index_module

    policy_s = None
    try:
        from embedding.serving_policy import refresh_serving_policy
    except ImportError:
        refresh_serving_policy = None
    if refresh_serving_policy is not None:
        with engine.begin() as conn:
            started = time.perf_counter()
            refresh_serving_policy(conn, describer)
            policy_s = round(time.perf_counter() - started, 2)
    graph_s: list[float] = []
    original = search_index_module.build_graph

    def timed_build_graph(vectors: np.ndarray) -> bytes:
        started = time.perf_counter()
        try:
            return original(vectors)
        finally:
            graph_s.append(time.perf_counter() - started)

    search_index_module.build_graph = timed_build_graph
    try:
        with engine.begin() as conn:
            started = time.perf_counter()
            index = search_index_module.build_search_index(conn, space, dimension, describer)
            build_s = time.perf_counter() - started
            started = time.perf_counter()
            generation = search_index_module.store_search_index(conn, index)
            store_s = time.perf_counter() - started
    finally:
        search_index_module.build_graph = original
    return {"policy_s": policy_s, "build_s": round(build_s, 2), "graph_build_s": round(sum(graph_s), 2),
            "graphs": len(graph_s), "store_s": round(store_s, 2), "generation": generation, "rows": len(index),
            "format": index.settings.get("format")}


def deep_size(value, seen: set[int]) -> int:
    """Bytes of a Python object and what it holds (lists, dicts, strings), each object counted once."""
    if id(value) in seen:
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        size += sum(deep_size(v, seen) for v in value)
    return size


def index_bytes(index) -> dict:
    """The engine's memory by part: per-version arrays (vectors apart), postings, co-usage links, ANN graphs
    (serialised bytes, which the index keeps after NearestNeighbours deserialises them) and Python objects
    (details, lexemes, the row and term lookups)."""
    arrays = index.arrays
    posting = {"term_start", "posting_rows", "posting_tf"}
    links = {name for name in arrays if name.startswith("link_")}
    seen: set[int] = set()
    python = {"details": deep_size(index.details, seen), "lexemes": deep_size(index.lexemes, seen),
              "row_of": deep_size(index.row_of, seen), "term_of": deep_size(index.term_of, seen)}
    graph_rows = sum(rows.stop - rows.start for role, family, rows in index.segments()
                     if f"{role}:{family}" in index.graphs)
    return {
        "rows": len(index), "dimension": int(index.vectors.shape[1]), "graph_rows": graph_rows,
        "vectors": int(index.vectors.nbytes),
        "per_version": sum(int(a.nbytes) for n, a in arrays.items() if n not in posting | links | {"vectors"}),
        "postings": sum(int(arrays[n].nbytes) for n in posting), "postings_count": len(arrays["posting_rows"]),
        "terms": len(index.lexemes),
        "links": sum(int(arrays[n].nbytes) for n in links),
        "graphs": sum(len(blob) for blob in index.graphs.values()),
        "python": python,
    }


def sq8_graph_bytes(index) -> tuple[int, int, int]:
    """(fp16 graph bytes as stored, sq8 graph bytes built now with the same M and efConstruction, rows) over the
    checkpoint slices that have graphs: the measured price of 8-bit codes against fp16 ones."""
    import faiss

    from embedding.ann import EF_CONSTRUCTION, M

    fp16 = sq8 = rows_total = 0
    for role, family, rows in index.segments():
        key = f"{role}:{family}"
        if role != "checkpoint" or key not in index.graphs:
            continue
        vectors = np.ascontiguousarray(index.vectors[rows], dtype=np.float32)
        graph = faiss.IndexHNSWSQ(vectors.shape[1], faiss.ScalarQuantizer.QT_8bit, M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = EF_CONSTRUCTION
        graph.train(vectors)
        graph.add(vectors)
        sq8 += len(faiss.serialize_index(graph))
        fp16 += len(index.graphs[key])
        rows_total += len(vectors)
    return fp16, sq8, rows_total


def projection(parts: dict, rss_mb: float | None, sq8: tuple[int, int, int] | None,
               numpy_p50_ms: float) -> tuple[list[dict], list[str]]:
    """Memory at PROJECT_ROWS versions per choice of index and precision, extrapolated linearly from the bytes per
    row measured at this scale (postings per row as in the synthetic texts: ~170 Zipf words each)."""
    rows, dim = parts["rows"], parts["dimension"]
    fp16_graph_row = parts["graphs"] / parts["graph_rows"] if parts["graph_rows"] else 0.0
    if sq8 and sq8[2]:
        sq8_graph_row = fp16_graph_row - (sq8[0] - sq8[1]) / sq8[2]
        sq8_note = "measured on the checkpoint slices"
    else:
        sq8_graph_row = fp16_graph_row - dim  # one byte per dimension less than fp16
        sq8_note = "from the format"
    rest_row = (parts["per_version"] + parts["postings"] + parts["links"] + sum(parts["python"].values())) / rows
    graphed = PROJECT_ROWS  # at 1M versions every (role, family) slice is far above embedding.ann.MIN_ROWS
    mb = 2 ** 20
    choices = [
        ("f32 matrix + fp16 HNSW, blob kept (today)", 4 * dim, fp16_graph_row, 2),
        ("f32 matrix + fp16 HNSW (blob freed)", 4 * dim, fp16_graph_row, 1),
        ("fp16 matrix + fp16 HNSW", 2 * dim, fp16_graph_row, 1),
        ("fp16 matrix + sq8 HNSW", 2 * dim, sq8_graph_row, 1),
        ("f32 matrix + sq8 HNSW", 4 * dim, sq8_graph_row, 1),
        ("exact only, f32 matrix", 4 * dim, 0.0, 0),
        ("exact only, fp16 matrix", 2 * dim, 0.0, 0),
    ]
    out = []
    for name, matrix_row, graph_row, copies in choices:
        matrix = matrix_row * PROJECT_ROWS / mb
        graph = graph_row * graphed * copies / mb
        rest = rest_row * PROJECT_ROWS / mb
        out.append({"choice": name, "matrix_mb": round(matrix), "graph_mb": round(graph), "rest_mb": round(rest),
                    "total_mb": round(matrix + graph + rest)})
    exact_ms = numpy_p50_ms * PROJECT_ROWS / rows
    python_row = sum(parts["python"].values()) / rows
    notes = [
        (f"measured per row at {rows:,} versions: vectors {4 * dim} B (f32), fp16 graph {fp16_graph_row:.0f} B, "
         f"sq8 graph {sq8_graph_row:.0f} B ({sq8_note}), other arrays + postings + links "
         f"{(parts['per_version'] + parts['postings'] + parts['links']) / rows:.0f} B "
         f"({parts['postings_count'] / rows:.0f} postings per row), Python objects {python_row:.0f} B (details "
         f"{parts['python']['details'] / rows:.0f} B: synthetic names and no descriptions, so real ones are larger)"),
        ("every choice assumes each (role, family) slice has a graph at 1M; 'blob kept' counts each graph twice, as "
         "today: SearchIndex.graphs keeps the serialised bytes after NearestNeighbours deserialised them"),
        (f"exact-only search scans the slice: the numpy exact row's {numpy_p50_ms:.2f} ms per two-level query would "
         f"be ~{exact_ms:.0f} ms at {PROJECT_ROWS:,} versions (linear; same share of rows scanned)"),
    ]
    if rss_mb is not None:
        counted = (parts["vectors"] + parts["per_version"] + parts["postings"] + parts["links"]
                   + 2 * parts["graphs"]) / mb + python_row * rows / mb
        notes.append(f"check at this scale: the fresh process's engine RSS {rss_mb:.0f} MB against {counted:.0f} MB "
                     f"counted (arrays + graphs twice + Python objects)")
    return out, notes


# ---- threads, profile, fresh-process load -------------------------------------------------------------------------

def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def measure_qps(search_engine, queries: np.ndarray, threads: int, seconds: float) -> dict:
    """Both levels (vector given, with words) from `threads` threads for `seconds`: queries/s, the process's CPU
    cores busy meanwhile (1.0 = one core: the GIL), and per-query latency under that load."""
    words = [query_words(q) for q in queries]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    deadline = math.inf  # set when every worker is ready
    barrier = threading.Barrier(threads + 1)

    def worker(i: int) -> int:
        done, j, mine = 0, i, latencies[i]
        barrier.wait()
        while time.perf_counter() < deadline:
            q, w = queries[j % len(queries)], words[j % len(queries)]
            t0 = time.perf_counter()
            hits = search_engine.checkpoints(q, TOP_K, words=w)
            search_engine.adapters(q, hits[0] if hits else None, TOP_K, words=w)
            mine.append((time.perf_counter() - t0) * 1e3)
            done, j = done + 1, j + threads
        return done

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(worker, i) for i in range(threads)]
        deadline = time.perf_counter() + seconds
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        barrier.wait()
        total = sum(f.result() for f in futures)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    flat = [x for part in latencies for x in part]
    return {"threads": threads, "qps": round(total / wall, 1), "queries": total, "cpu_cores": round(cpu / wall, 2),
            "p50_ms": round(float(np.percentile(flat, 50)), 3), "p99_ms": round(float(np.percentile(flat, 99)), 3)}


_PROFILED = ("checkpoints", "adapters", "top", "_part_top", "_rare_candidates", "_terms", "query_terms", "plain_text",
             "_pool", "_frequencies", "_relative_bm25", "_bm25", "_tf", "_hit", "_similarity", "_passes", "_union",
             "_best", "popular", "segment", "co_used", "_rows_of")


def profile_engine(search_engine, queries: np.ndarray, lines: int) -> tuple[list[str], dict]:
    """cProfile of both levels over the queries: the functions costing most (own time), and the cumulative time of
    the engine's steps, per query. cProfile inflates Python calls against C calls; read shares, not totals."""
    words = [query_words(q) for q in queries]
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    for q, w in zip(queries, words):
        hits = search_engine.checkpoints(q, TOP_K, words=w)
        search_engine.adapters(q, hits[0] if hits else None, TOP_K, words=w)
    profile.disable()
    wall_ms = (time.perf_counter() - started) * 1e3 / len(queries)
    stats = pstats.Stats(profile).stats
    root = str(Path(__file__).resolve().parents[1]) + os.sep

    def where(key) -> str:
        filename, line, function = key
        if filename == "~":
            return function
        return f"{filename.replace(root, '')}:{line} {function}"

    n = len(queries)
    by_own = sorted(stats.items(), key=lambda item: -item[1][2])
    total_own = sum(entry[2] for entry in stats.values())
    out = [(f"cProfile, {n} two-level queries (vector given): {wall_ms:.2f} ms per query under the profiler; "
            f"own time per query, most first:"),
           f"  {'own ms':>8}{'share':>7}{'cum ms':>8}{'calls':>8}  function"]
    for key, (_, calls, own, cumulative, _) in by_own[:lines]:
        out.append(f"  {own * 1e3 / n:>8.3f}{own / total_own:>7.1%}{cumulative * 1e3 / n:>8.3f}{calls / n:>8.1f}  "
                   f"{where(key)}")
    steps: dict[str, float] = {}
    for (filename, line, function), (_, calls, own, cumulative, _) in stats.items():
        if function in _PROFILED and filename.startswith(root) and "/bench/" not in filename:
            label = f"{Path(filename).stem}.{function}"
            steps[label] = steps.get(label, 0.0) + cumulative * 1e3 / n
    faiss_own = sum(entry[2] for key, entry in stats.items() if "faiss" in f"{key[0]} {key[2]}".lower())
    out.append("  engine steps, cumulative ms per query: " + ", ".join(
        f"{name} {value:.3f}" for name, value in sorted(steps.items(), key=lambda item: -item[1])))
    out.append(f"  own time inside faiss (its wrappers and C++ search, GIL released in C++): "
               f"{faiss_own * 1e3 / n:.3f} ms per query ({faiss_own / total_own:.1%})")
    return out, {"profile_ms_per_query": round(wall_ms, 3), "steps_ms": {k: round(v, 3) for k, v in steps.items()},
                 "faiss_own_ms": round(faiss_own * 1e3 / n, 3)}


def rss_bytes() -> int:
    """This process's resident memory after a full collection (and malloc_trim, so freed heap is given back)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return psutil.Process().memory_info().rss


class PeakRss:
    """Samples RSS every few milliseconds in a thread: the peak a load reaches (the arrays' bytes and their
    parsing overlap)."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with open("/proc/self/statm") as handle:
            page = os.sysconf("SC_PAGE_SIZE")
            while not self._stop.is_set():
                handle.seek(0)
                self.peak = max(self.peak, int(handle.read().split()[1]) * page)
                self._stop.wait(0.005)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def probe_load(spec: dict) -> dict:
    """In a fresh interpreter (what a serving process pays): load the newest generation of the space from Postgres
    and build the SearchEngine (timed; RSS before, peak, after), answer a few queries (the first one cold, which
    builds the lazy lookups), then load the product's query encoder (lite: ONNX MiniLM) and encode once, for the
    whole process's RSS. Every module is imported before the first RSS reading, so the deltas are data."""
    import faiss  # noqa: F401 - imported before measuring
    from sqlalchemy import create_engine, text

    import embedding.encoders  # noqa: F401 - the encoder's import cost (torch) is counted with the encoder below
    from embedding.search_index import load_search_index
    from serving.search.engine import SearchEngine

    db = create_engine(spec["url"])
    with db.connect() as conn:
        conn.execute(text("SELECT 1")).all()
    queries = np.asarray(spec["queries"], dtype=np.float32)
    words = [query_words(q) for q in queries]  # imports the synthetic zoo's module: not the engine's first query
    baseline = rss_bytes()
    with PeakRss() as peak:
        started = time.perf_counter()
        index = load_search_index(db, spec["space"])
        loaded_s = time.perf_counter() - started
        if index is None:  # e.g. embedding.search_index.FORMAT_VERSION changed in the checkout since the build
            raise RuntimeError("load_search_index found no generation it can load")
        search_engine = SearchEngine(index, similarity_only())
        load_s = time.perf_counter() - started
    after_load = rss_bytes()
    started = time.perf_counter()
    hits = search_engine.checkpoints(queries[0], TOP_K, words=words[0])
    search_engine.adapters(queries[0], hits[0] if hits else None, TOP_K, words=words[0])
    first_ms = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    hits = search_engine.checkpoints(queries[1], TOP_K, words=words[1])
    search_engine.adapters(queries[1], hits[0] if hits else None, TOP_K, words=words[1])
    second_ms = (time.perf_counter() - started) * 1e3
    for q, w in zip(queries[2:], words[2:]):
        hits = search_engine.checkpoints(q, TOP_K, words=w)
        search_engine.adapters(q, hits[0] if hits else None, TOP_K, words=w)
    index.row_of  # noqa: B018 - built by the first query with co-usage (the synthetic zoo has none)
    after_queries = rss_bytes()
    result = {"load_s": round(load_s, 3), "load_search_index_s": round(loaded_s, 3),
              "baseline_rss_mb": round(baseline / 2**20, 1), "engine_rss_mb": round((after_queries - baseline) / 2**20, 1),
              "load_rss_mb": round((after_load - baseline) / 2**20, 1),
              "load_peak_mb": round((peak.peak - baseline) / 2**20, 1), "first_query_ms": round(first_ms, 2),
              "second_query_ms": round(second_ms, 2),
              "graphs_blob_mb": round(sum(len(b) for b in index.graphs.values()) / 2**20, 1)}
    index.graphs.clear()  # the blobs NearestNeighbours already deserialised: what keeping them costs
    result["graph_blobs_freed_mb"] = round((after_queries - rss_bytes()) / 2**20, 1)
    if spec.get("models_dir"):
        from embedding.presets import build_query_encoders

        started = time.perf_counter()
        encoder = build_query_encoders(lite_model_choice(Path(spec["models_dir"])))[0]
        encoder.encode_text([prompt_text(queries[0])])
        result["encoder"] = type(encoder).__name__
        result["encoder_load_s"] = round(time.perf_counter() - started, 2)
        result["encoder_rss_mb"] = round((rss_bytes() - after_queries) / 2**20, 1)
    result["process_rss_mb"] = round(rss_bytes() / 2**20, 1)
    return result


def run_probe(url: str, space: str, queries: np.ndarray, models_dir: Path | None) -> dict:
    spec = {"url": url, "space": space, "queries": queries[:20].tolist(),
            "models_dir": str(models_dir) if models_dir else None}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--probe-load", "-"], input=json.dumps(spec),
                          capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- one scale ----------------------------------------------------------------------------------------------------

def single_threaded():
    """One thread for BLAS and OpenMP (numpy, FAISS, torch): per-query latency, like one Postgres backend per
    query (ONNX Runtime keeps its own thread pool)."""
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


def run_scale(scale: str, checkpoints: int, adapters: int, args, engine, faiss, encoders: dict,
              first_id: int, main_scale: bool) -> dict:
    from sqlalchemy import text

    from db.vectors import HNSW_MAX_DIMENSIONS, ensure_hnsw_indexes
    from testkit.synthetic_zoo import SyntheticSpace, create_synthetic_zoo

    d = args.dimension
    print(f"\n== scale {scale}: {checkpoints:,} checkpoints, {adapters:,} adapters, {d} dims, {args.queries} queries "
          f"(clusters {args.clusters}, item noise {args.noise}, query noise {args.query_noise})", flush=True)
    synthetic = SyntheticSpace(f"bench-{scale}", d)
    space = f"{synthetic.name}|none|{d}+0"
    spread = args.noise / np.sqrt(d)
    info: dict = {"scale": scale, "checkpoints": checkpoints, "adapters": adapters, "dimension": d,
                  "default_ef_search": DEFAULT_EF}
    pg_engine = engine
    if engine is not None and d > HNSW_MAX_DIMENSIONS:
        print(f"skipped: pgvector rows ({d} dims; pgvector 0.6 indexes up to {HNSW_MAX_DIMENSIONS})")
        info["skipped"] = f"pgvector: {d} dims"
        pg_engine = None

    search_engine = exact_engine = None
    if engine is not None:
        from db.catalogue_store import refresh_statistics
        from embedding.presets import build_describer
        from embedding.refresh import describer_key
        from embedding.search_index import load_search_index
        from serving.search.engine import SearchEngine

        started = time.perf_counter()
        zoo = create_synthetic_zoo(engine, space, checkpoints=checkpoints, adapters=adapters, dimension=d,
                                   clusters=args.clusters, spread=spread, seed=args.seed, first_id=first_id)
        # as the refresh does after bulk loads: with stale statistics on the catalogue the planner can put the
        # HNSW scan on the inner side of a nested loop (one index walk per model version of the family)
        refresh_statistics(engine)
        info["insert_s"] = round(time.perf_counter() - started, 2)
        if pg_engine is not None:
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
        # the search index as the retrieval_index asset makes it (lite preset's describer key), then loaded as a
        # serving process loads it
        describer = describer_key(build_describer(lite_model_choice(args.models_dir)))
        info["engine_build"] = build_and_store(engine, space, d, describer)
        built = info["engine_build"]
        policy = f"serving policy {built['policy_s']} s, " if built["policy_s"] is not None else ""
        print(f"search index (format {built['format']}): {policy}build {built['build_s']} s (of which "
              f"{built['graphs']} graphs {built['graph_build_s']} s), store {built['store_s']} s", flush=True)
        gc.collect()
        started = time.perf_counter()
        index = load_search_index(engine, space)
        search_engine = SearchEngine(index, similarity_only())
        info["engine_load_in_process_s"] = round(time.perf_counter() - started, 3)
        exact_engine = SearchEngine(replace(index, graphs={}), similarity_only())
    else:
        zoo = synthetic_vectors(args, d, checkpoints, adapters, spread, first_id)

    rng = np.random.default_rng(args.seed + 1)
    queries = make_queries(rng, zoo.centres, args.queries, args.query_noise)
    warmup = make_queries(rng, zoo.centres, args.warmup, args.query_noise)
    exact = Exact(zoo)
    methods = [Method("numpy exact", exact.level1, exact.level2, exact.family_of)]
    closers: list[Callable[[], None]] = []

    if pg_engine is not None:
        for ef in args.ef:
            plain = PlainSql(pg_engine, space, d, ef)
            closers.append(plain.close)
            if "sql_index_used" not in info:
                info["sql_index_used"] = plain.index_check(queries[0])
            methods.append(plain.method())

    if faiss is not None:
        fx = FaissHNSW(faiss, exact, args.faiss_m, args.ef_construction)
        info["faiss_build_s"] = round(fx.build_s, 2)
        methods += [fx.method(f"faiss hnsw M={args.faiss_m} ef={ef}", ef) for ef in args.ef]

    if search_engine is not None:
        methods.append(engine_method(search_engine, "engine (vector given)"))
        methods.append(engine_method(exact_engine, "engine exact nearest (no graphs)"))
        if hasattr(search_engine, "search"):
            methods.append(search_method(search_engine, "engine search() 3+10+negatives"))
        for name, query_vector in encoders.items():
            methods.append(end_to_end_method(search_engine, query_vector, f"engine end-to-end {name}"))

    try:
        with single_threaded():
            info["torch_threads_in_rows"] = _torch_threads()
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
            if search_engine is not None:
                info["engine_qps"] = [measure_qps(search_engine, queries, threads, args.qps_seconds)
                                      for threads in QPS_THREADS]
                if args.profile_lines and main_scale:
                    lines, info["engine_profile"] = profile_engine(search_engine, queries, args.profile_lines)
    finally:
        for close in closers:
            close()

    base = float(np.percentile(methods[0].latencies_ms, 50))
    summaries = [method.summary(base) for method in methods]

    def cell(value) -> str:
        return f"{value:>9.3f}" if value is not None else f"{'-':>9}"

    print(f"{'method':<34}{'p50 ms':>9}{'p99 ms':>9}{'R@10 L1':>9}{'R@10 L2':>9}{'p50/numpy':>11}"
          f"{'L1 p50':>9}{'L2 p50':>9}")
    for s in summaries:
        encode = f"   (encode p50 {s['encode_p50_ms']:.3f})" if "encode_p50_ms" in s else ""
        print(f"{s['name']:<34}{s['p50_ms']:>9.3f}{s['p99_ms']:>9.3f}{cell(s['recall1'])}{cell(s['recall2'])}"
              f"{s['p50_vs_numpy']:>11.2f}{s['level1_p50_ms']:>9.3f}{s['level2_p50_ms']:>9.3f}{encode}")
    short = [f"{s['name']}: {s['short_level2']}" for s in summaries if s["short_level2"]]
    if short:
        print(f"queries where level 2 returned fewer than {TOP_K} adapters: " + "; ".join(short))
    extras = {k: info[k] for k in ("insert_s", "pg_build_s", "pg_index_mb", "faiss_build_s", "sql_index_used",
                                   "shared_buffers", "pgvector", "torch_threads_in_rows")
              if k in info}
    print("setup: " + ", ".join(f"{k}={v}" for k, v in extras.items()))
    info["rows"] = summaries

    if search_engine is not None:
        info["engine"] = next(s for s in summaries if s["name"] == "engine (vector given)")
        print("engine throughput (both levels, vector given, BLAS/OpenMP 1 thread each): " + "; ".join(
            f"{r['threads']} thread{'s' if r['threads'] > 1 else ''} {r['qps']:.0f} q/s ({r['cpu_cores']:.2f} cores "
            f"busy, p50 {r['p50_ms']:.2f} / p99 {r['p99_ms']:.2f} ms)" for r in info["engine_qps"]))
        by_threads = {r["threads"]: r for r in info["engine_qps"]}
        one, most = by_threads[min(by_threads)], by_threads[max(by_threads)]
        print(f"  {most['threads']} threads give {most['qps'] / one['qps']:.2f}x the 1-thread throughput with "
              f"{most['cpu_cores']:.2f} cores busy (1 thread: {one['cpu_cores']:.2f}; {os.cpu_count()} CPUs, load "
              f"average {os.getloadavg()[0]:.1f}): a query holds the GIL except inside numpy and FAISS kernels")
        if "engine_profile" in info:
            print("\n".join(lines))
        parts = index_bytes(index)
        info["engine_parts"] = parts
        info["engine_probe"] = probe = run_probe(engine.url.render_as_string(hide_password=False), space, queries,
                                                 args.models_dir if encoders else None)
        mb = 2 ** 20
        counted = (parts["vectors"] + parts["per_version"] + parts["postings"] + parts["links"] + parts["graphs"])
        print(f"engine memory: arrays {(counted - parts['graphs']) / mb:.1f} MB (vectors {parts['vectors'] / mb:.1f}, "
              f"postings {parts['postings'] / mb:.1f}) + graphs {parts['graphs'] / mb:.1f} MB (serialised; "
              f"deserialised again by NearestNeighbours) + Python objects {sum(parts['python'].values()) / mb:.1f} MB "
              f"({', '.join(f'{k} {v / mb:.1f}' for k, v in parts['python'].items())})")
        if "error" in probe:
            print(f"fresh-process load failed: {probe['error']}")
        else:
            print(f"fresh process: load_search_index + SearchEngine {probe['load_s']:.2f} s "
                  f"(load_search_index {probe['load_search_index_s']:.2f} s; in this process "
                  f"{info['engine_load_in_process_s']:.2f} s); RSS +{probe['load_rss_mb']:.0f} MB after the load, "
                  f"peak +{probe['load_peak_mb']:.0f} MB during it, +{probe['engine_rss_mb']:.0f} MB after 20 queries "
                  f"(first query {probe['first_query_ms']:.1f} ms, second {probe['second_query_ms']:.1f} ms); freeing the kept graph blobs gives back "
                  f"{probe['graph_blobs_freed_mb']:.0f} MB; with the query encoder ({probe.get('encoder', 'none')}, "
                  f"+{probe.get('encoder_rss_mb', 0):.0f} MB, {probe.get('encoder_load_s', 0):.1f} s) the process "
                  f"holds {probe['process_rss_mb']:.0f} MB (interpreter {probe['baseline_rss_mb']:.0f} MB)")
        if main_scale:
            info["sq8"] = sq8 = sq8_graph_bytes(index) if faiss is not None else None
            table, notes = projection(parts, probe.get("engine_rss_mb"), sq8, info["rows"][0]["p50_ms"])
            info["projection"] = table
            print(f"\nPROJECTION (not measured) of the engine's memory at {PROJECT_ROWS:,} versions, "
                  f"{parts['dimension']} dims, linear in the bytes per row measured here:")
            print(f"  {'index and precision':<44}{'matrix MB':>10}{'graph MB':>10}{'rest MB':>9}{'total MB':>10}")
            for row in table:
                print(f"  {row['choice']:<44}{row['matrix_mb']:>10}{row['graph_mb']:>10}{row['rest_mb']:>9}"
                      f"{row['total_mb']:>10}")
            for note in notes:
                print(f"  - {note}")
        targets(info)
    return info


def _torch_threads() -> int | None:
    if "torch" not in sys.modules:
        return None
    return int(sys.modules["torch"].get_num_threads())


def targets(info: dict) -> None:
    """PASS/FAIL of the engine's targets (they are set for paper scale)."""
    row, probe = info["engine"], info.get("engine_probe", {})
    best_qps = max(info["engine_qps"], key=lambda r: r["qps"])
    checks = [
        ("p50", f"{row['p50_ms']:.2f} ms <= {TARGET_P50_MS} ms", row["p50_ms"] <= TARGET_P50_MS),
        ("p99", f"{row['p99_ms']:.2f} ms <= {TARGET_P99_MS} ms", row["p99_ms"] <= TARGET_P99_MS),
        ("recall", f"recall@10 {row['recall_at_10']:.3f} >= {TARGET_RECALL}", row["recall_at_10"] >= TARGET_RECALL),
        ("qps", f"{best_qps['qps']:.0f} q/s (best, {best_qps['threads']} threads) >= {TARGET_QPS}",
         best_qps["qps"] >= TARGET_QPS),
        ("load", f"load {probe.get('load_s', float('nan')):.2f} s <= {TARGET_LOAD_S} s",
         probe.get("load_s", math.inf) <= TARGET_LOAD_S),
        ("memory", f"engine {probe.get('engine_rss_mb', float('nan')):.0f} MB RSS <= {TARGET_MB} MB",
         probe.get("engine_rss_mb", math.inf) <= TARGET_MB),
    ]
    info["targets"] = {name: ok for name, _, ok in checks}
    print(f"engine targets ({info['scale']} scale; set for paper scale, vector given): " + "; ".join(
        f"{text}: {'PASS' if ok else 'FAIL'}" for _, text, ok in checks))


def hnsw_prefix(space: str) -> str:
    from db.vectors import hnsw_index_name

    return hnsw_index_name(space, "checkpoint").rsplit("_checkpoint_", 1)[0]


def load_encoders(args) -> dict[str, Callable[[str], np.ndarray]]:
    """name -> text -> query vector, as serving/search/retriever.py's Retriever.query_vector makes it: the
    product's query encoder (build_query_encoders on the lite choice: ONNX MiniLM when onnxruntime is installed)
    and, with --torch-row, the torch MiniLM."""
    if args.no_encoders:
        return {}
    from db.descriptions import DescriberKey
    from embedding.presets import build_encoders, build_query_encoders
    from serving.search.retriever import Retriever

    choice = lite_model_choice(args.models_dir)
    key = DescriberKey("card-text", "", "card-text", "")  # the Retriever's engine is never loaded here
    found: dict = {}
    try:
        started = time.perf_counter()
        encoder = build_query_encoders(choice)[0]
        name = "onnx" if type(encoder).__name__.startswith("Onnx") else "torch"
        found[name] = Retriever(None, encoder, describer=key).query_vector
        print(f"query encoder: {type(encoder).__name__} loaded in {time.perf_counter() - started:.1f} s "
              f"(models in {args.models_dir})")
        if name == "onnx":  # ORT's intra-op pool off: does its spinning after a run slow the search after it?
            from embedding.onnx_minilm import OnnxMiniLMTextEncoder

            single = OnnxMiniLMTextEncoder(args.models_dir, intra_op_threads=1)
            found["onnx 1 thread"] = Retriever(None, single, describer=key).query_vector
        if args.torch_row and name != "torch":
            torch_encoder = build_encoders(choice)[0]
            found["torch"] = Retriever(None, torch_encoder, describer=key).query_vector
    except Exception as err:  # noqa: BLE001 - the vector-given rows still run
        print(f"skipped: end-to-end rows (query encoder: {type(err).__name__}: {err})")
    return found


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--probe-load":
        print(json.dumps(probe_load(json.loads(sys.stdin.read()))))
        return
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
    parser.add_argument("--clusters", type=int, default=64)
    parser.add_argument("--noise", type=float, default=1.0,
                        help="norm of an item's noise around its unit cluster centre (same-cluster cosine ~ 1/(1+n^2))")
    parser.add_argument("--query-noise", type=float, default=0.5, help="norm of a query's noise around its centre")
    parser.add_argument("--faiss-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=64, help="FAISS efConstruction (pgvector's is 64)")
    parser.add_argument("--qps-seconds", type=float, default=5.0, help="seconds per thread count of the QPS runs")
    parser.add_argument("--profile-lines", type=int, default=15, help="cProfile lines for the engine (0: none)")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="where the query encoder's ONNX export is kept (default: $ZOO_HOME/models, as the product)")
    parser.add_argument("--no-encoders", action="store_true", help="skip the end-to-end rows")
    parser.add_argument("--no-torch-row", dest="torch_row", action="store_false",
                        help="no end-to-end row with the torch MiniLM")
    args = parser.parse_args()
    scales = [s.strip() for s in args.scales.split(",") if s.strip()]
    if not scales or set(scales) - set(SCALES) or args.queries < 1 or not args.ef:
        parser.error(f"--scales takes a comma list of {', '.join(SCALES)}; --queries and --ef must be given")
    if args.models_dir is None:
        from config import Settings

        args.models_dir = Settings.from_env().zoo_home / "models"

    skipped: list[str] = []
    try:
        import faiss
    except ImportError as err:
        faiss = None
        print(f"skipped: FAISS rows (faiss not importable: {err}); pgvector and numpy still run")
        skipped.append("faiss not importable")
    encoders = load_encoders(args)

    results: dict[str, dict] = {}
    main_scale = "paper" if "paper" in scales else scales[-1]
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as workdir:
        from sqlalchemy import create_engine
        from sqlalchemy.exc import SQLAlchemyError

        engine = None
        try:
            from bench.ingest import fresh_database
            from db.migrate import ensure_migrated

            engine = ensure_migrated(create_engine(fresh_database(Path(workdir))))
        except (ImportError, OSError, RuntimeError, SQLAlchemyError) as err:  # numpy and FAISS still run
            print(f"skipped: pgvector and engine rows (no database: {type(err).__name__}: {err})")
            skipped.append(f"no database: {type(err).__name__}")
        sizes = {"real": (args.real_checkpoints, args.real_adapters),
                 "paper": (args.paper_checkpoints, args.paper_adapters)}
        for n, scale in enumerate(scales):
            results[scale] = run_scale(scale, *sizes[scale], args, engine, faiss, encoders,
                                       first_id=10_000_000 * (n + 1), main_scale=scale == main_scale)
            if "skipped" in results[scale]:
                skipped.append(results[scale]["skipped"])
        if engine is not None:
            engine.dispose()
    bench_rss_mb = round(rss_bytes() / 2**20, 1)

    info = results[main_scale]
    by_name = {r["name"]: r for r in info["rows"]}
    faiss_row = by_name.get(f"faiss hnsw M={args.faiss_m} ef={info['default_ef_search']}")
    sql_row = by_name.get(f"pgvector sql ef={info['default_ef_search']}")
    engine_row = info.get("engine") or {}
    probe = info.get("engine_probe") or {}
    out = {
        "bench": "retrieval_speed", "scale": main_scale, "checkpoints": info["checkpoints"],
        "adapters": info["adapters"], "dimension": info["dimension"], "ef_search": info["default_ef_search"],
        "queries": args.queries,
        "engine_p50_ms": engine_row.get("p50_ms"), "engine_p99_ms": engine_row.get("p99_ms"),
        "engine_recall_at_10": engine_row.get("recall_at_10"),
        "engine_qps": {str(r["threads"]): r["qps"] for r in info.get("engine_qps", [])},
        "engine_load_s": probe.get("load_s"), "engine_mb": probe.get("engine_rss_mb"),
        "engine_counted_mb": round(sum(info["engine_parts"][k] for k in ("vectors", "per_version", "postings",
                                                                          "links", "graphs")) / 2**20, 1)
        if "engine_parts" in info else None,
        "process_rss_mb": probe.get("process_rss_mb"), "bench_process_rss_mb": bench_rss_mb,
        "build_s": (info.get("engine_build") or {}).get("build_s"),
        "graph_build_s": (info.get("engine_build") or {}).get("graph_build_s"),
        "store_s": (info.get("engine_build") or {}).get("store_s"),
        "engine_e2e_p50_ms": {r["name"].removeprefix("engine end-to-end "): r["p50_ms"] for r in info["rows"]
                              if r["name"].startswith("engine end-to-end")},
        "engine_targets": info.get("targets"),
        "sql_p50_ms": sql_row["p50_ms"] if sql_row else None,
        "sql_recall_at_10": sql_row["recall_at_10"] if sql_row else None,
        "numpy_p50_ms": by_name["numpy exact"]["p50_ms"], "faiss_p50_ms": faiss_row["p50_ms"] if faiss_row else None,
        "pg_build_s": info.get("pg_build_s"), "faiss_build_s": info.get("faiss_build_s"),
        "rows": info["rows"],
        "other_scales": {s: {"checkpoints": r["checkpoints"], "adapters": r["adapters"],
                             "numpy_p50_ms": r["rows"][0]["p50_ms"],
                             "engine_p50_ms": (r.get("engine") or {}).get("p50_ms"),
                             "engine_p99_ms": (r.get("engine") or {}).get("p99_ms"),
                             "engine_recall_at_10": (r.get("engine") or {}).get("recall_at_10"),
                             "engine_load_s": (r.get("engine_probe") or {}).get("load_s"),
                             "engine_mb": (r.get("engine_probe") or {}).get("engine_rss_mb")}
                         for s, r in results.items() if s != main_scale},
    }
    if skipped:
        out["skipped"] = "; ".join(skipped)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
