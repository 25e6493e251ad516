"""Two-level retrieval: the best checkpoints for a query, then adapters compatible with the chosen one.

Each level is one SQL round trip. Its candidate pool is the space's partial HNSW index (inner product on
[text || image]) walked by similarity, plus the most downloaded versions, the versions whose texts hold the query's
rarest words and, for adapters, those most used with the chosen checkpoint; the pool is then scored by similarity,
usage evidence and BM25 of the query's words. Semantic similarity alone finds few right answers on real data
(bench/retrieval_quality.py), the version's downloads are the strongest single signal, the prompt's literal words
find the adapters that popularity cannot (characters, objects, named styles), and co-usage with the chosen
checkpoint helps adapters as a boost (a hard filter on it throws most right answers away); the only hard filter is
base-model family.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, Engine, text

from crawlers.a1111 import plain_text
from db.lexicon import TEXT_SEARCH_CONFIG
from db.vectors import FAMILY, hnsw_index_name, sql_literal
from embedding.describe_card import trigger_words_or_trained
from embedding.encoders import ImageEncoder, TextEncoder
from embedding.refresh import FALLBACK_DESCRIBER, space_name
from serving.search.results import KIND_ORDER, Filters, Hit, SearchResult

@dataclass(frozen=True)
class Weights:
    """How evidence combines: score = similarity + popularity * log-downloads + co_usage * log-images
    + lexical * relative BM25."""

    text: float = 1.0
    image: float = 1.0
    # From bench/retrieval_quality.py's 2023-dump queries (lite preset): usage evidence and the prompt's words
    # outweigh MiniLM similarity there. The dev-half grid's best popularity weights (4.0 and 8.0) let popularity
    # override what a prompt asks for ("realistic" -> a pixel-art checkpoint, tests/test_retrieval.py) and lose
    # most "content" answers on the test half; half of each keeps them (README, Benchmarks).
    checkpoint_popularity: float = 2.0
    adapter_popularity: float = 4.0
    co_usage: float = 2.0
    # BM25 of the query's words in the embedded text, divided by the pool's best: what a prompt names literally.
    checkpoint_lexical: float = 1.0
    adapter_lexical: float = 1.0


# The preferred describer's words, else the card-text fallback stored for cards the preferred one failed on.
_DESCRIPTION = """
    SELECT kind, trigger_words, recommended_weight, text FROM descriptions dd
    WHERE dd.version_id = r.version_id
      AND (dd.describer, dd.prompt_version) IN ((:describer, :prompt_version), (:fallback, :fallback_version))
    ORDER BY dd.describer = :describer DESC LIMIT 1"""
# The version's own downloads: a popular model's old versions are not what people use now.
_POPULARITY = "least(1.0, ln(1 + v.download_count) / ln(1000000.0))"
_CO_USAGE = "least(1.0, ln(1 + coalesce(l.image_count, 0)) / ln(50.0))"
# The query's words that occur in the space's texts of a role, with BM25's IDF (Lucene's, never negative) and each
# lexeme as a one-word tsquery (quoted, so any lexeme is a literal). Words are split on spaces and commas first, so a match can be shown as the
# word the user wrote; each is parsed and stemmed as the documents were (db/lexicon.py).
_TERMS = r"""
                SELECT l.lexeme, min(w.word) AS word, count(*) AS query_count, t.documents,
                       ln(1 + (n.documents - t.documents + 0.5) / (t.documents + 0.5)) AS idf,
                       n.documents AS corpus, n.average_length,
                       CAST('''' || replace(replace(l.lexeme, '\', '\\'), '''', '''''') || '''' AS tsquery) AS query
                FROM regexp_split_to_table(coalesce(CAST(:words AS text), ''), '[\s,]+') AS w(word)
                CROSS JOIN LATERAL unnest(to_tsvector('{config}', w.word)) AS l
                CROSS JOIN LATERAL (SELECT documents FROM lexical_terms  -- a key lookup per word, not a hash
                    WHERE space = {space} AND role = {role} AND lexeme = l.lexeme LIMIT 1) AS t  -- of all words
                JOIN lexical_corpus n ON n.space = {space} AND n.role = {role}
                GROUP BY l.lexeme, t.documents, n.documents, n.average_length"""
BM25_K1, BM25_B = 1.5, 0.75  # rank_bm25's BM25Okapi defaults (the benchmark's baseline)
# BM25 of each candidate against the query's terms, set-based: only the query's lexemes of each stored text are
# unnested (setweight marks them, stored words carrying the default weight D, and ts_filter keeps them), then one
# join with the terms and one aggregate for the whole pool.
_BM25 = f"""
                SELECT c.version_id, sum(t.idf * t.query_count * w.tf * {BM25_K1 + 1} / (w.tf + {BM25_K1} * (1 - {BM25_B}
                           + {BM25_B} * e.lexical_length / greatest(t.average_length, 1.0)))) AS bm25
                FROM c JOIN embeddings e ON e.version_id = c.version_id AND e.space = {{space}}
                CROSS JOIN LATERAL (
                    SELECT u.lexeme, array_length(u.positions, 1) AS tf
                    FROM unnest(ts_filter(setweight(e.lexemes, 'A', (SELECT array_agg(lexeme) FROM terms)), '{{{{a}}}}')) u
                ) w
                JOIN terms t ON t.lexeme = w.lexeme
                GROUP BY c.version_id"""
# The query's words a result's text holds, best (rarest) first: for the k results only.
_MATCHED_WORDS = """
        SELECT coalesce(array_agg(t.word ORDER BY t.idf DESC, t.word), '{}') AS words
        FROM embeddings e JOIN terms t ON e.lexemes @@ t.query
        WHERE e.version_id = r.version_id AND e.space = :space"""
# Candidates are scored on the plain tables first; only the top few are joined to the served view and descriptions.
_RESULT = f"""
    SELECT s.model_id, s.version_id, s.model_name AS name, s.version_name, s.model_type AS type,
           coalesce(d.kind, CASE WHEN s.model_type = 'Checkpoint' THEN 'checkpoint' ELSE 'other' END) AS kind,
           s.base_model, s.base_model_family, r.similarity, r.score, r.co_usage_images, r.lexical,
           mw.words AS matched_words,
           s.version_download_count AS downloads, d.trigger_words, s.trained_words,
           d.recommended_weight, s.download_url, s.primary_file_name AS file_name, coalesce(d.text, '') AS description,
           s.primary_file_sha256 AS sha256
    FROM ranked r JOIN served_model_versions s ON s.version_id = r.version_id
    LEFT JOIN LATERAL ({_DESCRIPTION}) d ON true
    CROSS JOIN LATERAL ({_MATCHED_WORDS}) mw
    ORDER BY r.score DESC, r.version_id LIMIT :k"""
HNSW_MAX_EF_SEARCH = 1000  # pgvector's ceiling; an index scan returns at most ef_search rows
WALK, FAMILY_INDEX, EXACT = "walk", "family index", "exact"  # how a level finds its rows by similarity
RANK_MARGIN = 20  # scored rows beyond k, in case a vector outlived its version's serving (until the next index run)
RARE_TERMS = 8  # the query's rarest words pick the lexical candidates
RARE_SHARE = 0.05  # a word in more than this share of a role's texts picks none (BM25 still counts it)


class Retriever:
    def __init__(self, engine: Engine, text_encoder: TextEncoder, image_encoder: ImageEncoder | None = None, *,
                 describer: str = "card-text", prompt_version: str = "", ef_search: int = 100,
                 candidate_pool: int = 100, family_candidates: int = 40, popular_candidates: int = 50,
                 co_used_candidates: int = 50, lexical_candidates: int = 50, weights: Weights = Weights()) -> None:
        self.engine = engine
        self.text_encoder, self.image_encoder = text_encoder, image_encoder
        self.space = space_name(text_encoder, image_encoder)
        self.image_dim = image_encoder.image_dim if image_encoder else 0
        self.dimension = text_encoder.text_dim + self.image_dim
        self.describer, self.prompt_version = describer, prompt_version
        self.candidate_pool = min(int(candidate_pool), HNSW_MAX_EF_SEARCH)
        self.ef_search = min(max(int(ef_search), self.candidate_pool), HNSW_MAX_EF_SEARCH)
        self.family_candidates = int(family_candidates)
        self.popular_candidates, self.co_used_candidates = int(popular_candidates), int(co_used_candidates)
        self.lexical_candidates = int(lexical_candidates)
        self.weights = weights
        self._family_counts: dict[str, int] | None = None
        self._family_indexes: set[str] = set()
        self._popular: dict[tuple[str, str | None], list[int]] = {}

    def query_vector(self, query: str | None, image=None) -> np.ndarray:
        """[w_text * q_text || w_image * q_image], so its inner product with a stored [t || i] is
        w_text <q, t> + w_image <q, i>; the missing modality contributes nothing."""
        if not query and image is None:
            raise ValueError("a search needs a text query, an image, or both")
        vector = np.zeros(self.dimension, dtype=np.float32)
        if query:
            vector[: self.text_encoder.text_dim] = self.weights.text * self.text_encoder.encode_text([query])[0]
        if image is not None:
            if self.image_encoder is None:
                raise ValueError("this preset has no image encoder: search by text, or use ZOO_PRESET=full")
            vector[self.text_encoder.text_dim:] = self.weights.image * self.image_encoder.encode_images([image])[0]
        return vector

    def family_counts(self) -> dict[str, int]:
        """Adapter vectors per base-model family in this space, and which families have an index of their own
        (cached per retriever; they choose level 2's plan)."""
        if self._family_counts is None:
            with self.engine.connect() as conn:
                self._family_counts = dict(conn.execute(text(
                    "SELECT base_model_family, count(*) FROM embeddings WHERE space = :space AND role = 'adapter' "
                    "GROUP BY 1"), {"space": self.space}).all())
                indexes = set(conn.execute(text(
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'embeddings'")).scalars())
                self._family_indexes = {family for family in self._family_counts
                                        if hnsw_index_name(self.space, FAMILY, family) in indexes}
        return self._family_counts

    def popular(self, role: str, family: str | None = None) -> list[int]:
        """The most downloaded versions of a role (and family) in this space (cached per retriever): candidates
        whatever their similarity, because usage is the strongest evidence on real data and an index walk by
        similarity alone rarely reaches them."""
        key = (role, family)
        if key not in self._popular:
            with self.engine.connect() as conn:
                self._popular[key] = list(conn.execute(text(
                    "SELECT e.version_id FROM embeddings e JOIN model_versions v ON v.id = e.version_id "
                    "WHERE e.space = :space AND e.role = :role AND (CAST(:family AS text) IS NULL "
                    "OR e.base_model_family = :family) ORDER BY v.download_count DESC, e.version_id LIMIT :n"),
                    {"space": self.space, "role": role, "family": family, "n": self.popular_candidates}).scalars())
        return self._popular[key]

    def _pool_sql(self, role: str, plan: str = WALK, family: str | None = None, co_used: bool = False) -> str:
        """The candidate pool `c`: `pool` rows by similarity, then the `:popular` versions, for adapters those most
        used with the chosen checkpoint, and the versions whose texts hold the query's rarest words (best first by
        the IDF they match), looked up by key. The similarity rows come from the partial HNSW index of (space, role)
        (WALK, post-filtered later), of the family's own adapters (FAMILY_INDEX), or from an exact scan of a family
        too small to have an index (EXACT; '+ 0' keeps the planner off the index). MATERIALIZED keeps each branch
        from being re-run inside a nested loop. Also defines `terms`, the query's words, for the scoring."""
        space, role_sql = sql_literal(self.space), sql_literal(role)
        distance = f"e.emb::vector({self.dimension}) <#> CAST(:q AS vector({self.dimension}))"
        where = f"e.space = {space} AND e.role = {role_sql}"
        if plan == FAMILY_INDEX:  # constants: the family index's predicate; its checkpoints are dropped after the walk
            where = f"e.space = {space} AND e.base_model_family = {sql_literal(family)} AND e.role <> 'checkpoint'"
        elif plan == EXACT:
            where += " AND e.base_model_family = :family"
        order = f"({distance}) + 0" if plan == EXACT else distance
        walk = f"""
                SELECT e.version_id, -({distance}) AS similarity FROM embeddings e
                WHERE {where} ORDER BY {order} LIMIT :pool"""
        lookup = f"""
                SELECT e.version_id, -({distance}) AS similarity FROM embeddings e
                WHERE e.space = {space} AND e.role = {role_sql} AND e.version_id"""
        co_used_sql = f"""
                UNION{lookup} IN (SELECT l.adapter_version_id FROM adapter_checkpoint_links l
                    WHERE l.checkpoint_version_id = :checkpoint
                    ORDER BY l.image_count DESC, l.adapter_version_id LIMIT :co_used)""" if co_used else ""
        in_family = " AND e.base_model_family = :family" if family is not None else ""
        return f"""
            WITH walk AS MATERIALIZED ({walk}
            ),
            terms AS MATERIALIZED ({_TERMS.format(config=TEXT_SEARCH_CONFIG, space=space, role=role_sql)}
            ),
            rare AS MATERIALIZED (
                SELECT idf, query FROM terms
                WHERE documents <= {RARE_SHARE} * corpus ORDER BY documents, lexeme LIMIT {RARE_TERMS}
            ),
            lexical AS MATERIALIZED (
                SELECT e.version_id FROM rare r JOIN embeddings e ON e.lexemes @@ r.query
                WHERE e.space = {space} AND e.role = {role_sql}{in_family}
                GROUP BY e.version_id ORDER BY sum(r.idf) DESC, e.version_id LIMIT :lexical_candidates
            ),
            c AS (
                SELECT * FROM walk
                UNION{lookup} = ANY(CAST(:popular AS bigint[])){co_used_sql}
                UNION{lookup} IN (SELECT version_id FROM lexical)
            )"""

    def _ranked_sql(self, evidence: str, where: str, co_usage_images: str = "0", joins: str = "") -> str:
        """`ranked`: the pool's rows that pass `where`, scored as similarity + `evidence` + the lexical weight times
        the row's BM25 relative to the best of those rows (the row that matches the query's words best gets 1)."""
        return f""",
            bm25 AS ({_BM25.format(space=sql_literal(self.space))}
            ),
            scored AS (
                SELECT c.version_id, c.similarity, {co_usage_images} AS co_usage_images,
                       c.similarity + {evidence} AS evidence,
                       coalesce(x.bm25 / nullif(max(x.bm25) OVER (), 0), 0) AS lexical
                FROM c JOIN model_versions v ON v.id = c.version_id JOIN models m ON m.id = v.model_id{joins}
                LEFT JOIN bm25 x ON x.version_id = c.version_id
                WHERE {where}
            ),
            ranked AS (
                SELECT version_id, similarity, co_usage_images, lexical, evidence + :lex * lexical AS score
                FROM scored ORDER BY score DESC, version_id LIMIT :k + {RANK_MARGIN}
            )"""

    @staticmethod
    def _filter_sql(filters: Filters) -> tuple[str, dict]:
        clauses, params = [], {}
        if filters.base_models:
            clauses.append("v.base_model = ANY(:base_models)")
            params["base_models"] = list(filters.base_models)
        if filters.types:
            clauses.append("m.type = ANY(:types)")
            params["types"] = list(filters.types)
        if filters.commercial_use:
            clauses.append(":commercial = ANY(m.allow_commercial_use)")
            params["commercial"] = filters.commercial_use
        if filters.min_downloads:
            clauses.append("v.download_count >= :min_downloads")
            params["min_downloads"] = filters.min_downloads
        return "".join(f" AND {clause}" for clause in clauses), params

    @staticmethod
    def _run(conn: Connection, sql: str, params: dict, ef_search: int) -> list[dict]:
        _set_session(conn, "hnsw.ef_search", str(int(ef_search)))
        return [dict(row) for row in conn.execute(text(sql), params).mappings()]

    def checkpoint_query(self, q: np.ndarray, top_k: int = 5, filters: Filters = Filters(),
                         words: str | None = None) -> tuple[str, dict]:
        """Level 1 as (SQL, parameters): the best checkpoints, by similarity, popularity and the query's words."""
        where, params = self._filter_sql(Filters(filters.base_models, (), filters.commercial_use, filters.min_downloads))
        sql = self._pool_sql("checkpoint") + self._ranked_sql(f":pop * {_POPULARITY}", "true" + where) + _RESULT
        return sql, {**params, **self._common(q, words, top_k, self.candidate_pool),
                     "pop": self.weights.checkpoint_popularity, "lex": self.weights.checkpoint_lexical,
                     "popular": self.popular("checkpoint")}

    def adapter_plan(self, checkpoint: Hit | None, top_k: int) -> tuple[int, str]:
        """(pool size, plan) for level 2. A family with an index of its own walks it for `family_candidates` (at
        least 2k) rows; else the shared index is walked for enough rows that about that many of the family survive
        the post-filter, or, for a family too rare for that, the family is scanned exactly (it is small)."""
        if checkpoint is None:
            return self.candidate_pool, WALK
        counts = self.family_counts()
        family = checkpoint.base_model_family
        wanted = max(self.family_candidates, 2 * top_k)
        if family in self._family_indexes:
            return wanted, FAMILY_INDEX
        total, in_family = sum(counts.values()), counts.get(family, 0)
        if in_family == 0 or total == 0:
            return wanted, EXACT
        pool = int(np.ceil(wanted * total / in_family))
        if pool > HNSW_MAX_EF_SEARCH:
            return wanted, EXACT
        return max(pool, self.candidate_pool), WALK

    def adapter_query(self, q: np.ndarray, checkpoint: Hit | None, top_k: int = 10,
                      filters: Filters = Filters(), words: str | None = None) -> tuple[str, dict]:
        """Level 2 as (SQL, parameters): adapters of the checkpoint's family, boosted by co-usage with it."""
        where, params = self._filter_sql(filters)
        pool, plan = self.adapter_plan(checkpoint, top_k)
        family = checkpoint.base_model_family if checkpoint is not None else None
        if checkpoint is not None:
            where += " AND v.base_model_family = :family"
            params["family"] = family
        sql = self._pool_sql("adapter", plan, family, co_used=checkpoint is not None) + self._ranked_sql(
            f":pop * {_POPULARITY} + :co * {_CO_USAGE}", "m.type <> 'Checkpoint'" + where,
            co_usage_images="coalesce(l.image_count, 0)",
            joins="\n                LEFT JOIN adapter_checkpoint_links l ON l.adapter_version_id = c.version_id"
                  " AND l.checkpoint_version_id = :checkpoint") + _RESULT
        return sql, {**params, **self._common(q, words, top_k, pool), "pop": self.weights.adapter_popularity,
                     "co": self.weights.co_usage, "lex": self.weights.adapter_lexical,
                     "checkpoint": checkpoint.version_id if checkpoint else -1, "co_used": self.co_used_candidates,
                     "popular": self.popular("adapter", family)}

    def checkpoints(self, q: np.ndarray, top_k: int = 5, filters: Filters = Filters(),
                    words: str | None = None) -> list[Hit]:
        with self._session() as conn:
            return self._checkpoints(conn, q, top_k, filters, words)

    def adapters(self, q: np.ndarray, checkpoint: Hit | None, top_k: int = 10, filters: Filters = Filters(),
                 words: str | None = None) -> list[Hit]:
        with self._session() as conn:
            return self._adapters(conn, q, checkpoint, top_k, filters, words)

    @contextmanager
    def _session(self) -> Iterator[Connection]:
        """A pooled connection in autocommit, so each level is one round trip (no BEGIN/COMMIT: two read-only
        queries need no shared snapshot); custom plans, so a statement psycopg prepared still plans the query
        vector as a constant and walks the index."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            _set_session(conn, "plan_cache_mode", "force_custom_plan")
            yield conn

    def _checkpoints(self, conn: Connection, q: np.ndarray, top_k: int, filters: Filters,
                     words: str | None) -> list[Hit]:
        rows = self._run(conn, *self.checkpoint_query(q, top_k, filters, words), self.ef_search)
        return [self._hit(row, None) for row in rows]

    def _adapters(self, conn: Connection, q: np.ndarray, checkpoint: Hit | None, top_k: int,
                  filters: Filters, words: str | None) -> list[Hit]:
        sql, params = self.adapter_query(q, checkpoint, top_k, filters, words)
        rows = self._run(conn, sql, params, max(self.ef_search, params["pool"]))
        return [self._hit(row, checkpoint) for row in rows]

    def search(self, query: str | None, image=None, *, top_k: int = 10, top_checkpoints: int = 3,
               filters: Filters = Filters()) -> SearchResult:
        q = self.query_vector(query, image)
        with self._session() as conn:
            checkpoints = self._checkpoints(conn, q, top_checkpoints, filters, query) if top_checkpoints else []
            adapters = self._adapters(conn, q, checkpoints[0] if checkpoints else None, top_k, filters, query)
        by_kind: dict[str, list[Hit]] = {}
        for hit in adapters:
            by_kind.setdefault(hit.kind, []).append(hit)
        rank = {kind: position for position, kind in enumerate(KIND_ORDER)}
        ordered = {kind: by_kind[kind] for kind in sorted(by_kind, key=lambda k: (rank.get(k, len(rank)), k))}
        return SearchResult(checkpoints, adapters, ordered)

    def _common(self, q: np.ndarray, words: str | None, top_k: int, pool: int) -> dict:
        return {"q": "[" + ",".join(f"{x:.7g}" for x in q.tolist()) + "]", "words": plain_text(words or ""),
                "space": self.space,
                "lexical_candidates": self.lexical_candidates, "pool": int(pool),
                "k": int(top_k), "describer": self.describer, "prompt_version": self.prompt_version,
                **FALLBACK_DESCRIBER}

    @staticmethod
    def _hit(row: dict, checkpoint: Hit | None) -> Hit:
        why = [f"similarity {row['similarity']:.3f}", f"{row['downloads']:,} downloads"]
        if row["matched_words"]:
            why.append("words: " + ", ".join(row["matched_words"]))
        if checkpoint is not None:
            why.append(f"{row['co_usage_images']} images with {checkpoint.name}" if row["co_usage_images"]
                       else f"compatible with {checkpoint.base_model_family}")
        return Hit(model_id=row["model_id"], version_id=row["version_id"], name=row["name"],
                   version_name=row["version_name"], type=row["type"], kind=row["kind"],
                   base_model=row["base_model"], base_model_family=row["base_model_family"],
                   score=round(float(row["score"]), 6), similarity=round(float(row["similarity"]), 6),
                   downloads=int(row["downloads"]), co_usage_images=int(row["co_usage_images"]),
                   trigger_words=trigger_words_or_trained(row["trigger_words"], row["trained_words"]),
                   recommended_weight=row["recommended_weight"], download_url=row["download_url"],
                   why="; ".join(why), file_name=row["file_name"], description=row["description"], sha256=row["sha256"],
                   lexical=round(float(row["lexical"]), 6), matched_words=list(row["matched_words"]))


def _set_session(conn: Connection, name: str, value: str) -> None:
    """SET a session setting, remembered on the pooled DBAPI connection so that a search pays the round trip only
    when the value changes (the pool keeps session settings across checkouts)."""
    known = conn.connection.info.setdefault("zoo_settings", {})
    if known.get(name) != value:
        conn.execute(text("SELECT set_config(:name, :value, false)"), {"name": name, "value": value})
        known[name] = value
