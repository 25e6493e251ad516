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
    from orchestration.run import refresh_zoo

    with err.status(title) as status:
        handler = _ProgressHandler(status)
        watched = [logging.getLogger(name) for name in ("zoo.progress", "crawlers")]
        for logger in watched:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        try:
            return refresh_zoo(**refresh_args)
        finally:
            for logger in watched:
                logger.removeHandler(handler)


def _report_run(result, as_json: bool) -> int:
    materialized, checks, failures = result.materializations(), result.checks(), result.failures()
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
        from serving.api import open_retriever

        retriever = open_retriever()
        _print_answers([(prompt, retriever.search(prompt, top_k=5)) for prompt in DEMO_PROMPTS])
    return code


DEMO_PROMPTS = (
    "a watercolor painting of a lighthouse at dusk",
    "anime girl in a knitted winter sweater",
    "pixel art castle on a hill",
    "portrait photo of an old fisherman, soft window light",
    "ink wash mountains in the mist",
)


def _filters(args: argparse.Namespace):
    from serving.retrieval import Filters

    return Filters(base_models=tuple(args.base_models or ()), types=tuple(args.types or ()),
                   commercial_use=args.commercial_use, min_downloads=args.min_downloads)


def _print_answers(answers: list[tuple[str, object]]) -> None:
    out = Console(width=None if sys.stdout.isatty() else 140)
    table = Table(title="Answers")
    for column in ("prompt", "checkpoint", "adapters (kind, weight)", "why (top adapter)"):
        table.add_column(column)
    for prompt, result in answers:
        checkpoint = result.checkpoints[0].name if result.checkpoints else "-"
        adapters = ", ".join(f"{hit.name} ({hit.kind}, {hit.recommended_weight or 1:.2g})"
                             for hit in result.adapters[:3]) or "-"
        table.add_row(prompt, checkpoint, adapters, result.adapters[0].why if result.adapters else "-")
    out.print(table)


def cmd_search(args: argparse.Namespace) -> int:
    from serving.api import load_query_image, open_retriever

    if not args.query and not args.image and not args.queries:
        err.print("[red]give a prompt, --image PATH, or --queries FILE")
        return EXIT_USAGE
    try:
        image = load_query_image(args.image) if args.image else None
    except ValueError as error:
        err.print(f"[red]{error}")
        return EXIT_USAGE
    retriever = open_retriever()
    filters = _filters(args)
    if args.queries:
        return _search_many(retriever, Path(args.queries), args, filters)
    result = retriever.search(args.query, image, top_k=args.top_k, top_checkpoints=args.checkpoints, filters=filters)
    if args.rerank and args.query:
        from serving.api import rerank_hits

        result.adapters = rerank_hits(args.query, result.adapters)
    if args.json:
        print(json.dumps({"query": args.query, "checkpoints": [h.as_dict() for h in result.checkpoints],
                          "adapters": [h.as_dict() for h in result.adapters]}, ensure_ascii=False))
        return EXIT_OK
    out = Console(width=None if sys.stdout.isatty() else 140)
    for title, hits in (("Checkpoints", result.checkpoints), *((f"Adapters: {k}", v) for k, v in
                                                               result.adapters_by_kind.items())):
        table = Table(title=title)
        for column in ("name", "version", "base model", "score", "weight", "trigger words", "why"):
            table.add_column(column)
        for hit in hits:
            table.add_row(hit.name, hit.version_name, hit.base_model or "-", f"{hit.score:.3f}",
                          f"{hit.recommended_weight:.2g}" if hit.recommended_weight is not None else "-",
                          ", ".join(hit.trigger_words[:3]), hit.why)
        out.print(table)
    if not result.checkpoints and not result.adapters:
        err.print("the zoo has no vectors yet: run `zoo refresh` (or `zoo demo`) first")
    return EXIT_OK


def _search_many(retriever, path: Path, args: argparse.Namespace, filters) -> int:
    """JSON Lines in ({"qid", "query"}), one JSON line out per query; a bad line gets an error line, not a crash."""
    if not path.is_file():
        err.print(f"[red]queries file not found: {path}")
        return EXIT_USAGE
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            qid = None
            try:
                item = json.loads(line)
                qid = item.get("qid", number) if isinstance(item, dict) else number
                query = item.get("query") if isinstance(item, dict) else None
                if not isinstance(query, str) or not query.strip():
                    raise ValueError("no query text")
                result = retriever.search(query[:4000], top_k=args.top_k, top_checkpoints=args.checkpoints,
                                          filters=filters)
                if args.rerank:
                    from serving.api import rerank_hits

                    result.adapters = rerank_hits(query[:4000], result.adapters)
                answer = {"qid": qid, "checkpoints": [h.as_dict() for h in result.checkpoints],
                          "adapters": [h.as_dict() for h in result.adapters]}
            except (ValueError, AttributeError) as error:
                answer = {"qid": qid if qid is not None else number, "error": f"line {number}: {error}"}
            print(json.dumps(answer, ensure_ascii=False), flush=True)
    return EXIT_OK


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


