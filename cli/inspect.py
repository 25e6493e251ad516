"""`zoo lookup` and `zoo inspect`: what a file on disk is (by any hash kind or its name), and what an image was made
with (its A1111 parameters resolved to the zoo's versions). The HTTP API's /v1/lookup and /v1/inspect call the same
functions (serving/catalogue)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.output import EXIT_FAILED, EXIT_OK, err, out, print_json, table, usage_error
from config import Settings

SUMMARY_COLUMNS = ("version_id", "name", "version_name", "type", "base_model", "role", "civitai_url")


def cmd_lookup(args: argparse.Namespace, settings: Settings) -> int:
    from serving.catalogue import lookup_file, lookup_hash
    from serving.catalogue.lookup import is_hash
    from serving.search import open_retriever

    value = args.value.strip()
    if not value:
        return usage_error("give a hash or a file name")
    retriever = open_retriever(settings)
    as_hash = args.hash or (is_hash(value) and not args.file)
    try:
        matches = lookup_hash(retriever, settings, value) if as_hash else []
        if not matches and not args.hash:  # a hex-looking value may still be a file's name
            matches = lookup_file(retriever, settings, value)
    except ValueError as error:
        return usage_error(str(error))
    if args.json:
        print_json({"query": value, "matches": matches})
    elif matches:
        out().print(table("Versions holding this file", (*SUMMARY_COLUMNS, "matched"),
                          ([m[c] for c in (*SUMMARY_COLUMNS, "matched")] for m in matches)))
    if not matches:
        err.print(f"no served version has a file with this {'hash' if is_hash(value) else 'name'}: {value}")
        return EXIT_FAILED
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace, settings: Settings) -> int:
    from serving.catalogue import inspect_parameters
    from serving.catalogue.inspect import png_parameters
    from serving.search import open_retriever

    path = Path(args.image)
    if not path.is_file():
        return usage_error(f"file not found: {path}")
    try:
        data = path.read_bytes()
        text = data.decode("utf-8") if path.suffix.lower() == ".txt" else png_parameters(data)
        answer = inspect_parameters(open_retriever(settings), settings, text)
    except (ValueError, UnicodeDecodeError) as error:
        return usage_error(f"{path}: {error}")
    if args.json:
        print_json(answer)
        return EXIT_OK
    err.print(f"prompt: {answer['prompt']}")
    rows = [(item["role"], item["name"] or "-", item["hash"] or "-", item["weight"] if item["weight"] is not None
             else "-", item["status"], (item["version"] or {}).get("name", "-"),
             (item["version"] or {}).get("version_id", "-"))
            for group in ("checkpoints", "loras", "embeddings", "others") for item in answer[group]]
    out().print(table("Resources", ("role", "name", "hash", "weight", "status", "zoo name", "version"), rows))
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    lookup = commands.add_parser("lookup", help="which zoo version a file is, by any hash kind or its file name")
    lookup.add_argument("value", help="a hash (AutoV1/AutoV2/AutoV3/SHA256/CRC32/BLAKE3, any case) or a file name")
    kind = lookup.add_mutually_exclusive_group()
    kind.add_argument("--hash", action="store_true", help="read the value as a hash only")
    kind.add_argument("--file", action="store_true", help="read the value as a file name only")
    lookup.add_argument("--json", action="store_true")
    lookup.set_defaults(handler=cmd_lookup)

    inspect = commands.add_parser("inspect", help="the checkpoint, LoRAs and embeddings an image was made with")
    inspect.add_argument("image", help="a PNG with A1111 parameters (or a .txt holding them)")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(handler=cmd_inspect)
