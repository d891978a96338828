"""Registry configuration: the one place that reads the environment for models and downloads.

``DSU_MODELS_DIR``       the models directory (default ``~/.cache/dsu/models``)
``DSU_MODELS_MIRROR``    a local directory or base URL holding model files by name, used by
                         ``pull`` instead of the official URLs (air-gapped sites)
``DSU_DOWNLOAD_TIMEOUT`` seconds a download may wait for the server at any one point (30)
``DSU_DOWNLOAD_RETRIES`` attempts per file; an interrupted transfer resumes (3)
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from dsu.errors import BadRequest


@dataclass(frozen=True)
class RegistrySettings:
    """Settings of the registry, built once from the environment by :func:`settings`."""

    models_dir: Path
    mirror: str | None = None
    timeout: float = 30.0
    retries: int = 3

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> RegistrySettings:
        """Build the settings from ``env`` (default: ``os.environ``)."""
        env = dict(os.environ if env is None else env)
        models_dir = env.get("DSU_MODELS_DIR") or str(Path.home() / ".cache" / "dsu" / "models")
        return cls(
            models_dir=Path(models_dir).expanduser(),
            mirror=env.get("DSU_MODELS_MIRROR") or None,
            timeout=_positive(env, "DSU_DOWNLOAD_TIMEOUT", 30.0, float),
            retries=int(_positive(env, "DSU_DOWNLOAD_RETRIES", 3, int)),
        )


def _positive(env: dict[str, str], key: str, default: float, kind: type) -> float:
    raw = env.get(key)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise BadRequest(f"{key}={raw!r} is not a number") from None
    if value <= 0:
        raise BadRequest(f"{key}={raw!r} must be positive")
    return value


@functools.lru_cache(maxsize=1)
def settings() -> RegistrySettings:
    """The process-wide settings, read from the environment on first use."""
    return RegistrySettings.from_env()


def default_models_dir() -> Path:
    """``DSU_MODELS_DIR`` if set, else ``~/.cache/dsu/models``."""
    return settings().models_dir
