"""The service's configuration: one typed object, read from the environment once.

The seed's variables keep their names and defaults (``PORT``, ``HOST``, ``DEMUCS_MODEL``,
``SEPARATION_TIMEOUT``); everything added by DSU is prefixed ``DSU_``. ``dsu serve``
flags override the environment (see :mod:`dsu.cli.serve`).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dsu.engine.options import DEFAULT_BACKEND, DEFAULT_PRECISION
from dsu.errors import BadRequest

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Queue backends: the embedded SQLite queue, or Celery workers with a Redis job store.
QUEUES = ("local", "celery")


class SettingsError(BadRequest):
    """An environment variable or flag has a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    """Every knob of ``dsu serve``.

    Attributes:
        host, port: where uvicorn listens (``HOST``, ``PORT``).
        default_model: model used when a request names none (``DEMUCS_MODEL``; None = the
            models dir's default, else ``center``).
        separation_timeout: seconds one separation may run before it is cancelled and the
            job fails (``SEPARATION_TIMEOUT``).
        models_dir: the models directory (``DSU_MODELS_DIR``; None = the API's default).
        data_dir: job database, uploads and results (``DSU_DATA_DIR``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (``DSU_DEVICE``).
        precision: ``fp32``, or ``fp16``/``bf16`` autocast; fp16 needs a GPU
            (``DSU_PRECISION``; the choices are :data:`dsu.engine.options.PRECISIONS`).
        backend: the runtime of the forward pass (``DSU_BACKEND``; the choices are
            :data:`dsu.engine.options.BACKENDS`, default ``auto``).
        max_loaded_models: models kept loaded between jobs, least recently used evicted
            first (``DSU_MAX_LOADED_MODELS``); above 1, ensembles and chains stop reloading
            their members for every job.
        memory_budget_mb: also evict while the loaded models cost more than this many MiB
            of RSS plus GPU memory (``DSU_MEMORY_BUDGET_MB``; unset or 0 = no budget).
        max_upload_bytes: largest audio file accepted, uploaded or fetched
            (``DSU_MAX_UPLOAD_MB``); request bodies may be 4/3 of it plus 1 MiB (base64).
        max_duration: longest decoded audio accepted, seconds (``DSU_MAX_DURATION``).
        max_queue: jobs queued or running at once before new ones get 429
            (``DSU_MAX_QUEUE``).
        max_attempts: runs of a job (a run ends early only if the server dies) before it is
            failed (``DSU_MAX_ATTEMPTS``).
        lease_seconds: how long a running job's lease lasts between heartbeats
            (``DSU_LEASE_SECONDS``).
        retention_hours: finished jobs and their files are removed after this long
            (``DSU_RETENTION_HOURS``).
        api_keys: accepted ``Authorization: Bearer`` keys; empty = no authentication
            (``DSU_API_KEYS``, comma separated). ``/``, ``/health``, ``/openapi.json`` and
            ``/docs`` stay open.
        webhook_secret: Standard Webhooks signing secret, ``whsec_<base64>``
            (``DSU_WEBHOOK_SECRET``; unset = generated once and kept in the data dir).
        webhook_attempts: deliveries tried before a webhook is given up
            (``DSU_WEBHOOK_ATTEMPTS``).
        webhook_backoff: seconds before the first retry; doubles each time
            (``DSU_WEBHOOK_BACKOFF``).
        webhook_timeout: seconds one delivery may take (``DSU_WEBHOOK_TIMEOUT``).
        webhook_concurrency: deliveries in flight at once, so that a slow receiver holds up
            only its own webhook (``DSU_WEBHOOK_CONCURRENCY``).
        webhook_inline_audio: also put each stem as base64 in the completion webhook, as
            the seed's first version did (``DSU_WEBHOOK_INLINE_AUDIO``).
        fetch_timeout: seconds an ``audio_url`` download may take in total
            (``DSU_FETCH_TIMEOUT``).
        body_timeout: seconds a client may take to send its request body
            (``DSU_BODY_TIMEOUT``).
        allow_private_urls: let ``audio_url``/``webhook_url`` reach loopback and private
            addresses (``DSU_ALLOW_PRIVATE_URLS``); cloud metadata stays refused.
        url_allowlist: networks reachable even though private (``DSU_URL_ALLOWLIST``, comma
            separated CIDRs), e.g. a webhook receiver on the operator's own network.
        public_url: base of the result links in responses and webhooks
            (``DSU_PUBLIC_URL``; unset = the base URL the client used).
        queue: queue backend (``DSU_QUEUE``, one of :data:`QUEUES`): ``local`` (SQLite +
            in-process worker) or ``celery`` (Redis job store, ``dsu celery-worker``
            processes, the data dir shared by the API and every worker).
        redis_url: the Redis of the ``celery`` backend: job store and broker
            (``DSU_REDIS_URL``).
        worker_name: this Celery worker's name in ``/health`` (``DSU_WORKER_NAME``; None =
            ``host:pid``). Names must be unique among running workers.
        worker_heartbeat: seconds between a Celery worker's heartbeats
            (``DSU_WORKER_HEARTBEAT``); a worker silent for three of them is gone.
    """

    host: str = "0.0.0.0"
    port: int = 8002
    default_model: str | None = None
    separation_timeout: float = 600.0
    models_dir: Path | None = None
    data_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "dsu" / "service")
    device: str = "auto"
    precision: str = DEFAULT_PRECISION
    backend: str = DEFAULT_BACKEND
    max_loaded_models: int = 1
    memory_budget_mb: float | None = None
    max_upload_bytes: int = 100 * 1024 * 1024
    max_duration: float = 1800.0
    max_queue: int = 16
    max_attempts: int = 3
    lease_seconds: float = 30.0
    retention_hours: float = 24.0
    api_keys: tuple[str, ...] = ()
    webhook_secret: str | None = None
    webhook_attempts: int = 8
    webhook_backoff: float = 2.0
    webhook_timeout: float = 10.0
    webhook_concurrency: int = 4
    webhook_inline_audio: bool = False
    fetch_timeout: float = 120.0
    body_timeout: float = 300.0
    allow_private_urls: bool = False
    url_allowlist: tuple[IPNetwork, ...] = ()
    public_url: str | None = None
    queue: str = "local"
    redis_url: str = "redis://127.0.0.1:6379/0"
    worker_name: str | None = None
    worker_heartbeat: float = 5.0

    @property
    def memory_budget_bytes(self) -> int | None:
        return None if self.memory_budget_mb is None else int(self.memory_budget_mb * 2**20)

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: a base64 upload of ``max_upload_bytes`` plus JSON room."""
        return self.max_upload_bytes * 4 // 3 + 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from ``env`` (default ``os.environ``); raise SettingsError."""
        env = os.environ if env is None else env
        r = _Reader(env)
        default = cls()
        settings = cls(
            host=r.text("HOST", default.host),
            port=r.integer("PORT", default.port, lo=1, hi=65535),
            default_model=r.text("DEMUCS_MODEL", None),
            separation_timeout=r.number("SEPARATION_TIMEOUT", default.separation_timeout),
            models_dir=r.path("DSU_MODELS_DIR", None),
            data_dir=r.path("DSU_DATA_DIR", default.data_dir),
            device=r.text("DSU_DEVICE", default.device),
            precision=r.text("DSU_PRECISION", default.precision),
            backend=r.text("DSU_BACKEND", default.backend),
            max_loaded_models=r.integer(
                "DSU_MAX_LOADED_MODELS", default.max_loaded_models, lo=1, hi=64
            ),
            memory_budget_mb=r.number("DSU_MEMORY_BUDGET_MB", 0.0) or None,
            max_upload_bytes=int(r.number("DSU_MAX_UPLOAD_MB", 100.0) * 1024 * 1024),
            max_duration=r.number("DSU_MAX_DURATION", default.max_duration),
            max_queue=r.integer("DSU_MAX_QUEUE", default.max_queue, lo=1),
            max_attempts=r.integer("DSU_MAX_ATTEMPTS", default.max_attempts, lo=1),
            lease_seconds=r.number("DSU_LEASE_SECONDS", default.lease_seconds),
            retention_hours=r.number("DSU_RETENTION_HOURS", default.retention_hours),
            api_keys=r.items("DSU_API_KEYS"),
            webhook_secret=r.text("DSU_WEBHOOK_SECRET", None),
            webhook_attempts=r.integer("DSU_WEBHOOK_ATTEMPTS", default.webhook_attempts, lo=1),
            webhook_backoff=r.number("DSU_WEBHOOK_BACKOFF", default.webhook_backoff),
            webhook_timeout=r.number("DSU_WEBHOOK_TIMEOUT", default.webhook_timeout),
            webhook_concurrency=r.integer(
                "DSU_WEBHOOK_CONCURRENCY", default.webhook_concurrency, lo=1, hi=64
            ),
            webhook_inline_audio=r.flag("DSU_WEBHOOK_INLINE_AUDIO", False),
            fetch_timeout=r.number("DSU_FETCH_TIMEOUT", default.fetch_timeout),
            body_timeout=r.number("DSU_BODY_TIMEOUT", default.body_timeout),
            allow_private_urls=r.flag("DSU_ALLOW_PRIVATE_URLS", False),
            url_allowlist=r.networks("DSU_URL_ALLOWLIST"),
            public_url=r.text("DSU_PUBLIC_URL", None),
            queue=r.text("DSU_QUEUE", default.queue) or default.queue,
            redis_url=r.text("DSU_REDIS_URL", default.redis_url) or default.redis_url,
            worker_name=r.text("DSU_WORKER_NAME", None),
            worker_heartbeat=r.number("DSU_WORKER_HEARTBEAT", default.worker_heartbeat),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise SettingsError for values that cannot work together."""
        if self.queue not in QUEUES:
            raise SettingsError(f"DSU_QUEUE={self.queue!r} is not a queue: use one of {QUEUES}")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(
                f"DSU_REDIS_URL={self.redis_url!r} is not a Redis URL (redis://host:port/db)"
            )
        # Imported here: the engine package loads torch, which settings must not need.
        from dsu.engine.options import BACKENDS, PRECISIONS

        if self.precision not in PRECISIONS:
            raise SettingsError(
                f"DSU_PRECISION={self.precision!r} is not a precision: use one of "
                f"{', '.join(PRECISIONS)}"
            )
        if self.backend not in BACKENDS:
            raise SettingsError(
                f"DSU_BACKEND={self.backend!r} is not a backend: use one of {', '.join(BACKENDS)}"
            )
        if self.max_upload_bytes <= 0:
            raise SettingsError("DSU_MAX_UPLOAD_MB must be positive")
        if self.memory_budget_mb is not None and self.memory_budget_mb < 0:
            raise SettingsError("DSU_MEMORY_BUDGET_MB must be positive (or 0 for no budget)")
        for name in (
            "separation_timeout",
            "max_duration",
            "lease_seconds",
            "fetch_timeout",
            "worker_heartbeat",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.retention_hours <= 0:
            raise SettingsError("DSU_RETENTION_HOURS must be positive")
        if self.webhook_secret is not None:
            body = self.webhook_secret.removeprefix("whsec_")
            try:
                key = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if not self.webhook_secret.startswith("whsec_") or len(key) < 16:
                raise SettingsError(
                    "DSU_WEBHOOK_SECRET must be 'whsec_' + base64 of at least 16 random bytes "
                    "(Standard Webhooks), e.g. whsec_$(openssl rand -base64 32)"
                )


class _Reader:
    """Typed access to environment variables, naming the variable in every error."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, default: str | None) -> str | None:
        value = self._raw(name)
        return default if value is None else value

    def path(self, name: str, default: Path | None) -> Path | None:
        value = self._raw(name)
        return default if value is None else Path(value).expanduser()

    def integer(self, name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {value!r}") from None
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            raise SettingsError(f"{name}={number} is out of range [{lo}, {hi}]")
        return number

    def number(self, name: str, default: float) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {value!r}") from None

    def flag(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name} must be 0/1, true/false, yes/no or on/off, got {value!r}")

    def items(self, name: str) -> tuple[str, ...]:
        value = self._raw(name)
        if value is None:
            return ()
        return tuple(item.strip() for item in value.split(",") if item.strip())

    def networks(self, name: str) -> tuple[IPNetwork, ...]:
        nets = []
        for item in self.items(name):
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise SettingsError(f"{name}: {item!r} is not an IP network") from None
        return tuple(nets)
