"""`zoo search`: the checkpoints and adapters that serve a prompt, one query or a JSON Lines file of them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.output import EXIT_OK, err, out, print_json, table, usage_error
from config import Settings
from config.settings import CONTENT_LEVELS
from serving.search import Filters, SearchResult
from serving.search.requests import COMMERCIAL_USES, MAX_QUERY_CHARS

HIT_COLUMNS = ("name", "version", "role", "base_model", "score", "weight", "trigger_words", "why")


def _filters(args: argparse.Namespace) -> Filters:
    return Filters(base_models=tuple(args.base_models or ()), types=tuple(args.types or ()),
                   commercial_use=args.commercial_use, min_downloads=args.min_downloads,
                   max_content_level=CONTENT_LEVELS[args.max_content_level] if args.max_content_level else None)


def _as_json(result: SearchResult) -> dict:
    return {"checkpoints": [h.as_dict() for h in result.checkpoints],
            "adapters": [h.as_dict() for h in result.adapters],
            "negatives": [h.as_dict() for h in result.negatives]}


def print_answers(answers: list[tuple[str, SearchResult]]) -> None:
    """One row per prompt: the top checkpoint, the top three adapters, why the first one."""
    rows = [(prompt,
             result.checkpoints[0].name if result.checkpoints else "-",
             ", ".join(f"{hit.name} ({hit.kind}, {hit.recommended_weight or 1:.2g})"
                       for hit in result.adapters[:3]) or "-",
             result.adapters[0].why if result.adapters else "-")
            for prompt, result in answers]
    out().print(table("Answers", ("prompt", "checkpoint", "adapters (kind, weight)", "why (top adapter)"), rows))


def _print_result(result: SearchResult) -> None:
    console = out()
    groups = [("Checkpoints", result.checkpoints),
              *((f"Adapters: {kind}", hits) for kind, hits in result.adapters_by_kind.items()),
              ("Negative embeddings (for the negative prompt)", result.negatives)]
    for title, hits in groups:
        if not hits:
            continue
        console.print(table(title, HIT_COLUMNS, (
            (hit.name, hit.version_name, hit.role, hit.base_model or "-", f"{hit.score:.3f}",
             f"{hit.recommended_weight:.2g}" if hit.recommended_weight is not None else "-",
             ", ".join(hit.trigger_words[:3]), hit.why) for hit in hits)))


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from serving.search import load_query_image, open_reranker, open_retriever, rerank_hits

    if not args.query and not args.image and not args.queries and args.for_checkpoint is None:
        return usage_error("give a prompt, --image PATH, --queries FILE or --for-checkpoint VERSION_ID")
    if args.top_k < 1 or args.checkpoints < 0:
        return usage_error("--top-k must be at least 1 and --checkpoints at least 0")
    if args.image and settings.image_encoder == "none":
        return usage_error(f"--image needs an image encoder; the {settings.preset} preset has none "
                           "(use ZOO_PRESET=full or ZOO_IMAGE_ENCODER=openclip)")
    try:
        image = load_query_image(args.image) if args.image else None
    except ValueError as error:
        return usage_error(str(error))
    retriever = open_retriever(settings)
    reranker = open_reranker(settings) if args.rerank else None
    if args.queries:
        return _search_many(retriever, reranker, Path(args.queries), args)
    if args.for_checkpoint is not None:
        return _for_checkpoint(retriever, reranker, args)
    result = retriever.search(args.query, image, top_k=args.top_k, top_checkpoints=args.checkpoints,
                              filters=_filters(args))
    if reranker is not None and args.query:
        result.adapters = rerank_hits(args.query, result.adapters, reranker)
    if args.json:
        print_json({"query": args.query, **_as_json(result)})
        return EXIT_OK
    _print_result(result)
    if not result.checkpoints and not result.adapters:
        err.print(_nothing_found(retriever, args))
    return EXIT_OK


def _for_checkpoint(retriever, reranker, args: argparse.Namespace) -> int:
    """Adapters for a checkpoint the user already has, ranked for the prompt (GET /v1/checkpoints/{id}/adapters)."""
    from serving.search import rerank_hits
    from serving.search.requests import BadRequest, adapters_for_checkpoint, check_query

    try:
        query = check_query(args.query)
        checkpoint, adapters, negatives = adapters_for_checkpoint(retriever, args.for_checkpoint, query,
                                                                  top_k=args.top_k, filters=_filters(args))
    except BadRequest as error:
        return usage_error(str(error))
    if reranker is not None and query:
        adapters = rerank_hits(query, adapters, reranker)
    result = SearchResult([], adapters, negatives)
    if args.json:
        print_json({"query": query, "adapters_for": checkpoint.as_dict(), **_as_json(result)})
        return EXIT_OK
    err.print(f"adapters for {checkpoint.name} ({checkpoint.version_name}, version {checkpoint.version_id})")
    _print_result(result)
    return EXIT_OK


def _nothing_found(retriever, args: argparse.Namespace) -> str:
    """Why a search found nothing: an empty zoo, or filters nothing in it passes (with what it does hold)."""
    index = retriever.search_engine.index
    if not len(index):
        return "the zoo has no vectors yet: run `zoo refresh` (or `zoo demo`) first"
    held = ", ".join(sorted(name for name in index.codes["base_model"] if name)[:12])
    return (f"nothing in the zoo passes these filters (the zoo holds base models: {held}; types: "
            f"{', '.join(index.codes['model_type'])})")


def _search_many(retriever, reranker, path: Path, args: argparse.Namespace) -> int:
    """JSON Lines in ({"qid", "query"}), one JSON line out per query. A line that is not UTF-8, not JSON, or has no
    query text gets an error line ({"qid", "error"}); the batch goes on."""
    from serving.search import rerank_hits

    if not path.is_file():
        return usage_error(f"queries file not found: {path}")
    filters = _filters(args)
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            qid = number
            try:
                item = json.loads(raw.decode("utf-8"))
                if isinstance(item, dict):
                    qid = item.get("qid", number)
                query = item.get("query") if isinstance(item, dict) else None
                if not isinstance(query, str) or not query.strip():
                    raise ValueError("no query text")
                query = query[:MAX_QUERY_CHARS]
                result = retriever.search(query, top_k=args.top_k, top_checkpoints=args.checkpoints, filters=filters)
                if reranker is not None:
                    result.adapters = rerank_hits(query, result.adapters, reranker)
                answer = {"qid": qid, **_as_json(result)}
            except (UnicodeDecodeError, ValueError) as error:  # JSONDecodeError is a ValueError
                answer = {"qid": qid, "error": f"line {number}: {type(error).__name__}: {error}"}
            print_json(answer)
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser("search", help="the checkpoints and adapters that serve a prompt (or an image)")
    search.add_argument("query", nargs="?", help="the prompt")
    search.add_argument("--image", help="an image to search by (the full preset embeds images)")
    search.add_argument("--queries", help="JSON Lines of {\"qid\": ..., \"query\": ...}; one JSON line out per query")
    search.add_argument("--top-k", type=int, default=10, help="adapters to return")
    search.add_argument("--checkpoints", type=int, default=3, help="checkpoints to return")
    search.add_argument("--for-checkpoint", type=int, metavar="VERSION_ID",
                        help="adapters for this checkpoint (one you already use), ranked for the prompt if given")
    search.add_argument("--base-models", nargs="+", help="only these base models, e.g. 'SD 1.5'")
    search.add_argument("--types", nargs="+", help="only these adapter types, e.g. LORA TextualInversion")
    search.add_argument("--commercial-use", choices=COMMERCIAL_USES, help="the licence must allow this use")
    search.add_argument("--min-downloads", type=int, default=0, help="only versions downloaded at least N times")
    search.add_argument("--max-content-level", choices=list(CONTENT_LEVELS),
                        help="only models up to this level (the server's ZOO_MAX_CONTENT_LEVEL is the most)")
    search.add_argument("--rerank", action="store_true",
                        help="rerank the adapters with SmolLM2 (tree rerank; hits gain rerank_score and "
                             "rerank_round). Off by default: on real prompts it lowers recall@10 and MRR "
                             "(bench/retrieval_quality.py --rerank; README, Benchmarks) and costs seconds a query")
    search.add_argument("--json", action="store_true")
    search.set_defaults(handler=cmd_search)
