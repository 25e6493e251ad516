"""The `zoo` command line: refresh and inspect the catalogue, search it, generate and edit images with it.

Settings are read once here and handed to the verb, which passes down what each part needs. Exit codes: 0 success,
1 the run failed (its asset or check failures are printed), 2 bad usage or settings.
"""

from __future__ import annotations

import argparse
import sys

from cli import catalogue, search, studio
from cli.output import EXIT_USAGE, err
from config import Settings, SettingsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (catalogue, search, studio):
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args, Settings.from_env())
    except SettingsError as error:
        err.print(f"[red]configuration error:[/red] {error}")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
