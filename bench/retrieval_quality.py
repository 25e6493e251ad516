"""Retrieval quality benchmark: do the prompts of real images find the LoRAs and the checkpoint they were made with?

The 2023 dump goes into a fresh zoo (the real Dagster refresh, lite preset: card-text descriptions, MiniLM text
vectors, HNSW index). Queries are prompts of SFW example images that used at least one served LoRA (resolved in
image_resources), taken from images that are NOT listed in the gallery of any LoRA they used, so an adapter's own
card and example prompts cannot hold the answer. Each prompt is cleaned of `<lora:...>`/`<lyco:...>` tags, weight
syntax such as `(word:1.2)` and the used LoRAs' trigger words; near-identical prompts (token-set Jaccard >= 0.8) are
deduplicated. Leak checks: a query whose prompt is close (Jaccard >= 0.5, typically a sibling image of one posting
session) to an example prompt embedded with one of its LoRAs is dropped; a checkpoint whose gallery lists the image,
or whose embedded prompts are that close, is dropped from the query's checkpoint truth. The sampled images (and
every image sharing their prompt) are held out of the co-usage links while the benchmark runs (and put back after).

Ground truth per query: the served LoRA/LoCon versions the image used (adapters) and the served checkpoint version
it names (checkpoints, when one resolves); "content" is the adapter truth without the 20 most-used adapters (detail
tweakers, noise offsets: used everywhere, unrelated to the prompt). Systems, each giving top-10 adapters and
top-10 checkpoints:
  zoo                 what `zoo search` answers: the in-memory SearchEngine (serving/search/engine.py) with the
                      learned ranker and the product's query encoder, over an index built from the tables while the
                      queries' images are held out (build_search_index, in memory: the stored generation still
                      holds their co-usage links)
  zoo hand weights    the same engine scoring with the Retriever's default hand-set Weights
  zoo semantic        hand weights with popularity, co-usage and lexical weights 0 (what the evidence adds)
  bm25                rank_bm25.BM25Okapi over the text the vectors encode (embedding_text), adapters and
                      checkpoints apart
  popularity          the most downloaded served versions (global: a per-family list would leak the answer's family)
  oracle level 1      the engine's level 2 given the image's real checkpoint (how much a wrong level 1 costs level 2)
and a grid over Weights(checkpoint_popularity, checkpoint_lexical, adapter_popularity, co_usage, adapter_lexical)
tuned on the DEV half of the queries (the engine itself with per-call Weights; each query encoded once, level 1 run
once per level-1 setting, level 2 once per chosen checkpoint and level-2 setting) and reported on the TEST half.

The learned ranker (issue 15): trained inside the benchmark on the held-out catalogue's own example images
(serving/search/training.py), with every sampled query image (dev and test) on its hold-out list, so no query image,
nor any image sharing its prompt, reaches the training data; "zoo" is the engine scoring with it, as `zoo search`
does once retrieval_ranker has run. Ablations retrain it with one signal's columns zeroed (votes, BM25, co-usage) and
compare hand weights with it. `--rerank N` reranks the learned zoo's top-20 adapters with the LLM on N test queries.

Structure: every system answers every query in one place (`collect`, in `evaluate`): a system is an answer function
(query -> Answer: top-10 ids and the Hits behind them) built from `two_level`, `oracle_level1`, `reranked`,
`fixed` over `EngineLevels` (any SearchEngine: other weights, pool sizes, index or ranker); a table reads the
resulting Runs (`Run.system` scores them, `agreement` compares two). A feature ablation is one more (key, answer)
line; a table of what a person sees reads `Answer.adapter_hits` (type, kind, model) of the runs it compares.

    python bench/retrieval_quality.py ../shared/civitai/models-2023-07-04.jsonl.gz [--queries 500] [--seed 0]
        [--write-queries queries.jsonl] [--workdir DIR (keep the zoo; reuse it next time)] [--database-url URL]
        [--no-grid] [--rerank N]

Prints its tables and ends with one JSON line of headline figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Self

import numpy as np
from sqlalchemy import Engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LORA_TYPES = ("LORA", "LoCon")
TOP = 10
NEAR_DUPLICATE = 0.8  # token-set Jaccard at or above which two queries count as the same prompt
# A query whose prompt is this close (token-set Jaccard) to an example prompt embedded with one of its answers is a
# leak: typically a sibling image of the same posting session. Lower than NEAR_DUPLICATE on purpose.
LEAK = 0.5
MIN_QUERY_TOKENS = 3
MAX_QUERY_CHARS = 4000  # what `zoo search --queries` keeps of a query

# ---------------------------------------------------------------------------------------------------------------
# Query text


_TAG = re.compile(r"<[^<>]{0,400}>")  # <lora:...>, <lyco:...>, <hypernet:...>, any other angle-bracket tag
_WEIGHTED = re.compile(r"[(\[{]\s*([^()\[\]{}:]{1,200}?)\s*:\s*-?\d*\.?\d+\s*[)\]}]")  # (word:1.2), [word:0.5]
_TRAILING_WEIGHT = re.compile(r":\s*-?\d*\.?\d+(?=\s*(?:[,)\]}]|$))")  # a weight left after a nested bracket
_BRACKETS = re.compile(r"\\?[()\[\]{}]")
_BREAK = re.compile(r"\bBREAK\b")
_SEPARATORS = re.compile(r"\s*(?:[,|]\s*)+")
_SPACES = re.compile(r"\s+")
_TOKEN = re.compile(r"\w+", re.UNICODE)


def strip_prompt_syntax(prompt: str) -> str:
    """Remove adapter tags and A1111 emphasis syntax, keeping the words."""
    text_ = _TAG.sub(" ", prompt)
    for _ in range(3):  # nested emphasis: ((word:1.2)) -> (word) -> word
        text_ = _WEIGHTED.sub(r"\1", text_)
    text_ = _TRAILING_WEIGHT.sub("", text_)
    text_ = _BRACKETS.sub(" ", text_)
    return _BREAK.sub(",", text_)


def _trigger_pattern(words: set[str]) -> re.Pattern | None:
    phrases = set()
    for word in words:
        for part in str(word).split(","):
            part = _SPACES.sub(" ", strip_prompt_syntax(part)).strip()
            if len(part) >= 2 and _TOKEN.search(part):
                phrases.add(re.escape(part).replace(r"\ ", r"\s+"))
    if not phrases:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(sorted(phrases, key=len, reverse=True)) + r")(?!\w)", re.IGNORECASE)


def clean_query(prompt: str, trigger_words: set[str]) -> str:
    """The prompt as a user would have written it without knowing the answer: no tags, weights or trigger words."""
    text_ = strip_prompt_syntax(prompt)
    pattern = _trigger_pattern(trigger_words)
    if pattern is not None:
        text_ = pattern.sub(" ", text_)
    text_ = _SEPARATORS.sub(", ", _SPACES.sub(" ", text_))
    return text_.strip(" ,")[:MAX_QUERY_CHARS]


def tokens(text_: str) -> list[str]:
    return _TOKEN.findall(text_.lower())


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


# ---------------------------------------------------------------------------------------------------------------
# Metrics


@dataclass
class Scores:
    """Per-query metrics for one level (adapters or checkpoints) of one system."""

    hits: list[float] = field(default_factory=list)
    recalls: list[float] = field(default_factory=list)
    reciprocal_ranks: list[float] = field(default_factory=list)

    def add(self, ranked: list[int], truth: set[int]) -> None:
        top = ranked[:TOP]
        found = [rank for rank, version in enumerate(top, start=1) if version in truth]
        self.hits.append(1.0 if found else 0.0)
        self.recalls.append(len(truth.intersection(top)) / len(truth))
        self.reciprocal_ranks.append(1.0 / found[0] if found else 0.0)

    @property
    def n(self) -> int:
        return len(self.hits)

    def summary(self) -> dict:
        mean = (lambda xs: round(float(np.mean(xs)), 4) if xs else None)
        return {"hit_at_10": mean(self.hits), "recall_at_10": mean(self.recalls), "mrr": mean(self.reciprocal_ranks),
                "n": self.n}


@dataclass
class Query:
    qid: str
    image_id: int
    query: str
    adapters: set[int]
    checkpoints: set[int]
    foreign: bool  # not listed in the gallery of any LoRA it used
    split: str = ""
    content: set[int] = field(default_factory=set)  # the answers without the most-used (generic) adapters
    characters: set[int] = field(default_factory=set)  # the answers that are character adapters (issue 11's cost)


@dataclass
class System:
    name: str
    adapters: Scores = field(default_factory=Scores)
    checkpoints: Scores = field(default_factory=Scores)
    content: Scores = field(default_factory=Scores)
    characters: Scores = field(default_factory=Scores)

    def add(self, query: Query, adapters: list[int], checkpoints: list[int] | None) -> None:
        self.adapters.add(adapters, query.adapters)
        if query.content:
            self.content.add(adapters, query.content)
        if query.characters:
            self.characters.add(adapters, query.characters)
        if query.checkpoints and checkpoints is not None:
            self.checkpoints.add(checkpoints, query.checkpoints)

    def summary(self) -> dict:
        return {"adapters": self.adapters.summary(), "checkpoints": self.checkpoints.summary(),
                "content": self.content.summary(), "characters": self.characters.summary()}


# ---------------------------------------------------------------------------------------------------------------
# The zoo


def ingest(dump: Path, workdir: Path, workers: int) -> tuple[str, float]:
    from bench.ingest import fresh_database
    from config import Settings
    from orchestration.run import refresh_zoo

    url = fresh_database(workdir)
    started = time.perf_counter()
    outcome = refresh_zoo(Settings.from_env(), dump_path=str(dump), database_url=url, workers=workers)
    seconds = time.perf_counter() - started
    if not outcome.success:
        sys.exit(f"the refresh failed: {outcome.failures()}")
    return url, seconds


_CANDIDATES = """
WITH served_loras AS (
    SELECT version_id FROM served_model_versions WHERE model_type = ANY(:lora_types)
), served_checkpoints AS (
    SELECT version_id FROM served_model_versions WHERE model_type = 'Checkpoint'
), sfw AS (
    SELECT id, min(prompt) AS prompt, array_agg(DISTINCT version_id) AS galleries
    FROM images GROUP BY id
    HAVING bool_and(NOT nsfw) AND min(prompt) IS NOT NULL AND length(min(prompt)) > 0
), used AS (
    SELECT r.image_id, array_agg(DISTINCT r.resolved_version_id) AS loras
    FROM image_resources r JOIN served_loras l ON l.version_id = r.resolved_version_id
    WHERE r.role = 'lora' GROUP BY r.image_id
), named_checkpoints AS (
    SELECT r.image_id,
           array_agg(DISTINCT r.resolved_version_id) FILTER (WHERE NOT 'gallery' = ANY(r.sources)) AS named,
           array_agg(DISTINCT r.resolved_version_id) AS any_source
    FROM image_resources r JOIN served_checkpoints c ON c.version_id = r.resolved_version_id
    WHERE r.role = 'checkpoint' GROUP BY r.image_id
)
SELECT s.id AS image_id, s.prompt, s.galleries, u.loras,
       coalesce(n.named, n.any_source, '{}') AS checkpoints
