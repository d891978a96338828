"""``dsu serve``: the HTTP service (DESIGN §4) under uvicorn.

Settings come from the environment (:class:`dsu.service.settings.Settings`, the seed's
``PORT``/``HOST``/``DEMUCS_MODEL``/``SEPARATION_TIMEOUT`` included); a flag given here
overrides its variable. Heavy imports (FastAPI, torch) wait until the command runs.

Everything that can stop the server from starting is checked before uvicorn runs, so it
ends with ``error: ...`` and exit status 2 rather than a traceback: the optional
packages of the ``service`` extra, the settings, and the data dir (writable, and not
held by another running server).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dsu.errors import DSUError
from dsu.service.settings import Settings

# Import names of the packages of the `service` extra (pyproject.toml).
SERVICE_MODULES = (
    "fastapi",
    "uvicorn",
    "multipart",
    "httpx",
    "httpcore",
    "standardwebhooks",
    "prometheus_client",
)


class ServiceNotInstalled(DSUError):
    """The optional packages the HTTP service needs are missing."""

    code = "bad_request"


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
        "--precision",
        default=None,
        help="fp32, fp16 (GPU) or bf16 (env DSU_PRECISION, default fp32)",
    )
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
        "precision": args.precision,
        "queue": args.queue,
    }
    settings = dataclasses.replace(
        settings, **{k: v for k, v in overrides.items() if v is not None}
    )
    settings.validate()
    return settings


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_service_installed() -> None:
    """Raise ServiceNotInstalled, naming what is missing, unless the service can import."""
    missing = [name for name in SERVICE_MODULES if not _installed(name)]
    if missing:
        raise ServiceNotInstalled(
            f"dsu serve needs the service extra, and {', '.join(missing)} "
            "is not installed: pip install 'dsu[service]'"
        )


def run(args: argparse.Namespace) -> int:
    check_service_installed()
    settings = settings_from_args(args)

    import uvicorn

    from dsu.service.app import create_app
    from dsu.service.datadir import claim_data_dir

    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Held until the process exits: uvicorn runs the app in this process.
    lock = claim_data_dir(settings.data_dir)
    app = create_app(settings, data_lock=lock)
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
