"""``dsu serve``: the HTTP service (DESIGN §4) under uvicorn.

Settings come from the environment (:class:`dsu.service.settings.Settings`, the seed's
``PORT``/``HOST``/``DEMUCS_MODEL``/``SEPARATION_TIMEOUT`` included); a flag given here
overrides its variable. Heavy imports (FastAPI, torch) wait until the command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dsu.errors import DSUError
from dsu.service.settings import Settings

DESCRIPTION = """\
Serve the separation HTTP API: POST /separate-sync (base64 JSON or upload),
POST /separate-async (audio_url + webhook_url), GET/DELETE /jobs/{id}, GET /models,
GET /health, GET /metrics, OpenAPI at /docs. One separation at a time; the rest wait in a
durable SQLite queue in the data dir. Every DSU_* variable is listed in docs/deployment.md."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``dsu serve`` on the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP separation service",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(parser)
    parser.set_defaults(func=run)
    return parser


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="bind address (env HOST, default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=None, help="port (env PORT, default 8002)")
    parser.add_argument(
        "--model",
        default=None,
        help="default model (env DEMUCS_MODEL; default: the models "
        "directory's default, else center)",
    )
    parser.add_argument(
        "--models-dir", type=Path, default=None, help="models directory (env DSU_MODELS_DIR)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="job database and results (env DSU_DATA_DIR, default ~/.cache/dsu/service)",
    )
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--queue", default=None, choices=("local",), help="queue backend (env DSU_QUEUE)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The environment's settings with the given flags applied."""
    settings = Settings.from_env()
    overrides = {
        "host": args.host,
        "port": args.port,
        "default_model": args.model,
        "models_dir": args.models_dir,
        "data_dir": args.data_dir,
        "device": args.device,
        "queue": args.queue,
    }
    settings = dataclasses.replace(
        settings, **{k: v for k, v in overrides.items() if v is not None}
    )
    settings.validate()
    return settings


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from dsu.service.app import create_app

    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = settings_from_args(args)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        # The in-process worker owns the data dir: exactly one server process per dir.
        workers=1,
        proxy_headers=True,
        timeout_graceful_shutdown=15,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dsu.cli.serve`` / ``dsu serve`` without the main dispatcher."""
    parser = argparse.ArgumentParser(prog="dsu serve", description=DESCRIPTION)
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except DSUError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
