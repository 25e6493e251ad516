"""`zoo generate` and `zoo edit`: images made with the zoo's checkpoints and LoRAs (the studio)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Column
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, print_json, usage_error
from config import Settings


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


@contextmanager
def download_progress(console: Console, *, enabled: bool) -> Iterator:
    """A listener for the studio's downloads (file name, bytes done, total) that draws one progress bar per file on
    `console`: bytes done of the total, the rate and the time left. Nothing is drawn until a download starts, and
    nothing at all (no listener) when not `enabled` (--json: stdout stays one JSON document, stderr quiet)."""
    if not enabled:
        yield None
        return
    def fixed(width: int) -> Column:  # the numbers stay whole on a narrow console; the file name gives way
        return Column(no_wrap=True, min_width=width, justify="right")

    name = Column(no_wrap=True, overflow="ellipsis", max_width=max(20, console.width - 50))
    bars = Progress(TextColumn("downloading {task.description}", table_column=name),
                    BarColumn(bar_width=12), DownloadColumn(table_column=fixed(15)),
                    TransferSpeedColumn(table_column=fixed(11)), TimeRemainingColumn(table_column=fixed(7)),
                    console=console)
    tasks: dict[str, int] = {}

    def listener(label: str, done: int, total: int | None) -> None:
        if not tasks:
            bars.start()
        if label not in tasks:
            tasks[label] = bars.add_task(label, total=total)
        bars.update(tasks[label], completed=done, total=total)

    try:
        yield listener
    finally:
        if tasks:
            bars.stop()


def _studio_call(call) -> tuple[int, object]:
    """Run a studio request; map its failures to exit codes (2 bad input, 1 download or generation failed)."""
    from crawlers.downloads import (
        DownloadEarlyAccess,
        DownloadError,
        DownloadHashMismatch,
    )
    from serving.studio.catalogue import StudioError
    from serving.studio.model_files import GenerationError

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
    from serving.studio.generate import save_png
    from serving.studio.png_info import sidecar_path

    path = save_png(result, out, sidecar)
    if as_json:
        print_json({"out": str(path), "sidecar": str(sidecar_path(path)), "seed": result.seed,
                    "parameters": result.parameters_text, **sidecar})
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


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from serving.studio.studio import default_studio

    if not args.prompt.strip():
        return usage_error("the prompt is empty")
    if not _size_ok(args):
        return EXIT_USAGE
    try:
        adapters = _parse_adapters(args.adapters) if args.adapters is not None else None
    except ValueError as error:
        return usage_error(str(error))
    studio = default_studio(settings)
    with download_progress(err, enabled=not args.json) as listener:
        code, answer = _studio_call(lambda: studio.generate(
            args.prompt, checkpoint_version_id=args.checkpoint, adapters=adapters, negative_prompt=args.negative,
            steps=args.steps, seed=args.seed, cfg=args.cfg, width=args.width, height=args.height,
            scheduler=args.scheduler, rerank=args.rerank, on_download=listener))
    if code == EXIT_OK:
        _report_image(*answer, Path(args.out), args.json)
    return code


def cmd_edit(args: argparse.Namespace, settings: Settings) -> int:
    from serving.search import load_query_image
    from serving.studio.studio import default_studio

    if not args.instruction.strip():
        return usage_error("the instruction is empty")
    if not _size_ok(args):
        return EXIT_USAGE
    try:
        if not Path(args.image).is_file():
            raise ValueError(f"image not found: {args.image}")
        image = load_query_image(args.image)
        reference = load_query_image(args.reference) if args.reference else None
    except ValueError as error:
        return usage_error(str(error))
    studio = default_studio(settings)
    with download_progress(err, enabled=not args.json) as listener:
        code, answer = _studio_call(lambda: studio.edit(
            image, args.instruction, reference=reference, negative_prompt=args.negative, steps=args.steps,
            seed=args.seed, cfg=args.cfg, scheduler=args.scheduler, strength=args.strength, on_download=listener))
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


def register(commands: argparse._SubParsersAction) -> None:
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
