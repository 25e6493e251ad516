"""The in-memory search index of one embedding space: built from the catalogue by the retrieval_index asset, stored
as a generation in Postgres (db/search_index_store.py), loaded by serving processes.

It holds, for every served version with a vector in the space, in arrays ordered by (role, family, version id), so
that every role and every family's adapters are one contiguous slice of rows (searched without copies): the vector,
the
role (checkpoint or adapter), base-model family, model type, base model, downloads, licence flags, the words of its
embedded text as postings (lexeme -> versions and term frequencies, Postgres' own stemming of the stored text),
the per-role document frequencies BM25 needs, the adapter -> checkpoint co-usage links, and what a hit shows (names,
trigger words, description, file), and an ANN graph of every (role, family) slice large enough to need one
(embedding/ann.py). Everything a query needs is in memory; Postgres stays the source of truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import orjson
from pgvector.psycopg import register_vector
from psycopg.rows import dict_row
from sqlalchemy import Connection, Engine, text

from db.copy import driver_cursor
from db.descriptions import DescriberKey, preferred_description_rows
from db.search_index_store import StoredIndex, load_index, save_index
from embedding.ann import MIN_ROWS as ANN_MIN_ROWS
from embedding.ann import build_graph
from embedding.describe_card import trigger_words_or_trained
from embedding.example_prompts import example_prompt_arrays

ROLES = ("checkpoint", "adapter")  # how vectors are indexed (embeddings.role)
SERVING_ROLES = ("checkpoint", "content", "enhancer", "negative")  # what search answers a version as (version_roles)
FORMAT_VERSION = 5
GRAPH = "graph:"  # blob name prefix of a slice's ANN graph
DETAIL_FIELDS = ("name", "version_name", "type", "kind", "base_model", "base_model_family", "trigger_words",
                 "recommended_weight", "download_url", "file_name", "sha256", "description")

# age_days counts back from the catalogue's newest version (not the clock), so one catalogue always indexes alike
# and a ranker trained on an old dump reads ages as a live zoo's.
# The versions an index holds: served, with a vector in the space, within the serving limits (content level,
# real-person likeness). Every query below reads the same rows.
_HELD = """
    FROM embeddings e JOIN served_model_versions s ON s.version_id = e.version_id JOIN models m ON m.id = s.model_id
    WHERE e.space = %(space)s AND coalesce(m.content_level, 1) <= %(max_level)s
      AND (%(likeness)s OR NOT coalesce(m.poi, false))"""
_VERSIONS = f"""
    SELECT e.version_id, e.role, e.base_model_family, e.lexical_length, s.model_id, s.model_type, s.base_model,
           s.version_download_count AS downloads, s.allow_commercial_use, s.model_name, s.version_name,
           s.trained_words, s.download_url, s.primary_file_name, s.primary_file_sha256,
           coalesce(m.content_level, 1) AS content_level, coalesce(m.poi, false) AS likeness,
           (SELECT count(*) FROM images i WHERE i.version_id = e.version_id AND NOT i.nsfw) AS examples,
           (SELECT coalesce(extract(epoch FROM (SELECT max(coalesce(published_at, created_at)) FROM model_versions)
                                               - coalesce(v.published_at, v.created_at)) / 86400, 0)
            FROM model_versions v WHERE v.id = e.version_id) AS age_days,
           coalesce((SELECT r.role FROM version_roles r WHERE r.version_id = e.version_id),
                    CASE WHEN s.model_type = 'Checkpoint' THEN 'checkpoint' ELSE 'content' END) AS serving_role
    {_HELD} ORDER BY e.version_id"""
# Per lexeme, the versions whose text holds it and how often: tf = the positions Postgres kept for it.
_POSTINGS = f"""
    SELECT u.lexeme, array_agg(e.version_id ORDER BY e.version_id) AS versions,
           array_agg(array_length(u.positions, 1) ORDER BY e.version_id) AS tfs
    {_HELD.replace("WHERE", "CROSS JOIN LATERAL unnest(e.lexemes) u WHERE", 1)} GROUP BY u.lexeme ORDER BY u.lexeme"""
_VECTORS = f"SELECT e.emb {_HELD} ORDER BY e.version_id"


@dataclass(frozen=True)
class ServingLimits:
    """What the index may hold beyond the NSFW rule (which no setting lifts): models up to a content level (1 PG,
    2 PG-13, 4 R, 8 X, 16 XXX), and real-person likenesses only when allowed."""

    max_content_level: int = 2
    likeness: bool = False

    def params(self) -> dict:
        return {"max_level": self.max_content_level, "likeness": self.likeness}


@dataclass
class SearchIndex:
    """One space's index, as arrays. Rows index every per-version array, ordered by (role, family, version id);
    vectors are float32 [rows, dim]; postings hold rows ascending within each term."""

    space: str
    generation: int
    arrays: dict[str, np.ndarray]
    codes: dict[str, list[str]]  # names behind the categorical arrays (family, model_type, base_model, licence)
    details: dict[str, list]  # DETAIL_FIELDS -> one value per row
    lexemes: list[str]  # term id -> lexeme
    settings: dict = field(default_factory=dict)
    graphs: dict[str, bytes] = field(default_factory=dict)  # "role:family" -> serialised ANN graph of that slice
    prompt_lexemes: list[str] = field(default_factory=list)  # term id -> lexeme of the example-prompt collection

    # ---- per-version arrays
    @property
    def version_ids(self) -> np.ndarray:
        return self.arrays["version_id"]

    @property
    def vectors(self) -> np.ndarray:
        return self.arrays["vectors"]

    def __len__(self) -> int:
        return len(self.version_ids)

    @cached_property
    def row_of(self) -> dict[int, int]:
        return {int(v): i for i, v in enumerate(self.version_ids.tolist())}

    @cached_property
    def term_of(self) -> dict[str, int]:
        return {lexeme: i for i, lexeme in enumerate(self.lexemes)}

    def segments(self) -> list[tuple[str, str, slice]]:
        """(role, family, rows) of every non-empty (role, family) slice, in row order."""
        found = []
        for role in ROLES:
            for family in self.codes["family"]:
                rows = self.segment(role, family)
                if rows.stop > rows.start:
                    found.append((role, family, rows))
        return found

    @cached_property
    def _segment_keys(self) -> np.ndarray:
        return self.arrays["role"].astype(np.int64) * 65536 + self.arrays["family"]

    def segment(self, role: str, family: str | None = None) -> slice:
        """The rows of a role, or of one family within it (an empty slice when there are none)."""
        role_code, keys = ROLES.index(role), self._segment_keys
        if family is None:
            low, high = role_code * 65536, role_code * 65536 + 65535
        else:
            code = self.code("family", family)
            if code < 0:
                return slice(0, 0)
            low = high = role_code * 65536 + code
        start, end = np.searchsorted(keys, [low, high + 1])
        return slice(int(start), int(end))

    def code(self, kind: str, name: str | None) -> int:
        """The code of a categorical value (-1 when the index has none such)."""
        names = self.codes[kind]
        return names.index(name) if name in names else -1

    # ---- postings
    def postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, term frequencies) of the versions whose text holds term `term`, rows ascending."""
        start, end = self.arrays["term_start"][term], self.arrays["term_start"][term + 1]
        return self.arrays["posting_rows"][start:end], self.arrays["posting_tf"][start:end]

    # ---- co-usage
    def co_used(self, checkpoint_version_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(adapter version ids, images) used with a checkpoint, most images first (ties: lower id first)."""
        checkpoints = self.arrays["link_checkpoint"]
        start, end = np.searchsorted(checkpoints, [checkpoint_version_id, checkpoint_version_id + 1])
        return self.arrays["link_adapter"][start:end], self.arrays["link_images"][start:end]


def build_search_index(conn: Connection, space: str, dimension: int, describer: DescriberKey,
                       limits: ServingLimits = ServingLimits()) -> SearchIndex:
    """The space's index from the catalogue as it is now (served versions within `limits`; vectors of
    `dimension`)."""
    params = {"space": space, **limits.params()}
    rows = conn.connection.driver_connection.cursor(row_factory=dict_row).execute(_VERSIONS, params).fetchall()
    ids = np.array([row["version_id"] for row in rows], dtype=np.int64)  # ascending: the queries' order
    descriptions = preferred_description_rows(conn, describer)
    codes = {"family": _distinct(row["base_model_family"] for row in rows),
             "model_type": _distinct(row["model_type"] for row in rows),
             "base_model": _distinct(row["base_model"] or "" for row in rows),
             "licence": _distinct(use for row in rows for use in (row["allow_commercial_use"] or ())),
             "serving_role": list(SERVING_ROLES)}
    arrays = {
        "version_id": ids,
        "model_id": np.array([row["model_id"] for row in rows], dtype=np.int64),
        "role": np.array([ROLES.index(row["role"]) for row in rows], dtype=np.int8),
        "family": _coded(codes["family"], (row["base_model_family"] for row in rows)),
        "model_type": _coded(codes["model_type"], (row["model_type"] for row in rows)),
        "base_model": _coded(codes["base_model"], (row["base_model"] or "" for row in rows)),
        "licence": np.array([sum(1 << codes["licence"].index(use) for use in set(row["allow_commercial_use"] or ()))
                             for row in rows], dtype=np.int64),
        "downloads": np.array([row["downloads"] or 0 for row in rows], dtype=np.int64),
        "lexical_length": np.array([row["lexical_length"] for row in rows], dtype=np.int32),
        "content_level": np.array([row["content_level"] for row in rows], dtype=np.int16),
        "examples": np.array([row["examples"] for row in rows], dtype=np.int32),
        "age_days": np.array([float(row["age_days"]) for row in rows], dtype=np.float32),
        "likeness": np.array([row["likeness"] for row in rows], dtype=bool),
        "serving_role": _coded(codes["serving_role"], (row["serving_role"] for row in rows)),
        "vectors": _vectors(conn, params, len(ids), dimension),
    }
    order = np.lexsort((ids, arrays["family"], arrays["role"]))  # rows by (role, family, version id)
    arrays = {name: array[order] for name, array in arrays.items()}
    rows = [rows[i] for i in order.tolist()]
    lexemes, postings = _postings(conn, params, ids, order)
    arrays.update(postings)
    arrays.update(_links(conn))
    prompt_lexemes, prompt_arrays = example_prompt_arrays(
        conn, {int(version): row for row, version in enumerate(arrays["version_id"].tolist())})
    arrays.update(prompt_arrays)
    details = {name: [] for name in DETAIL_FIELDS}
    for row in rows:
        found = descriptions.get(row["version_id"], {})
        kind = found.get("kind") or ("checkpoint" if row["model_type"] == "Checkpoint" else "other")
        for name, value in (("name", row["model_name"]), ("version_name", row["version_name"]),
                            ("type", row["model_type"]), ("kind", kind), ("base_model", row["base_model"]),
                            ("base_model_family", row["base_model_family"]),
                            ("trigger_words", trigger_words_or_trained(found.get("trigger_words"),
                                                                       row["trained_words"])),
                            ("recommended_weight", found.get("recommended_weight")),
                            ("download_url", row["download_url"]), ("file_name", row["primary_file_name"]),
                            ("sha256", row["primary_file_sha256"]), ("description", found.get("text") or "")):
            details[name].append(value)
    codes["kind"] = _distinct(details["kind"])
    arrays["kind"] = _coded(codes["kind"], details["kind"])
    settings = {"format": FORMAT_VERSION, "describer": describer.describer, "prompt_version": describer.prompt_version,
                "max_content_level": limits.max_content_level, "likeness": limits.likeness}
    index = SearchIndex(space, 0, arrays, codes, details, lexemes, settings, prompt_lexemes=prompt_lexemes)
    index.graphs = {f"{role}:{family}": build_graph(index.vectors[rows])
                    for role, family, rows in index.segments() if rows.stop - rows.start >= ANN_MIN_ROWS}
    return index


def store_search_index(conn: Connection, index: SearchIndex) -> int:
    """Write the index as a new generation (the caller's transaction commits it and its notification)."""
    blobs = {"details": orjson.dumps(index.details), "lexemes": orjson.dumps(index.lexemes),
             "codes": orjson.dumps(index.codes), "prompt_lexemes": orjson.dumps(index.prompt_lexemes),
             **{GRAPH + key: graph for key, graph in index.graphs.items()}}
    index.generation = save_index(conn, index.space, index.arrays, blobs, index.settings, len(index))
    return index.generation


def load_search_index(engine: Engine, space: str, generation: int | None = None) -> SearchIndex | None:
    """The newest stored generation of the space's index (or `generation`), None when none was built."""
    stored: StoredIndex | None = load_index(engine, space, generation)
    if stored is None:
        return None
    if stored.manifest["settings"].get("format") != FORMAT_VERSION:
        return None
    return SearchIndex(space, stored.generation, stored.arrays, orjson.loads(stored.blobs["codes"]),
                       orjson.loads(stored.blobs["details"]), orjson.loads(stored.blobs["lexemes"]),
                       stored.manifest["settings"],
                       {name[len(GRAPH):]: blob for name, blob in stored.blobs.items() if name.startswith(GRAPH)},
                       orjson.loads(stored.blobs["prompt_lexemes"]))


def _distinct(values) -> list[str]:
    return sorted({value for value in values if value is not None})


def _coded(names: Sequence[str], values) -> np.ndarray:
    lookup = {name: code for code, name in enumerate(names)}
    return np.array([lookup[value] for value in values], dtype=np.int16)


def _vectors(conn: Connection, params: dict, count: int, dimension: int) -> np.ndarray:
    """The served versions' vectors in version-id order, float32 [count, dim]."""
    register_vector(conn.connection.driver_connection)
    cursor = driver_cursor(conn)
    cursor.execute(_VECTORS, params, binary=True)
    vectors = [np.asarray(row[0].to_numpy(), dtype=np.float32) for row in cursor]
    if len(vectors) != count:
        raise RuntimeError(f"space {params['space']}: {len(vectors)} vectors for {count} versions "
                           "(changed while building?)")
    return np.stack(vectors) if vectors else np.zeros((0, dimension), dtype=np.float32)


def _postings(conn: Connection, params: dict, ids: np.ndarray,
              order: np.ndarray) -> tuple[list[str], dict[str, np.ndarray]]:
    """Lexemes (sorted) and CSR postings: term_start[t]..term_start[t+1] index posting_rows/posting_tf, rows
    ascending within a term. `ids` are the version ids ascending, `order` the rows' permutation of them."""
    row_of_sorted = np.empty(len(order), dtype=np.int32)
    row_of_sorted[order] = np.arange(len(order), dtype=np.int32)
    cursor = driver_cursor(conn)
    cursor.execute(_POSTINGS, params, binary=True)
    lexemes, starts, rows, tfs = [], [0], [], []
    for lexeme, versions, frequencies in cursor:
        term_rows = row_of_sorted[np.searchsorted(ids, np.asarray(versions, dtype=np.int64))]
        ascending = np.argsort(term_rows, kind="stable")
        lexemes.append(lexeme)
        rows.append(term_rows[ascending])
        tfs.append(np.asarray(frequencies, dtype=np.int16)[ascending])
        starts.append(starts[-1] + len(versions))
    return lexemes, {
        "term_start": np.asarray(starts, dtype=np.int64),
        "posting_rows": np.concatenate(rows) if rows else np.zeros(0, dtype=np.int32),
        "posting_tf": np.concatenate(tfs) if tfs else np.zeros(0, dtype=np.int16),
    }


def _links(conn: Connection) -> dict[str, np.ndarray]:
    """Adapter -> checkpoint co-usage, sorted by checkpoint, then most images first."""
    rows = conn.execute(text(
        "SELECT checkpoint_version_id, adapter_version_id, image_count FROM adapter_checkpoint_links "
        "ORDER BY checkpoint_version_id, image_count DESC, adapter_version_id")).all()
    return {"link_checkpoint": np.array([r[0] for r in rows], dtype=np.int64),
            "link_adapter": np.array([r[1] for r in rows], dtype=np.int64),
            "link_images": np.array([r[2] for r in rows], dtype=np.int32)}
