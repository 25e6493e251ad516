"""Verbs on the catalogue: `zoo refresh`, `zoo demo`, `zoo summary` (`zoo db` is cli/database.py)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cli.output import EXIT_FAILED, EXIT_OK, err, out, print_json, table, usage_error
from config import Settings

DEMO_TYPES = ["Checkpoint", "LORA"]
DEMO_BASE_MODELS = ["SD 1.5"]
DEMO_PAGES = 2
DEMO_PROMPTS = (
    "a watercolor painting of a lighthouse at dusk",
    "anime girl in a knitted winter sweater",
    "pixel art castle on a hill",
    "portrait photo of an old fisherman, soft window light",
    "ink wash mountains in the mist",
)


class _ProgressHandler(logging.Handler):
    """Shows the pipeline's progress messages on one live status line (stderr)."""

    def __init__(self, status) -> None:
        super().__init__(logging.INFO)
        self.status = status

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            err.print(f"[yellow]{message}[/yellow]")
        self.status.update(f"[bold]{message}")


def _run_with_progress(settings: Settings, title: str, **refresh_args):
    """The whole refresh, recorded in the persistent Dagster instance (settings.dagster_home)."""
    from orchestration.run import persistent_instance, refresh_zoo

    with err.status(title) as status:
        handler = _ProgressHandler(status)
        watched = [logging.getLogger(name) for name in ("zoo.progress", "crawlers")]
        for logger in watched:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        try:
            with persistent_instance(settings) as instance:
                return refresh_zoo(settings, instance=instance, **refresh_args)
        finally:
            for logger in watched:
                logger.removeHandler(handler)


def _report_run(result, as_json: bool) -> int:
    materialized, checks, failures = result.materializations(), result.checks(), result.failures()
    if as_json:
        print_json({"success": result.success, "assets": materialized, "checks": checks, "failures": failures})
    else:
        for check, passed in sorted(checks.items()):
            err.print(f"check {check}: {'[green]passed' if passed else '[red]FAILED'}")
        for failure in failures:
            err.print(f"[red]failed[/red] {failure}")
    return EXIT_OK if result.success else EXIT_FAILED


def _print_summary(settings: Settings, as_json: bool) -> None:
    from db.engine import get_engine
    from db.summary import catalogue_summary, table_counts, top_links

    with get_engine(settings).connect() as conn:
        summary, counts, links = catalogue_summary(conn), table_counts(conn), top_links(conn)
    if as_json:
        print_json({"by_type": summary, "tables": counts, "top_links": links})
        return
    console = out(110)
    columns = ["type", "models", "nsfw_models", "deleted_models", "versions", "served_versions", "images", "links"]
    console.print(table("The zoo", columns, ([row[c] for c in columns] for row in summary), right=columns[1:]))
    console.print(", ".join(f"{name}: {n}" for name, n in counts.items()))
    if links:
        columns = ["adapter_name", "checkpoint_name", "image_count", "avg_weight"]
        console.print(table("Most co-used adapter / checkpoint pairs", columns,
                            ([row[c] for c in columns] for row in links)))


def cmd_refresh(args: argparse.Namespace, settings: Settings) -> int:
    if args.dump and not Path(args.dump).is_file():
        return usage_error(f"dump not found: {args.dump}")
    if args.max_pages is not None and args.max_pages < 1:
        return usage_error("--max-pages must be at least 1")
    result = _run_with_progress(
        settings, "refreshing the zoo", dump_path=args.dump, types=args.types, base_models=args.base_models,
        max_pages=args.max_pages, workers=args.workers)
    code = _report_run(result, args.json)
    if not args.json and code == EXIT_OK:
        _print_summary(settings, False)
    return code


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from cli.search import print_answers
    from crawlers.civitai_client import CivitaiClient
    from crawlers.dump import snapshot_path
    from serving.search import open_retriever

    if CivitaiClient(settings.civitai_base_url).reachable():
        err.print(f"Civitai reachable at {settings.civitai_base_url}: crawling {DEMO_PAGES} pages of "
                  f"{'/'.join(DEMO_BASE_MODELS)} {' and '.join(DEMO_TYPES)}")
        refresh = {"types": DEMO_TYPES, "base_models": DEMO_BASE_MODELS, "max_pages": DEMO_PAGES}
    else:
        err.print(f"Civitai not reachable at {settings.civitai_base_url}: using the shipped snapshot {snapshot_path()}")
        refresh = {"dump_path": str(snapshot_path())}
    result = _run_with_progress(settings, "building the zoo", workers=args.workers, **refresh)
    code = _report_run(result, False)
    if code == EXIT_OK:
        _print_summary(settings, False)
        retriever = open_retriever(settings)
        print_answers([(prompt, retriever.search(prompt, top_k=5)) for prompt in DEMO_PROMPTS])
    return code


def cmd_summary(args: argparse.Namespace, settings: Settings) -> int:
    from db.engine import get_engine
    from db.migrate import ensure_migrated

    ensure_migrated(get_engine(settings))
    _print_summary(settings, args.json)
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    refresh = commands.add_parser("refresh", help="crawl Civitai (or read a dump) into the catalogue")
    refresh.add_argument("--dump", help="read this JSON Lines dump of /models items (.jsonl or .jsonl.gz) instead")
    refresh.add_argument("--types", nargs="+", help="model types to crawl (default: all the zoo serves)")
    refresh.add_argument("--base-models", nargs="+", help="base models to crawl, e.g. 'SD 1.5' 'SDXL 1.0'")
    refresh.add_argument("--max-pages", type=int, help="stop after this many listing pages")
    refresh.add_argument("--workers", type=int, default=2, help="processes that normalise in parallel")
    refresh.add_argument("--json", action="store_true", help="print the run's result as JSON")
    refresh.set_defaults(handler=cmd_refresh)

    demo = commands.add_parser("demo", help="build a small zoo (live Civitai, else the shipped snapshot) and show it")
    demo.add_argument("--workers", type=int, default=2)
    demo.set_defaults(handler=cmd_demo)

    summary = commands.add_parser("summary", help="what is in the zoo")
    summary.add_argument("--json", action="store_true")
    summary.set_defaults(handler=cmd_summary)