def _parse_adapters(value: str) -> list[tuple[int, float]]:
    """'ID:W,ID:W' -> [(id, weight), ...]; a bare ID takes weight 1."""
    pairs = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        version, _, weight = item.partition(":")
        try:
            pair = (int(version), float(weight) if weight else 1.0)
        except ValueError:
            raise ValueError(f"--adapters: {item!r} is not VERSION_ID:WEIGHT (e.g. 920011:0.7)") from None
        if pair[0] < 1 or not -4.0 <= pair[1] <= 4.0:
            raise ValueError(f"--adapters: {item!r} needs a positive version id and a weight in [-4, 4]")
        pairs.append(pair)
    if not pairs:
        raise ValueError("--adapters: give at least one VERSION_ID:WEIGHT")
    return pairs


def _studio_call(call) -> tuple[int, object]:
    """Run a studio request; map its failures to exit codes (2 bad input, 1 download or generation failed)."""
    from crawlers.downloads import (
        DownloadEarlyAccess,
        DownloadError,
        DownloadHashMismatch,
    )
    from serving.pipelines import GenerationError
    from serving.studio import StudioError

    try:
        return EXIT_OK, call()
    except (StudioError, ValueError) as error:  # bad ids, sizes, strengths, scheduler names
        err.print(f"[red]{error}")
        return EXIT_USAGE, None
    except DownloadHashMismatch as error:
        err.print(f"[red]download failed (hash mismatch):[/red] {error}")
    except DownloadEarlyAccess as error:
        err.print(f"[red]download failed (early access, HTTP 403):[/red] {error}")
    except DownloadError as error:
        err.print(f"[red]download failed{f' (HTTP {error.status})' if error.status else ''}:[/red] {error}")
    except GenerationError as error:
        err.print(f"[red]generation failed:[/red] {error}")
    except (RuntimeError, OSError) as error:
        err.print(f"[red]generation failed:[/red] {type(error).__name__}: {error}")
    return EXIT_FAILED, None


def _report_image(result, sidecar: dict, out: Path, as_json: bool) -> None:
    from serving.generate import save_png
    from serving.png_info import sidecar_path

    path = save_png(result, out, sidecar)
    if as_json:
        print(json.dumps({"out": str(path), "sidecar": str(sidecar_path(path)), "seed": result.seed,
                          "parameters": result.parameters_text, **sidecar}, ensure_ascii=False, default=str))
        return
    err.print(f"wrote {path} ({result.image.width}x{result.image.height}, seed {result.seed})")
    checkpoint = sidecar["checkpoint"]
    err.print(f"checkpoint: {checkpoint['name']} (version {checkpoint['version_id']})")
    for adapter in sidecar["adapters"]:
        err.print(f"adapter: {adapter['name']} (version {adapter['version_id']}, weight {adapter['weight']:g})")
    for note in sidecar.get("notes", []):
        err.print(f"[yellow]note:[/yellow] {note}")


def _size_ok(args: argparse.Namespace) -> bool:
    for name in ("width", "height"):
        value = getattr(args, name, None)
        if value is not None and (value < 8 or value % 8 or value > 2048):
            err.print(f"[red]--{name} must be a multiple of 8 between 8 and 2048, got {value}")
            return False
    if args.steps < 1 or args.steps > 200:
        err.print("[red]--steps must be between 1 and 200")
        return False
    return True


def cmd_generate(args: argparse.Namespace) -> int:
    from serving.studio import default_studio

    if not args.prompt.strip():
        err.print("[red]the prompt is empty")
        return EXIT_USAGE
    if not _size_ok(args):
        return EXIT_USAGE
    try:
        adapters = _parse_adapters(args.adapters) if args.adapters is not None else None
    except ValueError as error:
        err.print(f"[red]{error}")
        return EXIT_USAGE
    studio = default_studio(Settings.from_env())
    code, answer = _studio_call(lambda: studio.generate(
        args.prompt, checkpoint_version_id=args.checkpoint, adapters=adapters, negative_prompt=args.negative,
        steps=args.steps, seed=args.seed, cfg=args.cfg, width=args.width, height=args.height,
        scheduler=args.scheduler, rerank=args.rerank))
    if code == EXIT_OK:
        _report_image(*answer, Path(args.out), args.json)
    return code


