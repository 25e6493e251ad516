"""Agreement of serving.search.words (the in-process query terms) with Postgres' to_tsvector('english', word).

Reads up to N distinct example prompts of a Civitai /models dump (item['modelVersions'][*]['images'][*]['meta']
['prompt'], in file order), strips A1111 syntax (crawlers.a1111.plain_text) and splits them as the SQL query side
does ('[\\s,]+' with Postgres' \\s); each distinct word's lexemes are compared with `unnest(to_tsvector('english',
word))` on a throwaway embedded server (or the server of --database-url / DATABASE_URL; nothing is written to it).
Whole prompts are also compared with the SQL query side, (lexeme, word) in order. Prints the agreement rates, the
disagreeing words by frequency and the cost of query_terms (cold: caches cleared before each prompt; warm: as a
server sees repeated words); ends with one JSON line. Skips cleanly when the dump is absent.

    python bench/query_terms_agreement.py [dump] [--prompts 50000] [--whole 2000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DUMP = ROOT.parent / "shared" / "civitai" / "models-2023-07-04.jsonl.gz"


def read_prompts(dump: Path, limit: int) -> list[str]:
    """The first `limit` distinct prompts of the dump's example images."""
    seen: dict[str, None] = {}
    with gzip.open(dump, "rt", encoding="utf-8") if dump.suffix == ".gz" else dump.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            for version in item.get("modelVersions") or []:
                for image in version.get("images") or []:
                    meta = image.get("meta")
                    prompt = meta.get("prompt") if isinstance(meta, dict) else None
                    if isinstance(prompt, str) and prompt.strip():
                        seen.setdefault(prompt)
                        if len(seen) >= limit:
                            return list(seen)
    return list(seen)


def postgres_lexemes(conn, words: list[str]) -> dict[str, list[str]]:
    from sqlalchemy import text

    found: dict[str, list[str]] = {}
    for start in range(0, len(words), 5000):
        rows = conn.execute(text(
            "SELECT w, array(SELECT lexeme FROM unnest(to_tsvector('english', w))) "
            "FROM unnest(CAST(:words AS text[])) AS w"), {"words": words[start:start + 5000]})
        found.update({word: list(lexemes) for word, lexemes in rows})
    return found


def postgres_query_terms(conn, query: str) -> list[tuple[str, str]]:
    from sqlalchemy import text

    return [tuple(row) for row in conn.execute(text(
        r"SELECT l.lexeme, w.word FROM regexp_split_to_table(CAST(:words AS text), '[\s,]+') "
        "WITH ORDINALITY AS w(word, n) CROSS JOIN LATERAL unnest(to_tsvector('english', w.word)) "
        "WITH ORDINALITY AS l(lexeme, positions, weights, m) ORDER BY w.n, l.m"), {"words": query})]


def compare(url: str, prompts: list[str], whole: int) -> dict:
    from sqlalchemy import create_engine, text

    from crawlers.a1111 import plain_text
    from serving.search import words as terms

    plain = [plain_text(prompt) for prompt in prompts]
    frequency: collections.Counter[str] = collections.Counter()
    for query in plain:
        frequency.update(piece for piece in terms._SPLIT.split(query) if piece)
    vocabulary = list(frequency)
    engine = create_engine(url)
    with engine.connect() as conn:
        conn.execute(text("SET client_min_messages = warning"))
        started = time.perf_counter()
        expected = postgres_lexemes(conn, vocabulary)
        postgres_s = time.perf_counter() - started
        terms.clear_caches()
        started = time.perf_counter()
        mine = {word: list(terms.lexemes(word)) for word in vocabulary}
        python_s = time.perf_counter() - started
        wrong = sorted(((frequency[word], word, expected[word], mine[word]) for word in vocabulary
                        if mine[word] != expected[word]), reverse=True)
        sample = plain[:whole]
        whole_wrong = [query for query in sample if terms.query_terms(query) != postgres_query_terms(conn, query)]
    engine.dispose()
    occurrences = sum(frequency.values())
    print(f"{len(prompts)} prompts, {occurrences} words, {len(vocabulary)} distinct")
    print(f"distinct words agreeing: {len(vocabulary) - len(wrong)}/{len(vocabulary)}; "
          f"occurrences agreeing: {occurrences - sum(w[0] for w in wrong)}/{occurrences}")
    print(f"whole prompts agreeing with the SQL query side: {len(sample) - len(whole_wrong)}/{len(sample)}")
    for count, word, postgres, python in wrong[:40]:
        print(f"  {count:6}  {word!r}: postgres {postgres}, python {python}")
    for query in whole_wrong[:5]:
        print(f"  prompt differs: {query[:200]!r}")

    # Cost: each distinct word once with nothing cached, then prompts cold (caches cleared per prompt) and warm.
    words_in = [len([piece for piece in terms._SPLIT.split(query) if piece]) for query in plain]
    timed = plain[:5000]
    started = time.perf_counter()
    for query in timed:
        terms.clear_caches()
        terms.query_terms(query)
    cold_s = time.perf_counter() - started
    started = time.perf_counter()
    for query in timed:
        terms.query_terms(query)
    warm_s = time.perf_counter() - started
    timed_words = sum(words_in[:len(timed)])
    costs = {"distinct_word_us": round(python_s / len(vocabulary) * 1e6, 2),
             "postgres_distinct_word_us": round(postgres_s / len(vocabulary) * 1e6, 2),
             "prompt_cold_word_us": round(cold_s / timed_words * 1e6, 2),
             "prompt_warm_word_us": round(warm_s / timed_words * 1e6, 2)}
    print(f"cost: {costs['distinct_word_us']} µs a distinct word uncached (Postgres, batched in one statement: "
          f"{costs['postgres_distinct_word_us']} µs); prompts: {costs['prompt_cold_word_us']} µs a word cold, "
          f"{costs['prompt_warm_word_us']} µs warm")
    return {"bench": "query_terms", "prompts": len(prompts), "words": len(vocabulary), "occurrences": occurrences,
            "agreement": round((len(vocabulary) - len(wrong)) / max(1, len(vocabulary)), 6),
            "occurrence_agreement": round((occurrences - sum(w[0] for w in wrong)) / max(1, occurrences), 6),
            "whole_prompts": len(sample), "whole_prompt_agreement":
                round((len(sample) - len(whole_wrong)) / max(1, len(sample)), 6),
            "disagreeing": [word for _, word, _, _ in wrong[:20]], **costs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump", type=Path, nargs="?", default=DEFAULT_DUMP, help="JSON Lines dump of /models items")
    parser.add_argument("--prompts", type=int, default=50_000, help="how many distinct prompts to read")
    parser.add_argument("--whole", type=int, default=2_000, help="how many whole prompts to compare end to end")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="a Postgres server to compare with (default: a throwaway embedded one)")
    args = parser.parse_args()
    if not args.dump.is_file():
        print(f"skipped: dump {args.dump} not found")
        print(json.dumps({"bench": "query_terms", "skipped": f"missing {args.dump}"}))
        return
    prompts = read_prompts(args.dump, args.prompts)
    if args.database_url:
        from db.engine import url_or_embedded

        result = compare(url_or_embedded(args.database_url, Path(tempfile.gettempdir())), prompts, args.whole)
    else:
        from db.embedded import embedded_database_url

        # The server deletes its data when this process exits (not the folder: it is still running before that).
        folder = Path(tempfile.mkdtemp(prefix="zoo-query-terms-"))
        result = compare(embedded_database_url(folder / "data", throwaway=True), prompts, args.whole)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
