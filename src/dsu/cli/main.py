"""``dsu``: dispatch to the subcommand modules.

Only the module of the subcommand being run is imported, and none of them imports torch
at import time, so ``dsu worker`` answers ``ready`` before heavy libraries load.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dsu import __version__
from dsu.errors import DSUError

SUBCOMMANDS = {
    "separate": "dsu.cli.separate",
    "models": "dsu.cli.models",
    "worker": "dsu.cli.worker",
    "serve": "dsu.cli.serve",
    "eval": "dsu.cli.eval",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, or just ``only`` (faster start-up)."""
    parser = argparse.ArgumentParser(
        prog="dsu", description="DSU: music source separation with every open model family."
    )
    parser.add_argument("--version", action="version", version=f"dsu {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    only = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except DSUError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
