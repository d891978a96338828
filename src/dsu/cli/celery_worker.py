"""``dsu celery-worker``: a worker of the ``celery`` queue backend (docs/deployment.md).

It reads the same settings as ``dsu serve`` (the environment, then these flags): the
Redis URL, the shared data dir, the models dir, device and precision. Run one per device,
on as many machines as needed; each keeps its models loaded between jobs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dsu.cli.serve import (
    ServiceNotInstalled,
    check_service_installed,
    configure_logging,
    env_settings,
    missing_modules,
)

# Import names of the packages the `celery` extra adds (pyproject.toml).
CELERY_MODULES = ("celery", "redis", "kombu")

DESCRIPTION = """\
Run a Celery worker for `dsu serve --queue celery`: it takes job ids from Redis, runs one
separation at a time on its device with its models kept warm, and records the results in
the Redis job store and the shared data dir (DSU_REDIS_URL, DSU_DATA_DIR)."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``dsu celery-worker`` on the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "celery-worker",
        help="run a worker of the Celery queue backend",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--redis-url", default=None, help="job store and broker (env DSU_REDIS_URL)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the data dir shared with the API (env DSU_DATA_DIR)",
    )
    parser.add_argument(
        "--models-dir", type=Path, default=None, help="models directory (env DSU_MODELS_DIR)"
    )
    parser.add_argument("--model", default=None, help="model loaded at start (env DEMUCS_MODEL)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default=None, help="fp32, fp16 (GPU) or bf16")
    parser.add_argument(
        "--name", default=None, help="unique worker name (env DSU_WORKER_NAME, default host:pid)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    parser.set_defaults(func=run)
    return parser


def check_celery_installed() -> None:
    """Raise ServiceNotInstalled, naming what is missing, unless the celery extra imports."""
    check_service_installed()
    missing = missing_modules(CELERY_MODULES)
    if missing:
        raise ServiceNotInstalled(
            f"the celery queue needs the celery extra, and {', '.join(missing)} is not "
            "installed: pip install 'dsu[celery]'"
        )


def run(args: argparse.Namespace) -> int:
    check_celery_installed()
    settings = env_settings(
        {
            "queue": "celery",
            "redis_url": args.redis_url,
            "data_dir": args.data_dir,
            "models_dir": args.models_dir,
            "default_model": args.model,
            "device": args.device,
            "precision": args.precision,
            "worker_name": args.name,
        }
    )
    configure_logging(args.log_level)
    from dsu.service.celery_worker import CeleryWorker

    CeleryWorker(settings).run(args.log_level)
    return 0