def cmd_edit(args: argparse.Namespace) -> int:
    from serving.api import load_query_image
    from serving.studio import default_studio

    if not args.instruction.strip():
        err.print("[red]the instruction is empty")
        return EXIT_USAGE
    if not _size_ok(args):
        return EXIT_USAGE
    try:
        if not Path(args.image).is_file():
            raise ValueError(f"image not found: {args.image}")
        image = load_query_image(args.image)
        reference = load_query_image(args.reference) if args.reference else None
    except ValueError as error:
        err.print(f"[red]{error}")
        return EXIT_USAGE
    studio = default_studio(Settings.from_env())
    code, answer = _studio_call(lambda: studio.edit(
        image, args.instruction, reference=reference, negative_prompt=args.negative, steps=args.steps,
        seed=args.seed, cfg=args.cfg, scheduler=args.scheduler, strength=args.strength))
    if code == EXIT_OK:
        _report_image(*answer, Path(args.out), args.json)
    return code


def _image_options(command: argparse.ArgumentParser) -> None:
    """The options `generate` and `edit` share: where the image goes, sampling, the negative prompt."""
    command.add_argument("--out", required=True, help="the PNG to write (a .json sidecar goes beside it)")
    command.add_argument("--steps", type=int, default=25)
    command.add_argument("--seed", type=int, default=-1, help="-1 draws a random seed")
    command.add_argument("--cfg", type=float, default=7.0)
    command.add_argument("--negative", default="",
                         help="the negative prompt (A1111 syntax; textual inversions called by name are loaded)")
    command.add_argument("--scheduler", default="dpm++_2m_karras")
    command.add_argument("--json", action="store_true")


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

    search = commands.add_parser("search", help="the checkpoints and adapters that serve a prompt (or an image)")
    search.add_argument("query", nargs="?", help="the prompt")
    search.add_argument("--image", help="an image to search by (the full preset embeds images)")
    search.add_argument("--queries", help="JSON Lines of {\"qid\": ..., \"query\": ...}; one JSON line out per query")
    search.add_argument("--top-k", type=int, default=10, help="adapters to return")
    search.add_argument("--checkpoints", type=int, default=3, help="checkpoints to return")
    search.add_argument("--base-models", nargs="+", help="only these base models, e.g. 'SD 1.5'")
    search.add_argument("--types", nargs="+", help="only these adapter types, e.g. LORA TextualInversion")
    search.add_argument("--commercial-use", help="the licence must allow this use: Image, Rent, RentCivit or Sell")
    search.add_argument("--min-downloads", type=int, default=0, help="only versions downloaded at least N times")
    search.add_argument("--rerank", action="store_true",
                        help="rerank the adapters with SmolLM2 (tree rerank; hits gain rerank_score and rerank_round)")
    search.add_argument("--json", action="store_true")
    search.set_defaults(handler=cmd_search)

    summary = commands.add_parser("summary", help="what is in the zoo")
    summary.add_argument("--json", action="store_true")
    summary.set_defaults(handler=cmd_summary)

    generate = commands.add_parser("generate", help="generate an image with the zoo's checkpoint and LoRAs for a prompt")
    generate.add_argument("prompt")
    _image_options(generate)
    generate.add_argument("--checkpoint", type=int, help="use this checkpoint version id instead of retrieving one")
    generate.add_argument("--adapters", help="use these adapters instead of retrieving them: VERSION_ID:WEIGHT,...")
    generate.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=False,
                          help="rerank retrieved adapters with SmolLM2 (off by default; --no-rerank)")
    generate.add_argument("--width", type=int, default=512)
    generate.add_argument("--height", type=int, default=512)
    generate.set_defaults(handler=cmd_generate)

    edit = commands.add_parser("edit", help="edit an image as an instruction says (inpaint, img2img)")
    edit.add_argument("instruction")
    edit.add_argument("--image", required=True, help="the image to edit")
    _image_options(edit)
    edit.add_argument("--reference", help="a style reference image (style-transfer instructions)")
    edit.add_argument("--strength", type=float, help="denoising strength (default by edit mode)")
    edit.set_defaults(handler=cmd_edit)

    db = commands.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade", "check"])
    db.set_defaults(handler=cmd_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "max_pages", None) is not None and args.max_pages < 1:
        err.print("[red]--max-pages must be at least 1")
        return EXIT_USAGE
    if getattr(args, "top_k", 1) < 1 or getattr(args, "checkpoints", 1) < 0:
        err.print("[red]--top-k must be at least 1 and --checkpoints at least 0")
        return EXIT_USAGE
    try:
        Settings.from_env()
        return args.handler(args)
    except SettingsError as error:
        err.print(f"[red]configuration error:[/red] {error}")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
