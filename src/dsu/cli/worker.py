"""``dsu worker``: serve the JSON-lines protocol (DESIGN §3) on stdin and stdout.

Kept free of heavy imports: the worker must print ``ready`` well before torch loads.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dsu.engine.options import BACKENDS, DEFAULT_BACKEND, DEFAULT_PRECISION, PRECISIONS
from dsu.errors import DSUError
from dsu.worker.device import DEVICE_NAMES

DESCRIPTION = """\
Serve DSU's JSON-lines protocol on stdin/stdout: one process, models kept warm.
Prints {"status": "ready", ...} first, then answers one JSON object per line:
ping, status, list_models, load_model, separate, unload_model, cancel, exit.
stdout carries protocol lines only; logs and warnings go to stderr."""


def configure(parser: argparse.ArgumentParser, *, arch_default: str | None = None) -> None:
    """Add the worker's options to ``parser`` (shared by ``dsu worker`` and the launchers)."""
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="models directory (default: $DSU_MODELS_DIR or ~/.cache/dsu/models)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help=f"{', '.join(DEVICE_NAMES)} (default: auto)",
    )
    parser.add_argument(
        "--arch",
        action="append",
        default=None,
        metavar="FAMILY[,FAMILY]",
        help="serve only models of these families (repeatable)"
        + (f"; default: {arch_default}" if arch_default else "; default: every family"),
    )
    parser.add_argument(
        "--precision",
        default=DEFAULT_PRECISION,
        choices=PRECISIONS,
        help=f"default: {DEFAULT_PRECISION}",
    )
    parser.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        choices=BACKENDS,
        help=f"runtime of the forward pass (default: {DEFAULT_BACKEND}: the fastest installed "
        "one the model and device allow)",
    )
    parser.add_argument(
        "--max-loaded-models",
        type=int,
        default=2,
        metavar="N",
        help="models kept warm at once; the least recently used is unloaded (default: 2)",
    )
    parser.add_argument(
        "--memory-budget",
        type=float,
        default=None,
        metavar="MB",
        help="unload least recently used models while loaded models use more than MB MiB",
    )
    parser.add_argument(
        "--allowed-root",
        action="append",
        default=None,
        metavar="DIR",
        help="inputs and outputs must resolve inside DIR (repeatable; default: anywhere)",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``dsu worker`` on the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "worker",
        help="serve the JSON-lines worker protocol on stdin/stdout",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, allowed_archs: frozenset[str] | None = None) -> int:
    """Run a worker until ``exit``, stdin EOF or SIGTERM, then end the process.

    Args:
        args: parsed options from :func:`configure`.
        allowed_archs: families a launcher restricts ``--arch`` to (None: any).

    The process ends with ``os._exit``: the background thread that warms up torch may
    still be importing it, and a normal interpreter shutdown would wait for (or race with)
    that import and then spend seconds tearing torch down, all after the protocol is done.
    """
    from dsu.registry.settings import default_models_dir
    from dsu.worker.server import run_worker
    from dsu.worker.settings import WorkerSettings, parse_archs, resolve_roots

    try:
        archs = parse_archs(args.arch)
        if allowed_archs is not None:
            archs = archs or allowed_archs
            outside = sorted(archs - allowed_archs)
            if outside:
                raise DSUError(
                    f"--arch {','.join(outside)}: not served by this launcher "
                    f"(families: {', '.join(sorted(allowed_archs))})"
                )
        settings = WorkerSettings(
            models_dir=args.models_dir or default_models_dir(),
            device=args.device,
            archs=archs,
            max_loaded_models=args.max_loaded_models,
            memory_budget_mb=args.memory_budget,
            allowed_roots=resolve_roots(args.allowed_root),
            precision=args.precision,
            backend=args.backend,
        )
    except DSUError as exc:
        print(f"dsu worker: {exc.message}", file=sys.stderr)
        return 2
    code = run_worker(settings)
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dsu.cli.worker [options]``: the worker without the main CLI."""
    parser = argparse.ArgumentParser(
        prog="dsu worker",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
