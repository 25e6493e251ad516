"""The example images' prompts as a searchable collection of the search index: for a query, the prompts nearest it
vote for the checkpoint and the adapters their images used (prompt-neighbour votes).

Every distinct prompt of an SFW example image counts once, with the versions its images name (resolved references)
and the galleries it was posted to. Prompts are indexed by their words (Postgres' English stemming of the prompt
without its `<lora:...>` tags, as the versions' texts are): ~100k short texts, indexed in seconds, where encoding them
with MiniLM on these CPUs would take longer than the whole refresh (README: Benchmarks).
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import Connection

from db.copy import driver_cursor

# Distinct SFW prompts: the galleries their images were posted to and the versions those images name (any role,
# the gallery itself included: an image in a LoRA's gallery was made with it).
_PROMPTS = """
    SELECT i.prompt, array_agg(DISTINCT i.version_id) AS galleries,
           array_agg(DISTINCT r.resolved_version_id) FILTER (WHERE r.resolved_version_id IS NOT NULL) AS versions
    FROM images i LEFT JOIN image_resources r ON r.image_id = i.id AND r.version_id = i.version_id
    WHERE NOT i.nsfw AND i.prompt IS NOT NULL AND length(i.prompt) BETWEEN 3 AND 4000
    GROUP BY i.prompt ORDER BY i.prompt"""
_WORDS = """
    SELECT u.lexeme, array_agg(p.n ORDER BY p.n), array_agg(array_length(u.positions, 1) ORDER BY p.n)
    FROM unnest(%(prompts)s::text[]) WITH ORDINALITY AS p(prompt, n)
    CROSS JOIN LATERAL unnest(to_tsvector('english', regexp_replace(p.prompt, '<[^<>]*>', ' ', 'g'))) u
    GROUP BY u.lexeme ORDER BY u.lexeme"""


def example_prompt_arrays(conn: Connection, row_of: dict[int, int]) -> tuple[list[str], dict[str, np.ndarray]]:
    """(lexemes, arrays) of the prompt collection, every array named `prompt_*`: per prompt its word count, the rows
    (of the index, by `row_of` version id -> row) its images name, the gallery version ids; and CSR postings of its
    words. Versions the index does not hold (unserved, beyond the serving limits) are left out of the votes."""
    rows = driver_cursor(conn).execute(_PROMPTS).fetchall()
    prompts = [row[0] for row in rows]
    voted, voted_start, galleries, gallery_start = [], [0], [], [0]
    for _, gallery_ids, version_ids in rows:
        held = sorted({row_of[v] for v in version_ids or () if v in row_of})
        voted.extend(held)
        voted_start.append(len(voted))
        galleries.extend(sorted(gallery_ids))
        gallery_start.append(len(galleries))
    lexemes, starts, members, frequencies = [], [0], [], []
    for lexeme, numbers, tfs in driver_cursor(conn).execute(_WORDS, {"prompts": prompts}, binary=True):
        lexemes.append(lexeme)
        members.append(np.asarray(numbers, dtype=np.int32) - 1)  # ORDINALITY counts from 1
        frequencies.append(np.asarray(tfs, dtype=np.int16))
        starts.append(starts[-1] + len(numbers))
    postings = np.concatenate(members) if members else np.zeros(0, dtype=np.int32)
    tf = np.concatenate(frequencies) if frequencies else np.zeros(0, dtype=np.int16)
    length = np.bincount(postings, weights=tf, minlength=len(prompts)).astype(np.int32)
    return lexemes, {
        "prompt_length": length,
        "prompt_vote_start": np.asarray(voted_start, dtype=np.int64),
        "prompt_votes": np.asarray(voted, dtype=np.int32),
        "prompt_gallery_start": np.asarray(gallery_start, dtype=np.int64),
        "prompt_galleries": np.asarray(galleries, dtype=np.int64),
        "prompt_term_start": np.asarray(starts, dtype=np.int64),
        "prompt_posting_rows": postings,
        "prompt_posting_tf": tf,
    }
