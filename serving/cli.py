"""The `zoo` command line: refresh the catalogue, inspect it, migrate the database, run the demo.

Exit codes: 0 success, 1 the run failed (its asset or check failures are printed), 2 bad usage or settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from config import Settings, SettingsError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEMO_TYPES = ["Checkpoint", "LORA"]
DEMO_BASE_MODELS = ["SD 1.5"]
DEMO_PAGES = 2

err = Console(stderr=True)


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


def _run_with_progress(title: str, **refresh_args):
    from orchestration.run import run_refresh

    with err.status(title) as status:
        handler = _ProgressHandler(status)
        watched = [logging.getLogger(name) for name in ("zoo.progress", "crawlers")]
        for logger in watched:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        try:
            return run_refresh(**refresh_args)
        finally:
            for logger in watched:
                logger.removeHandler(handler)


def _report_run(result, as_json: bool) -> int:
    materialized = {
        event.asset_key.to_user_string(): {key: value.value for key, value in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }
    checks = {event.check_name: event.passed for event in result.get_asset_check_evaluations()}
    failures = [
        f"{event.step_key}: {event.event_specific_data.error.message.strip()}"
        for event in result.all_events if event.is_step_failure
    ]
    if as_json:
        print(json.dumps({"success": result.success, "assets": materialized, "checks": checks, "failures": failures},
                         default=str))
    else:
        for check, passed in sorted(checks.items()):
            err.print(f"check {check}: {'[green]passed' if passed else '[red]FAILED'}")
        for failure in failures:
            err.print(f"[red]failed[/red] {failure}")
    return EXIT_OK if result.success else EXIT_FAILED


def _print_summary(as_json: bool) -> None:
    from db.engine import get_engine
    from db.summary import catalogue_summary, table_counts, top_links

    with get_engine().connect() as conn:
        summary, counts, links = catalogue_summary(conn), table_counts(conn), top_links(conn)
    if as_json:
        print(json.dumps({"by_type": summary, "tables": counts, "top_links": links}, default=str))
        return
    out = Console(width=None if sys.stdout.isatty() else 110)
    table = Table(title="The zoo")
    columns = ["type", "models", "nsfw_models", "deleted_models", "versions", "served_versions", "images", "links"]
    for column in columns:
        table.add_column(column.replace("_", " "), justify="left" if column == "type" else "right")
    for row in summary:
        table.add_row(*(str(row[c]) for c in columns))
    out.print(table)
    out.print(", ".join(f"{name}: {n}" for name, n in counts.items()))
    if links:
        top = Table(title="Most co-used adapter / checkpoint pairs")
        for column in ("adapter_name", "checkpoint_name", "image_count", "avg_weight"):
            top.add_column(column.replace("_", " "))
        for row in links:
            top.add_row(*(str(row[c]) for c in ("adapter_name", "checkpoint_name", "image_count", "avg_weight")))
        out.print(top)


def cmd_refresh(args: argparse.Namespace) -> int:
    if args.dump and not Path(args.dump).is_file():
        err.print(f"[red]dump not found: {args.dump}")
        return EXIT_USAGE
    result = _run_with_progress(
        "refreshing the zoo", dump_path=args.dump, types=args.types, base_models=args.base_models,
        max_pages=args.max_pages, workers=args.workers)
    code = _report_run(result, args.json)
    if not args.json and code == EXIT_OK:
        _print_summary(False)
    return code


def snapshot_path() -> Path:
    """The small hand-written Civitai-format snapshot the project ships for machines without Civitai."""
    return Path(str(resources.files("crawlers") / "snapshot" / "sample_models.jsonl"))


def cmd_demo(args: argparse.Namespace) -> int:
    from crawlers.civitai_client import CivitaiClient

    settings = Settings.from_env()
    if CivitaiClient(settings.civitai_base_url).reachable():
        err.print(f"Civitai reachable at {settings.civitai_base_url}: crawling {DEMO_PAGES} pages of "
                  f"{'/'.join(DEMO_BASE_MODELS)} {' and '.join(DEMO_TYPES)}")
        refresh = {"types": DEMO_TYPES, "base_models": DEMO_BASE_MODELS, "max_pages": DEMO_PAGES}
    else:
        err.print(f"Civitai not reachable at {settings.civitai_base_url}: using the shipped snapshot {snapshot_path()}")
        refresh = {"dump_path": str(snapshot_path())}
    result = _run_with_progress("building the zoo", workers=args.workers, **refresh)
    code = _report_run(result, False)
    if code == EXIT_OK:
        _print_summary(False)
    return code


def cmd_summary(args: argparse.Namespace) -> int:
    from db.engine import get_engine
    from db.migrate import ensure_migrated

    ensure_migrated(get_engine())
    _print_summary(args.json)
    return EXIT_OK


def cmd_db(args: argparse.Namespace) -> int:
    from db import migrate
    from db.engine import get_engine

    engine = get_engine()
    if args.action == "upgrade":
        migrate.upgrade(engine)
        err.print("database schema is at head")
    else:
        migrate.check(engine)
        err.print("models and migrations agree")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

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

    db = commands.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade", "check"])
    db.set_defaults(handler=cmd_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "max_pages", None) is not None and args.max_pages < 1:
        err.print("[red]--max-pages must be at least 1")
        return EXIT_USAGE
    try:
        Settings.from_env()
        return args.handler(args)
    except SettingsError as error:
        err.print(f"[red]configuration error:[/red] {error}")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
