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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from dsu.errors import DSUError
from dsu.service.settings import QUEUES, Settings

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
durable SQLite queue in the data dir, or, with --queue celery, in Redis for any number of
`dsu celery-worker` processes. Every DSU_* variable is listed in docs/deployment.md."""


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
        "--backend",
        default=None,
        help="runtime of the forward pass: auto, torch or openvino (env DSU_BACKEND, default auto)",
    )
    parser.add_argument(
        "--queue",
        default=None,
        choices=QUEUES,
        help="queue backend: local (SQLite, in-process worker; the default) or celery "
        "(Redis at DSU_REDIS_URL, `dsu celery-worker` processes) (env DSU_QUEUE)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The environment's settings with the given flags applied."""
    return env_settings(
        {
            "host": args.host,
            "port": args.port,
            "default_model": args.model,
            "models_dir": args.models_dir,
            "data_dir": args.data_dir,
            "device": args.device,
            "precision": args.precision,
            "backend": args.backend,
            "queue": args.queue,
        }
    )


def env_settings(overrides: Mapping[str, object]) -> Settings:
    """The environment's settings with the ``overrides`` that are not None, validated.

    Raises:
        SettingsError: a value is out of range.
    """
    settings = dataclasses.replace(
        Settings.from_env(), **{k: v for k, v in overrides.items() if v is not None}
    )
    settings.validate()
    return settings


def configure_logging(level: str) -> None:
    """Log records of ``level`` and above to stderr, with time and logger name."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def missing_modules(names: Iterable[str]) -> list[str]:
    """The import names among ``names`` that cannot be imported here."""
    return [name for name in names if not _installed(name)]


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_service_installed() -> None:
    """Raise ServiceNotInstalled, naming what is missing, unless the service can import."""
    missing = missing_modules(SERVICE_MODULES)
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

    configure_logging(args.log_level)
    if settings.queue == "celery":
        from dsu.cli.celery_worker import check_celery_installed

        check_celery_installed()
        from dsu.service.redis_store import RedisJobStore

        RedisJobStore(settings.redis_url, retry_seconds=2.0).ping()
    # Held until the process exits: uvicorn runs the app in this process. The celery
    # backend shares the data dir with its workers (and other API processes).
    lock = claim_data_dir(settings.data_dir, exclusive=settings.queue == "local")
    app = create_app(settings, data_lock=lock)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        # The local backend's in-process worker owns the data dir: one process per dir.
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