FROM sfw s JOIN used u ON u.image_id = s.id
LEFT JOIN named_checkpoints n ON n.image_id = s.id
ORDER BY s.id
"""


def load_catalogue(engine: Engine, space: str, describer) -> dict:
    """Served, embedded versions: BM25 documents (the text the vectors encode), popularity, trigger words.
    `describer` is the DescriberKey whose stored descriptions the vectors were made from."""
    from crawlers.a1111 import MODEL_TAG
    from db.cards import served_cards
    from embedding.refresh import (
        EXAMPLE_PROMPTS_EMBEDDED,
        card_from_row,
        embedding_text,
        preferred_descriptions,
    )

    with engine.connect() as conn:
        roles = dict(conn.execute(text("SELECT version_id, role FROM embeddings WHERE space = :space"),
                                  {"space": space}).all())
        descriptions = preferred_descriptions(conn, describer)
        served = {row.version_id: row for row in conn.execute(text(
            "SELECT version_id, model_id, model_type, base_model_family, trained_words, version_download_count, "
            "model_download_count FROM served_model_versions"))}
        documents: dict[int, str] = {}
        embedded_prompts: dict[int, list[frozenset]] = {}
        for row in served_cards(conn):
            version_id = row["version_id"]
            if version_id not in roles or version_id not in descriptions:
                continue
            card = card_from_row(row)
            documents[version_id] = embedding_text(card, descriptions[version_id])
            embedded_prompts[version_id] = [
                frozenset(tokens(strip_prompt_syntax(MODEL_TAG.sub("", p))))
                for p in card.example_prompts[:EXAMPLE_PROMPTS_EMBEDDED]]
    triggers = {v: set(served[v].trained_words or ()) | set(descriptions[v].trigger_words if v in descriptions else ())
                for v in served}
    return {"roles": roles, "documents": documents, "embedded_prompts": embedded_prompts, "served": served,
            "triggers": triggers}


def build_queries(engine: Engine, catalogue: dict, n: int, seed: int) -> tuple[list[Query], dict, list[int]]:
    """Sample up to n deduplicated, leak-checked queries; returns them, counts, and the image ids to hold out."""
    roles = catalogue["roles"]
    counts = defaultdict(int)
    with engine.connect() as conn:
        rows = conn.execute(text(_CANDIDATES), {"lora_types": list(LORA_TYPES)}).mappings().all()
    groups: dict[frozenset, list[dict]] = {}
    for row in rows:
        counts["images_with_served_lora"] += 1
        loras = {v for v in row["loras"] if roles.get(v) == "adapter"}
        if not loras:
            counts["dropped_lora_not_embedded"] += 1
            continue
        checkpoints = {v for v in row["checkpoints"] if roles.get(v) == "checkpoint"}
        triggers = set().union(*(catalogue["triggers"].get(v, set()) for v in loras))
        query = clean_query(row["prompt"], triggers)
        key = frozenset(tokens(query))
        if len(key) < MIN_QUERY_TOKENS:
            counts["dropped_too_short"] += 1
            continue
        raw_key = frozenset(tokens(strip_prompt_syntax(row["prompt"])))

        def embedded_with(version: int, raw_key: frozenset = raw_key) -> bool:
            return any(jaccard(raw_key, example) >= LEAK
                       for example in catalogue["embedded_prompts"].get(version, ()))

        if any(embedded_with(v) for v in loras):
            counts["dropped_prompt_embedded_with_a_lora"] += 1
            continue
        # Still a fair adapter query; but a checkpoint whose gallery lists the image (its card holds the image's
        # posting session) or whose vector holds a prompt like it is no fair checkpoint answer.
        leaky = {v for v in checkpoints if v in row["galleries"] or embedded_with(v)}
        if leaky:
            counts["checkpoint_truth_dropped_own_gallery_or_prompt"] += 1
            checkpoints -= leaky
        item = {"image_id": row["image_id"], "query": query, "adapters": loras, "checkpoints": checkpoints,
                "foreign": not (loras & set(row["galleries"]))}
        groups.setdefault(key, []).append(item)
    counts["distinct_prompts"] = len(groups)
    rng = random.Random(seed)
    keys = sorted(groups, key=lambda k: min(item["image_id"] for item in groups[k]))
    rng.shuffle(keys)
    # Images outside every used LoRA's gallery first; the LoRA's own gallery only if those run out.
    keys.sort(key=lambda k: not any(item["foreign"] for item in groups[k]))
    chosen: list[Query] = []
    accepted: list[frozenset] = []
    held_out: list[int] = []
    by_token: dict[str, list[int]] = defaultdict(list)
    for key in keys:
        if len(chosen) >= n:
            break
        candidates = {i for t in key for i in by_token[t]}
        if any(jaccard(key, accepted[i]) >= NEAR_DUPLICATE for i in candidates):
            counts["dropped_near_duplicate"] += 1
            held_out.extend(item["image_id"] for item in groups[key])
            continue
        items = sorted(groups[key], key=lambda item: (not item["foreign"], item["image_id"]))
        item = items[rng.randrange(len([i for i in items if i["foreign"] == items[0]["foreign"]]))]
        for t in key:
            by_token[t].append(len(accepted))
        accepted.append(key)
        held_out.extend(i["image_id"] for i in items)
        chosen.append(Query(qid=f"q{len(chosen):04d}", image_id=item["image_id"], query=item["query"],
                            adapters=item["adapters"], checkpoints=item["checkpoints"], foreign=item["foreign"]))
    order = list(range(len(chosen)))
    random.Random(seed + 1).shuffle(order)
    for position, index in enumerate(order):
        chosen[index].split = "dev" if position < len(order) // 2 else "test"
    counts["queries"] = len(chosen)
    counts["foreign"] = sum(q.foreign for q in chosen)
    counts["with_checkpoint"] = sum(bool(q.checkpoints) for q in chosen)
    return chosen, dict(counts), sorted(set(held_out))


def put_back_dead_runs_hold_out(conn) -> None:
    """Only a run that died while holding out (its lock went with it) leaves rows in the side table: put them back,
    before queries are sampled (a sample without them would differ from any other run's) and before holding out."""
    conn.execute(text("DO $$ BEGIN IF to_regclass('bench_held_out_image_resources') IS NOT NULL THEN "
                      "INSERT INTO image_resources SELECT * FROM bench_held_out_image_resources "
                      "ON CONFLICT DO NOTHING; DROP TABLE bench_held_out_image_resources; END IF; END $$"))


class HeldOut:
    """Remove the query images' references while the benchmark runs, rebuild the links, and put both back after.
    Holds the catalogue lock (db/locks.py) meanwhile: a refresh, or a second run of this benchmark, waits instead
    of reading or rebuilding the links with another hold-out in them."""

    def __init__(self, engine: Engine, image_ids: list[int]) -> None:
        self.engine, self.image_ids = engine, image_ids
        self._lock = None

    def _rebuild(self) -> int:
        from crawlers.taxonomy import ADAPTER_TYPES, CHECKPOINT_TYPES
        from db.links import rebuild_links

        return rebuild_links(self.engine, ADAPTER_TYPES, CHECKPOINT_TYPES, force=True).links

    def __enter__(self) -> Self:
        from db.locks import CATALOGUE, advisory_lock

        self._lock = advisory_lock(self.engine, CATALOGUE, holder=f"bench/retrieval_quality.py pid {os.getpid()}")
        self._lock.__enter__()
        try:
            with self.engine.begin() as conn:
                put_back_dead_runs_hold_out(conn)
                conn.execute(text("CREATE TABLE bench_held_out_image_resources AS "
                                  "SELECT * FROM image_resources WHERE image_id = ANY(:ids)"), {"ids": self.image_ids})
                self.rows = conn.execute(text("DELETE FROM image_resources WHERE image_id = ANY(:ids)"),
                                         {"ids": self.image_ids}).rowcount
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        try:
            self.links = self._rebuild()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(text("INSERT INTO image_resources SELECT * FROM bench_held_out_image_resources "
                                  "ON CONFLICT DO NOTHING"))
                conn.execute(text("DROP TABLE bench_held_out_image_resources"))
            self._rebuild()
        finally:
            self._lock.__exit__(None, None, None)


# ---------------------------------------------------------------------------------------------------------------
# Systems


@dataclass
class Answer:
    """One system's answer to one query: the top-10 adapter and checkpoint version ids (checkpoints None when the
    system does not answer level 1, as the oracle does not), and the hits behind them when the system returns hits
    (what a person would see: types, kinds, models, scores), for tables that read more than ids."""

    adapters: list[int]
    checkpoints: list[int] | None
    adapter_hits: list | None = None
    checkpoint_hits: list | None = None


def from_hits(adapters: list, checkpoints: list | None) -> Answer:
    return Answer([h.version_id for h in adapters], None if checkpoints is None else [h.version_id for h in checkpoints],
                  list(adapters), None if checkpoints is None else list(checkpoints))


@dataclass
class Run:
    """One system's answers to a set of queries, by qid (a query the system does not answer is absent)."""

    name: str
    answers: dict[str, Answer]
    seconds: float = 0.0

    def system(self, queries: list[Query], name: str | None = None, checkpoints: bool = True) -> System:
        """The answers scored against the truth of those of `queries` it answered."""
        system = System(name or self.name)
        for q in queries:
            answer = self.answers.get(q.qid)
            if answer is not None:
                system.add(q, answer.adapters, answer.checkpoints if checkpoints else None)
        return system

    def ms_per_query(self) -> float:
        return 1000 * self.seconds / max(1, len(self.answers))


AnswerFn = Callable[[Query], Answer | None]


def collect(name: str, queries: list[Query], answer: AnswerFn) -> Run:
    """THE place where a system answers the queries: every table reads the Runs made here."""
    answers, started = {}, time.perf_counter()
    for q in queries:
        found = answer(q)
        if found is not None:
            answers[q.qid] = found
    return Run(name, answers, time.perf_counter() - started)


class EngineLevels:
    """The in-memory SearchEngine's two levels, weights given per call."""

    def __init__(self, engine) -> None:
        self.engine = engine

    def checkpoints(self, vector: np.ndarray, words: str, weights, top_k: int = TOP) -> list:
        return self.engine.checkpoints(vector, top_k, words=words, weights=weights)

    def adapters(self, vector: np.ndarray, checkpoint, words: str, weights, top_k: int = TOP) -> list:
        return self.engine.adapters(vector, checkpoint, top_k, words=words, weights=weights)


def two_level(levels, vectors: dict[str, np.ndarray], weights) -> AnswerFn:
    """What `zoo search` answers: top-10 checkpoints, then top-10 adapters for the first of them."""
    def answer(q: Query) -> Answer:
        checkpoints = levels.checkpoints(vectors[q.qid], q.query, weights)
        return from_hits(levels.adapters(vectors[q.qid], checkpoints[0] if checkpoints else None, q.query, weights),
                         checkpoints)
    return answer


def checkpoint_hit(version_id: int, family: str):
    """A level-1 answer as level 2 reads it (the version for co-usage, the family for the filter)."""
    from serving.search.results import Hit

    return Hit(model_id=0, version_id=version_id, name=str(version_id), version_name="", type="Checkpoint",
               kind="checkpoint", base_model=None, base_model_family=family, score=0.0, similarity=0.0, downloads=0,
               co_usage_images=0, trigger_words=[], recommended_weight=None, download_url=None, why="")


def oracle_level1(levels, vectors: dict[str, np.ndarray], weights, families: dict[int, str]) -> AnswerFn:
    """Level 2 given the image's real checkpoint (family filter and co-usage with it): only queries that name one."""
    def answer(q: Query) -> Answer | None:
        if not q.checkpoints:
            return None
        truth = min(q.checkpoints)
        return from_hits(levels.adapters(vectors[q.qid], checkpoint_hit(truth, families[truth]), q.query, weights),
                         None)
    return answer


def fixed(adapters: list[int], checkpoints: list[int]) -> AnswerFn:
    """The same answer to every query (the popularity baseline)."""
    return lambda q: Answer(list(adapters), list(checkpoints))


class BM25Index:
    """rank_bm25.BM25Okapi (its tokens, idf, k1, b), scored as one sparse product per query instead of a Python
    loop over every document per query token; `check` compares the two on a few queries."""

    def __init__(self, documents: dict[int, str]) -> None:
        from rank_bm25 import BM25Okapi
        from scipy.sparse import csr_matrix

        self.ids = np.array(sorted(documents))
        self.bm25 = bm25 = BM25Okapi([tokens(documents[v]) for v in self.ids])
        self.vocabulary = {term: column for column, term in enumerate(sorted(bm25.idf))}
        rows, columns, values = [], [], []
        for row, (frequencies, length) in enumerate(zip(bm25.doc_freqs, bm25.doc_len, strict=True)):
            norm = bm25.k1 * (1 - bm25.b + bm25.b * length / bm25.avgdl)
            for term, f in frequencies.items():
                rows.append(row)
                columns.append(self.vocabulary[term])
                values.append(bm25.idf[term] * f * (bm25.k1 + 1) / (f + norm))
        self.matrix = csr_matrix((values, (rows, columns)), shape=(len(self.ids), len(self.vocabulary)))

    def scores(self, query: str) -> np.ndarray:
        counts = np.zeros(len(self.vocabulary))
        for term in tokens(query):  # BM25Okapi.get_scores counts a repeated query token each time
            column = self.vocabulary.get(term)
            if column is not None:
                counts[column] += 1
        return self.matrix @ counts

    def check(self, queries: list[str]) -> float:
        return max((float(np.max(np.abs(self.scores(q) - self.bm25.get_scores(tokens(q))))) for q in queries),
                   default=0.0)

    def top(self, query: str, k: int = TOP) -> list[int]:
        order = np.lexsort((self.ids, -self.scores(query)))[:k]  # score descending, version id ascending on ties
        return [int(self.ids[i]) for i in order]


def bm25_system(catalogue: dict, queries: list[Query]) -> tuple[AnswerFn, float]:
    """Top-10 by BM25 per level, and the largest difference from BM25Okapi.get_scores on five queries."""
    roles, documents = catalogue["roles"], catalogue["documents"]
    adapters = BM25Index({v: d for v, d in documents.items() if roles[v] == "adapter"})
    checkpoints = BM25Index({v: d for v, d in documents.items() if roles[v] == "checkpoint"})
    diff = max(adapters.check([q.query for q in queries[:5]]), checkpoints.check([q.query for q in queries[:5]]))
    return (lambda q: Answer(adapters.top(q.query), checkpoints.top(q.query))), diff


def popularity_lists(catalogue: dict) -> tuple[list[int], list[int]]:
    served, roles = catalogue["served"], catalogue["roles"]

    def top(role: str) -> list[int]:
        versions = [v for v in catalogue["documents"] if roles[v] == role]
        return sorted(versions, key=lambda v: (-served[v].version_download_count, v))[:TOP]

    return top("adapter"), top("checkpoint")


# ---------------------------------------------------------------------------------------------------------------
# Weight grid: the engine itself, with per-call Weights, over query vectors encoded once


LEVEL1 = ("checkpoint_popularity", "checkpoint_lexical")
LEVEL2 = ("adapter_popularity", "co_usage", "adapter_lexical")
GRID = {
    "checkpoint_popularity": (0.0, 0.5, 1.0, 2.0, 4.0, 8.0),
    "checkpoint_lexical": (0.0, 0.25, 0.5, 1.0, 2.0),
    "adapter_popularity": (0.0, 0.5, 1.0, 2.0, 4.0, 8.0),
    "co_usage": (0.0, 0.5, 1.0, 2.0, 4.0, 8.0),
    "adapter_lexical": (0.0, 0.25, 0.5, 1.0, 2.0),
}
NO_EVIDENCE = {name: 0.0 for name in GRID}  # similarity alone
WHOLE_POOL = 1_000_000  # top_k that returns a level's whole candidate pool


class WeightGrid:
    """Both levels of the engine (`levels`) for any grid point, on a fixed set of queries. Level 1 is run once per
    level-1 setting; level 2 once per (query, chosen checkpoint, level-2 setting): it reads only the chosen
    checkpoint and level 2's weights, so level-1 settings that choose the same checkpoint share its answer."""

    def __init__(self, levels, queries: list[Query], vectors: dict[str, np.ndarray], base) -> None:
        self.levels, self.queries, self.vectors, self.base = levels, queries, vectors, base
        self._level1: dict[tuple, dict[str, list]] = {}
        self._level2: dict[tuple, list[int]] = {}
        self.level1_calls = self.level2_calls = 0

    def weights(self, first: tuple, second: tuple):
        return replace(self.base, **dict(zip(LEVEL1 + LEVEL2, first + second, strict=True)))

    def checkpoints(self, first: tuple) -> dict[str, list]:
        """Level 1's hits per query under level-1 weights `first`."""
        if first not in self._level1:
            weights = self.weights(first, tuple(getattr(self.base, name) for name in LEVEL2))
            self._level1 = {first: {q.qid: self.levels.checkpoints(self.vectors[q.qid], q.query, weights)
                                    for q in self.queries}}  # one level-1 setting held at a time
            self.level1_calls += len(self.queries)
        return self._level1[first]

    def answers(self, first: tuple, second: tuple) -> dict[str, Answer]:
        """Both levels' top-10 ids per query at this grid point."""
        weights, found = self.weights(first, second), {}
        for q, hits in zip(self.queries, self.checkpoints(first).values(), strict=True):
            chosen = hits[0] if hits else None
            key = (q.qid, chosen.version_id if chosen else None, second)
            if key not in self._level2:
                self._level2[key] = [h.version_id for h in self.levels.adapters(self.vectors[q.qid], chosen, q.query,
                                                                                 weights)]
                self.level2_calls += 1
            found[q.qid] = Answer(self._level2[key], [h.version_id for h in hits])
        return found

    def pool_coverage(self, first: tuple) -> dict[str, float]:
        """How often the candidate pools hold an answer: level 1's, and level 2's for the checkpoint level 1 chose
        under `first` (the engine with every evidence weight 0 and top_k the whole pool)."""
        zero = replace(self.base, **NO_EVIDENCE)
        level1, level2 = [], []
        for q, hits in zip(self.queries, self.checkpoints(first).values(), strict=True):
            vector = self.vectors[q.qid]
            if q.checkpoints:
                pool = self.levels.checkpoints(vector, q.query, zero, WHOLE_POOL)
                level1.append(bool(q.checkpoints & {h.version_id for h in pool}))
            pool = self.levels.adapters(vector, hits[0] if hits else None, q.query, zero, WHOLE_POOL)
            level2.append(bool(q.adapters & {h.version_id for h in pool}))
        return {"level-2 pool holds an answer": float(np.mean(level2 or [0.0])),
                "level-1 pool holds the answer": float(np.mean(level1 or [0.0]))}


def grid_search(grid: WeightGrid) -> tuple[dict, dict, list]:
    """Weights tuned on the grid's (dev) queries, level by level: level 1's weights for checkpoint MRR (ties go to
    the best adapter objective they allow), then level 2's for the adapter objective given them: the mean of adapter
    MRR and content MRR, so that weights which only promote the detail tweakers every image uses (high adapter MRR,
    no content found) do not win. Returns the weights, their dev summary, and every (weights, summary) tried."""
    results = []
    for first in itertools.product(*(GRID[name] for name in LEVEL1)):
        for second in itertools.product(*(GRID[name] for name in LEVEL2)):
            answers = grid.answers(first, second)
            system = System("grid")
            for q in grid.queries:
                system.add(q, answers[q.qid].adapters, answers[q.qid].checkpoints)
            results.append((dict(zip(LEVEL1 + LEVEL2, first + second, strict=True)), system.summary()))

    def level1_weights(weights: dict) -> tuple:
        return tuple(weights[name] for name in LEVEL1)

    def mrr(summary: dict, level: str) -> float:
        return summary[level]["mrr"] or 0.0

    best_first = max({level1_weights(w) for w, _ in results}, key=lambda first: (
        max(mrr(s, "checkpoints") for w, s in results if level1_weights(w) == first),
        max(adapter_objective(s) for w, s in results if level1_weights(w) == first), tuple(-x for x in first)))
    given = [(w, s) for w, s in results if level1_weights(w) == best_first]
    given.sort(key=lambda r: (-adapter_objective(r[1]), *(r[0][name] for name in LEVEL2)))
    return given[0][0], given[0][1], results


def adapter_objective(summary: dict) -> float:
    """What the adapter weights are tuned for: all answers and content answers count alike."""
    return ((summary["adapters"]["mrr"] or 0.0) + (summary["content"]["mrr"] or 0.0)) / 2


def grid_lines(results: list) -> list[str]:
    """Checkpoint MRR per level-1 weights, and the best adapter objectives over the whole grid."""
    by_first = {}
    for weights, summary in results:
        by_first[tuple(weights[name] for name in LEVEL1)] = summary["checkpoints"]["mrr"] or 0.0
    best_first = sorted(by_first.items(), key=lambda item: -item[1])[:6]
    top = sorted(results, key=lambda r: -adapter_objective(r[1]))[:4]
    return [f"best checkpoint MRR by {LEVEL1}: " + ", ".join(f"{first}: {m:.3f}" for first, m in best_first),
            f"best adapter objective = mean of adapter and content MRR {LEVEL1 + LEVEL2}: " + "; ".join(
                f"{adapter_objective(s):.3f} (adapter {s['adapters']['mrr'] or 0:.3f}, content "
                f"{s['content']['mrr'] or 0:.3f}) {tuple(w.values())}" for w, s in top)]


def most_used_adapters(engine: Engine, n: int) -> set[int]:
    """The n served adapter versions named by the most images (held-out images excluded): generic enhancers."""
    with engine.connect() as conn:
        return set(conn.execute(text(
            "SELECT r.resolved_version_id FROM image_resources r "
            "JOIN served_model_versions s ON s.version_id = r.resolved_version_id AND s.model_type <> 'Checkpoint' "
            "GROUP BY 1 ORDER BY count(DISTINCT r.image_id) DESC, 1 LIMIT :n"), {"n": n}).scalars())


# ---------------------------------------------------------------------------------------------------------------
# Report


def mark_characters(queries: list[Query], index) -> None:
    """Each query's character answers: what "invited, not imposed" may cost (a character the prompt asks for only
    through its example prompts' votes, its name and trigger words stripped from the query)."""
    character, kinds = index.code("kind", "character"), index.arrays["kind"]
    for q in queries:
        q.characters = {v for v in q.adapters if v in index.row_of and kinds[index.row_of[v]] == character}


def write_queries(path: Path, queries: list[Query], answers_path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for q in queries:
            out.write(json.dumps({"qid": q.qid, "query": q.query}, ensure_ascii=False) + "\n")
    with answers_path.open("w", encoding="utf-8") as out:
        for q in queries:
            out.write(json.dumps({"qid": q.qid, "adapters": sorted(q.adapters), "checkpoints": sorted(q.checkpoints),
                                  "image_id": q.image_id, "split": q.split, "foreign": q.foreign}) + "\n")


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_table(title: str, rows: list[tuple[str, dict]]) -> None:
    print()
    print(title)
    header = (f"{'system':<44}{'ad hit@10':>10}{'ad rec@10':>10}{'ad MRR':>8}{'ck hit@10':>10}{'ck MRR':>8}"
              f"{'queries':>8}{'w/ ckpt':>8}{'content hit@10':>15}{'character hit@10':>17}")
    print(header)
    print("-" * len(header))
    for name, s in rows:
        a, c, t, h = s["adapters"], s["checkpoints"], s["content"], s["characters"]
        print(f"{name:<44}{fmt(a['hit_at_10']):>10}{fmt(a['recall_at_10']):>10}{fmt(a['mrr']):>8}"
              f"{fmt(c['hit_at_10']):>10}{fmt(c['mrr']):>8}{a['n']:>8}{c['n']:>8}"
              f"{fmt(t['hit_at_10']):>9} ({t['n']}){fmt(h['hit_at_10']):>11} ({h['n']})")


def short(s: dict) -> dict:
    return {"hit_at_10": s["hit_at_10"], "recall_at_10": s["recall_at_10"], "mrr": s["mrr"]}


def headline(system: System) -> dict:
    return {**short(system.adapters.summary()), "content_hit_at_10": system.content.summary()["hit_at_10"],
            "character_hit_at_10": system.characters.summary()["hit_at_10"]}


GENERIC_ADAPTERS = 20  # the most-used adapters (detail tweakers, noise offsets, ...): "content" truth leaves them out


def overlap(a: list[int], b: list[int]) -> float:
    """Shared share of two top-k lists (1 when both are empty)."""
    return len(set(a) & set(b)) / max(len(a), len(b)) if a or b else 1.0


def agreement(a: Run, b: Run, queries: list[Query]) -> dict:
    """How alike two runs' answers are on the queries both answered: top-10 overlap per level, the same first
    checkpoint (what level 2 is asked for), and identical adapter lists (order included)."""
    both = [(a.answers[q.qid], b.answers[q.qid]) for q in queries if q.qid in a.answers and q.qid in b.answers]
    checkpoints = [(x.checkpoints, y.checkpoints) for x, y in both
                   if x.checkpoints is not None and y.checkpoints is not None]
    mean = (lambda xs: round(float(np.mean(xs)), 4) if xs else None)
    return {"queries": len(both),
            "checkpoint_overlap": mean([overlap(x, y) for x, y in checkpoints]),
            "same_first_checkpoint": mean([x[:1] == y[:1] for x, y in checkpoints]),
            "adapter_overlap": mean([overlap(x.adapters, y.adapters) for x, y in both]),
            "identical_adapters": mean([x.adapters == y.adapters for x, y in both])}


def levels_summary(run: Run, queries: list[Query]) -> dict:
    summary = run.system(queries).summary()
    return {"adapters": short(summary["adapters"]), "checkpoints": short(summary["checkpoints"]),
            "content_hit_at_10": summary["content"]["hit_at_10"], "ms_per_query": round(run.ms_per_query(), 1)}


def print_comparison(title: str, rows: list[tuple[str, str, Run, Run]], queries: list[Query],
                     names: tuple[str, str]) -> dict:
    """One line per (label, key, run a, run b): their agreement, and recall@10 / MRR of each per level."""
    a_name, b_name = names
    print()
    print(title)
    pair = (lambda label: f"{label} {a_name}/{b_name}")
    header = (f"{'system':<40}{'ck ovl':>7}{'1st ck=':>8}{'ad ovl':>7}{'ad same':>8}{pair('ck rec@10'):>22}"
              f"{pair('ck MRR'):>19}{pair('ad rec@10'):>22}{pair('ad MRR'):>19}{pair('ms/q'):>17}{'n':>5}")
    print(header)
    print("-" * len(header))
    found = {}
    for label, key, a, b in rows:
        agree, sa, sb = agreement(a, b, queries), levels_summary(a, queries), levels_summary(b, queries)
        found[key] = {**agree, names[0]: sa, names[1]: sb}

        def both(level: str, metric: str, sa=sa, sb=sb) -> str:
            return f"{fmt(sa[level][metric])}/{fmt(sb[level][metric])}"

        print(f"{label:<40}{fmt(agree['checkpoint_overlap']):>7}{fmt(agree['same_first_checkpoint']):>8}"
              f"{fmt(agree['adapter_overlap']):>7}{fmt(agree['identical_adapters']):>8}"
              f"{both('checkpoints', 'recall_at_10'):>22}{both('checkpoints', 'mrr'):>19}"
              f"{both('adapters', 'recall_at_10'):>22}{both('adapters', 'mrr'):>19}"
              f"{sa['ms_per_query']:>8.1f}/{sb['ms_per_query']:<8.1f}{agree['queries']:>5}")
    return found


# Learned-ranker ablations: name -> the features whose columns are zeroed in training and ranking ("" = none).
ABLATIONS = {"": (), "no votes": ("votes", "vote_rank"), "no BM25": ("lexical", "bm25"), "no co-usage": ("co_usage",)}


def training_data(engine: Engine, hand_engine, retriever, held_out: list[int]) -> dict:
    """Both levels' training rows from the held-out catalogue's example images, the query images held out."""
    from serving.search.training import level_data, training_queries

    with engine.connect() as conn:
        found = training_queries(conn, hand_engine, hold_out=held_out)
    dimension = hand_engine.index.vectors.shape[1]
    for query, vector in zip(found, retriever.text_encoder.encode_text([q.text for q in found]), strict=True):
        query.vector = np.zeros(dimension, dtype=np.float32)
        query.vector[: len(vector)] = vector
    return {"queries": len(found), "levels": level_data(hand_engine, found)}


def learned_engine(hand_engine, training: dict, zeroed: tuple[str, ...]):
    """(engine, validation metrics) of a ranker fitted without the `zeroed` features."""
    from serving.search.engine import SearchEngine
    from serving.search.ranker import LearnedRanker
    from serving.search.scoring import FEATURES
    from serving.search.training import fit_levels

    columns = [FEATURES.index(name) for name in zeroed]

    def without(matrix: np.ndarray) -> np.ndarray:
        matrix = matrix.copy()
        matrix[:, columns] = 0.0
        return matrix

    levels = {level: replace(found, features=[without(m) for m in found.features])
              for level, found in training["levels"].items()}
    fitted = fit_levels(hand_engine, levels)

    class Zeroed(LearnedRanker):
        def scores(self, level: str, features) -> np.ndarray:
            if not len(features["similarity"]):
                return np.zeros(0)
            return np.asarray(self.boosters[level].predict(without(features.matrix()), num_threads=1))

    ranker = Zeroed(fitted.boosters, metrics=fitted.metrics)
    return SearchEngine(hand_engine.index, hand_engine.weights, hand_engine.pools, ranker), fitted.metrics


def reranked(levels, vectors: dict[str, np.ndarray], reranker) -> AnswerFn:
    """The two-level answer with the first 20 adapters reordered by the LLM reranker."""
    from serving.search import rerank_hits

    def answer(q: Query) -> Answer:
        checkpoints = levels.checkpoints(vectors[q.qid], q.query, None)
        adapters = levels.adapters(vectors[q.qid], checkpoints[0] if checkpoints else None, q.query, None, 20)
        return from_hits(rerank_hits(q.query, adapters, reranker)[:TOP], checkpoints)
    return answer


def what_a_person_sees(run: Run, queries: list[Query]) -> dict:
    """Issue 11's table: what the top-10 adapter lists hold beyond recall. Slots held by negative embeddings or
    textual inversions, slots repeating a model already listed, the most frequent adapter's share of prompts,
    enhancer slots, character slots on prompts that name none of the character's words, and the content levels
    served; before the roles and one-per-model rules, the 2023-dump lists held 21% negative and 25% TI slots."""
    from collections import Counter

    slots = repeats = negatives = inversions = enhancers = uninvited = 0
    per_prompt, levels, prompts = Counter(), Counter(), 0
    for q in queries:
        answer = run.answers.get(q.qid)
        if answer is None or answer.adapter_hits is None:
            continue
        prompts += 1
        seen, words = set(), set(tokens(q.query))
        for hit in answer.adapter_hits:
            slots += 1
            repeats += hit.model_id in seen
            seen.add(hit.model_id)
            negatives += hit.role == "negative"
            inversions += hit.type == "TextualInversion"
            enhancers += hit.role == "enhancer"
            levels[hit.content_level] += 1
            named = set(tokens(hit.name)) | {t for w in hit.trigger_words for t in tokens(w)}
            uninvited += hit.kind == "character" and not named & words
        per_prompt.update({hit.version_id for hit in answer.adapter_hits})
    top = per_prompt.most_common(1)
    share = (lambda n: round(n / slots, 4) if slots else 0.0)
    return {"prompts": prompts, "slots": slots, "negative_slots": share(negatives), "ti_slots": share(inversions),
            "repeated_model_slots": repeats, "enhancer_slots": share(enhancers),
            "uninvited_character_slots": uninvited,
            "top_adapter_prompt_share": round(top[0][1] / prompts, 4) if top and prompts else 0.0,
            "content_levels": dict(levels)}


def evaluate(args: argparse.Namespace, url: str, ingest_s: float | None) -> None:
    os.environ["DATABASE_URL"] = url
    from config import Settings
    from db.engine import get_engine
    from db.locks import CATALOGUE, advisory_lock
    from embedding.presets import ModelChoice, build_describer, build_query_encoders
    from embedding.refresh import describer_key
    from embedding.search_index import build_search_index
    from serving.search import open_reranker
    from serving.search.engine import SearchEngine
    from serving.search.retriever import Retriever
    from serving.search.scoring import Weights

    settings = Settings.from_env()
    choice = ModelChoice.from_settings(settings)
    describer = describer_key(build_describer(choice))
    text_encoder, image_encoder = build_query_encoders(choice)  # the product's query encoder (ONNX MiniLM)
    engine = get_engine(settings)  # a refreshed zoo: migrated by its refresh
    # Encoders, weights and pool sizes as `zoo search` has them; its engine is built below from the held-out
    # catalogue (retriever.search_engine, the stored generation, still holds the queries' co-usage).
    retriever = Retriever(engine, text_encoder, image_encoder, describer=describer)
    started = time.perf_counter()
    with advisory_lock(engine, CATALOGUE, holder=f"bench/retrieval_quality.py pid {os.getpid()}"), \
            engine.begin() as conn:  # a live run's hold-out is not a dead one's: wait for it
        put_back_dead_runs_hold_out(conn)
    catalogue = load_catalogue(engine, retriever.space, describer)
    queries, counts, held_out = build_queries(engine, catalogue, args.queries, args.seed)
    if not queries:
        sys.exit("no queries could be built: is the zoo refreshed (descriptions, embeddings)?")
    print(f"zoo: {len(catalogue['documents'])} embedded versions "
          f"({sum(r == 'adapter' for r in catalogue['roles'].values())} adapters) in space {retriever.space}"
          + (f"; ingest {ingest_s:.0f} s" if ingest_s is not None else ""))
    print("queries: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if args.write_queries:
        answers = args.answers or args.write_queries.with_name(args.write_queries.stem + ".answers.jsonl")
        write_queries(args.write_queries, queries, answers)
        print(f"wrote {args.write_queries} and {answers}")
    with engine.connect() as conn:
        families = dict(conn.execute(text(
            "SELECT version_id, base_model_family FROM served_model_versions WHERE model_type = 'Checkpoint'")).all())
    dev = [q for q in queries if q.split == "dev"]
    test = [q for q in queries if q.split == "test"]
    default_weights = Weights()  # the hand weights (the Retriever has none set: it ranks with a stored ranker)
    defaults = {k: getattr(default_weights, k) for k in GRID}
    semantic_weights = replace(default_weights, **NO_EVIDENCE)
    encode_started = time.perf_counter()
    vectors = {q.qid: retriever.query_vector(q.query) for q in queries}  # each query encoded once, for every system
    encode_s = time.perf_counter() - encode_started
    with HeldOut(engine, held_out) as held:
        generic = most_used_adapters(engine, GENERIC_ADAPTERS)
        for q in queries:
            q.content = q.adapters - generic
        share = sum(bool(q.adapters & generic) for q in queries) / len(queries)
        print(f"held out {len(held_out)} images ({held.rows} references) from the co-usage links: {held.links} "
              f"links; {share:.0%} of the queries used one of the {GENERIC_ADAPTERS} most-used adapters, "
              f"{sum(bool(q.content) for q in queries)} used another")
        # The engine over the catalogue as it is now (the held-out links), built in memory as retrieval_index
        # builds a generation.
        build_started = time.perf_counter()
        with engine.connect() as conn:
            index = build_search_index(conn, retriever.space, retriever.dimension, describer)
        mark_characters(queries, index)
        hand_engine = SearchEngine(index, default_weights, retriever.pools)  # no stored ranker: it saw the queries
        build_s = time.perf_counter() - build_started
        print(f"engine: index of the held-out catalogue built in {build_s:.0f} s ({len(index)} versions, "
              f"{len(index.arrays['link_adapter'])} links, {len(index.arrays['prompt_length'])} example prompts); "
              f"{len(queries)} queries encoded in {encode_s:.0f} s")
        training_started = time.perf_counter()
        training = training_data(engine, hand_engine, retriever, held_out)
        learned = {name: learned_engine(hand_engine, training, columns) for name, columns in ABLATIONS.items()}
        training_s = time.perf_counter() - training_started
        zoo_engine = EngineLevels(learned[""][0])
        ungated = SearchEngine(index, default_weights, retriever.pools, learned[""][0].ranker, gate_uninvited=False)
        print(f"learned ranker: {training['queries']} training queries (the {len(held_out)} query images held out), "
              f"{len(ABLATIONS)} rankers fitted in {training_s:.0f} s; validation by creator: "
              + "; ".join(f"{level} learned {m['learned']} vs hand {m['hand_weights']}"
                          for level, m in learned[""][1].items() if isinstance(m, dict) and "learned" in m))
        # Every system answers every query here, once (collect); the tables below only read these runs. A new
        # system is one line: a key, and an answer function (q -> Answer) from the builders above.
        bm25_answer, bm25_diff = bm25_system(catalogue, queries)
        hand = EngineLevels(hand_engine)
        systems: list[tuple[str, AnswerFn]] = [
            ("zoo", two_level(zoo_engine, vectors, None)),
            ("ungated", two_level(EngineLevels(ungated), vectors, None)),
            ("hand", two_level(hand, vectors, default_weights)),
            ("semantic", two_level(hand, vectors, semantic_weights)),
            ("oracle", oracle_level1(zoo_engine, vectors, None, families)),
            ("bm25", bm25_answer),
            ("popularity", fixed(*popularity_lists(catalogue))),
            *((f"learned {name}", two_level(EngineLevels(found[0]), vectors, None))
              for name, found in learned.items() if name),
        ]
        runs = {key: collect(key, queries, answer) for key, answer in systems}
        if args.rerank and test:
            subset = test[: args.rerank]
            runs["rerank"] = collect("rerank", subset, reranked(zoo_engine, vectors, open_reranker(settings)))
            runs["rerank_base"] = collect("rerank_base", subset, two_level(zoo_engine, vectors, None))
        grid = None
        if not args.no_grid and dev and test:
            grid_started = time.perf_counter()
            grid = WeightGrid(hand, dev, vectors, default_weights)
            best, best_dev, ranking = grid_search(grid)
            default_first = tuple(defaults[name] for name in LEVEL1)
            at_default = grid.answers(default_first, tuple(defaults[name] for name in LEVEL2))
            agree = sum(at_default[q.qid] == Answer(runs["hand"].answers[q.qid].adapters,
                                                    runs["hand"].answers[q.qid].checkpoints) for q in dev)
            coverage = grid.pool_coverage(default_first)
            grid_s = time.perf_counter() - grid_started
            runs["tuned"] = collect("tuned", test, two_level(hand, vectors, replace(default_weights, **best)))
    seconds = time.perf_counter() - started

    def system(key: str, on: list[Query] = queries, **options) -> System:
        return runs[key].system(on, **options)

    zoo, hand_system, semantic, oracle, bm25, popular = (
        system(key) for key in ("zoo", "hand", "semantic", "oracle", "bm25", "popularity"))
    zoo_same = system("zoo", [q for q in queries if q.checkpoints], checkpoints=False)
    print_table(f"all {len(queries)} queries: adapter truth = the served LoRA/LoCon versions the image used; checkpoint "
                f"truth = the checkpoint version it names ({zoo.checkpoints.n} queries); content = adapter truth "
                f"without the {GENERIC_ADAPTERS} most-used adapters", [
                    ("zoo (SearchEngine, learned ranker)", zoo.summary()),
                    ("zoo, uninvited characters not held back", system("ungated").summary()),
                    ("zoo, hand weights", hand_system.summary()),
                    ("zoo semantic only (evidence weights 0)", semantic.summary()),
                    ("bm25 (embedding_text)", bm25.summary()),
                    ("popularity (global downloads)", popular.summary()),
                    ("zoo, true checkpoint given (oracle level 1)", oracle.summary())])
    print(f"(on the oracle's {oracle.adapters.n} queries the zoo with its own level 1 has adapter hit@10 "
          f"{fmt(zoo_same.adapters.summary()['hit_at_10'])}, MRR {fmt(zoo_same.adapters.summary()['mrr'])})")
    print(f"(bm25 scored as a sparse product: max |diff| from BM25Okapi.get_scores {bm25_diff:.1e})")
    output = {"bench": "retrieval_quality", "queries": len(queries), "seed": args.seed,
              "zoo": headline(zoo), "zoo_ungated": headline(system("ungated")),
              "zoo_hand_weights": headline(hand_system), "zoo_semantic": headline(semantic),
              "bm25": headline(bm25),
              "popularity": headline(popular), "oracle_checkpoint": headline(oracle),
              "zoo_on_oracle_queries": headline(zoo_same),
              "checkpoints": {"queries": zoo.checkpoints.n, "zoo": short(zoo.checkpoints.summary()),
                              "zoo_hand_weights": short(hand_system.checkpoints.summary()),
                              "zoo_semantic": short(semantic.checkpoints.summary()),
                              "bm25": short(bm25.checkpoints.summary()),
                              "popularity": short(popular.checkpoints.summary())},
              "default_weights": defaults}
    splits = [("test", test), ("dev", dev)] if test else [("all", queries)]
    rows = [(f"{label}: {key}", system(key, on).summary()) for label, on in splits
            for key in ("zoo", "ungated", "hand", *(f"learned {name}" for name in ABLATIONS if name))]
    print_table("what each signal is worth: the learned ranker retrained without it (columns zeroed), hand "
                "weights, and uninvited characters not held back (ungated)", rows)
    output["ablations"] = {label: {key: headline(system(key, on)) | {"checkpoints": short(
        system(key, on).checkpoints.summary())} for key in ("zoo", "ungated", "hand",
                                                            *(f"learned {n}" for n in ABLATIONS if n))}
        for label, on in splits}
    seen = {key: what_a_person_sees(runs[key], queries) for key in ("zoo", "ungated", "hand")}
    print("\nwhat a person sees in the top-10 adapters (shares of slots; before issue 11: 21% negative, 25% TI)")
    for key, found in seen.items():
        print(f"  {key:<8}" + ", ".join(f"{name} {value}" for name, value in found.items()))
    output["what_a_person_sees"] = seen
    output["hand_vs_learned"] = print_comparison(
        "hand weights vs the learned ranker on the same queries", [
            ("all queries", "all", runs["hand"], runs["zoo"])], queries, ("hand", "learned"))
    output["learned_ranker"] = {"training_queries": training["queries"], "seconds": round(training_s, 1),
                                "validation": learned[""][1]}
    if "rerank" in runs:
        subset = test[: args.rerank]
        base, rerank = system("rerank_base", subset), system("rerank", subset)
        print_table(f"LLM rerank of the learned zoo's top-20 adapters on {len(subset)} test queries", [
            ("zoo (learned)", base.summary()), ("zoo + rerank", rerank.summary())])
        output["rerank"] = {"queries": len(subset), "zoo": headline(base), "rerank": headline(rerank),
                            "ms_per_query": round(runs["rerank"].ms_per_query(), 1)}
    if grid is not None:
        print()
        print(f"weight grid {LEVEL1 + LEVEL2} tuned on the dev half ({len(dev)} queries; level 1's weights for "
              f"checkpoint MRR, then level 2's for the adapter objective), reported on the test half ({len(test)} "
              f"queries); default {tuple(defaults[name] for name in LEVEL1 + LEVEL2)}")
        print(f"through the engine, per-call weights: {len(ranking)} settings, {grid.level1_calls} level-1 and "
              f"{grid.level2_calls} level-2 calls in {grid_s:.0f} s; the grid's default point reproduces the zoo's "
              f"top-10 lists on {agree}/{len(dev)} dev queries; "
              + "; ".join(f"{k} {v:.1%}" for k, v in coverage.items()))
        for line in grid_lines(ranking):
            print("  " + line)
        default_dev = System("dev default")
        for q in dev:
            default_dev.add(q, at_default[q.qid].adapters, at_default[q.qid].checkpoints)
        default_test, tuned_test = system("zoo", test), system("tuned", test)
        print_table("dev/test", [
            ("dev: default weights (grid)", default_dev.summary()),
            (f"dev: best {tuple(best.values())} (grid)", best_dev),
            ("test: default weights (SearchEngine)", default_test.summary()),
            (f"test: dev-tuned {tuple(best.values())} (SearchEngine)", tuned_test.summary())])
        output.update({
            "best_weights": best, "pool_coverage": {k: round(float(v), 4) for k, v in coverage.items()},
            "test": {"queries": len(test), "default": default_test.summary(), "tuned": tuned_test.summary()},
            "grid": {"settings": len(ranking), "level1_calls": grid.level1_calls, "level2_calls": grid.level2_calls,
                     "seconds": round(grid_s, 1)}})
    output["ms_per_query"] = {key: round(run.ms_per_query(), 1) for key, run in runs.items()}
    output["seconds"] = round(seconds, 1)
    print(json.dumps(output))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump", type=Path, help="JSON Lines dump of /models items (the 2023 dump)")
    parser.add_argument("--queries", type=int, default=500, help="how many queries to sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--write-queries", type=Path, help="write {qid, query} JSON Lines here (for zoo search "
                        "--queries) and the answers beside it")
    parser.add_argument("--answers", type=Path, help="where the answers go (default: <queries>.answers.jsonl)")
    parser.add_argument("--workdir", type=Path, help="ingest into this folder and keep the zoo there (default: a "
                        "temporary folder); a folder holding a zoo from an earlier run is evaluated without ingesting")
    parser.add_argument("--database-url", help="evaluate this already refreshed zoo instead of ingesting the dump")
    parser.add_argument("--no-grid", action="store_true", help="skip the dev/test weight grid")
    parser.add_argument("--rerank", type=int, default=0, metavar="N",
                        help="also rerank the learned zoo's top-20 adapters with the LLM on the first N test queries")
    args = parser.parse_args()
    # The lite preset: card-text describer, MiniLM text vectors, no image half (the refresh and the retriever agree).
    os.environ["ZOO_PRESET"] = "lite"
    for variable in ("ZOO_DESCRIBER", "ZOO_TEXT_ENCODER", "ZOO_IMAGE_ENCODER"):
        os.environ.pop(variable, None)
    if args.database_url:
        evaluate(args, args.database_url, None)
        return
    if not args.dump.is_file():
        print(f"skipped: dump {args.dump} not found")
        print(json.dumps({"bench": "retrieval_quality", "skipped": f"missing {args.dump}"}))
        return
    if args.workdir:
        marker = args.workdir / "retrieval_quality_zoo.json"
        if marker.is_file():  # a zoo refreshed by an earlier run
            from db.embedded import embedded_database_url

            kept = json.loads(marker.read_text())
            embedded = args.workdir / "pg" / "data"
            url = embedded_database_url(embedded) if embedded.is_dir() else kept["database_url"]
            evaluate(args, url, None)
            return
        args.workdir.mkdir(parents=True, exist_ok=True)
        url, ingest_s = ingest(args.dump, args.workdir, args.workers)
        marker.write_text(json.dumps({"database_url": url, "dump": str(args.dump), "ingest_s": round(ingest_s, 1)}))
        evaluate(args, url, ingest_s)
        return
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as workdir:
        url, ingest_s = ingest(args.dump, Path(workdir), args.workers)
        evaluate(args, url, ingest_s)


if __name__ == "__main__":
    main()
