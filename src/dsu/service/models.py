"""Which models the service offers: the models directory's installed ones plus the built-ins.

A request's model is resolved here at submission, so an unknown or not-yet-pulled name is
refused at once rather than failing in the queue. Nothing here loads weights; the
directory is re-read on each call, so models pulled while the server runs show up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dsu.registry import Registry


@dataclass(frozen=True)
class ModelInfo:
    """A model as ``GET /models`` lists it (no server paths)."""

    name: str
    arch: str
    stems: tuple[str, ...]
    description: str = ""
    aliases: tuple[str, ...] = ()
    license: str | None = None


class ModelCatalog:
    """The models a service instance can run.

    Args:
        models_dir: the models directory; None = the registry's default.
        default: the model used when a request names none (``DEMUCS_MODEL``); None = the
            directory's default, else ``center``.
    """

    def __init__(self, models_dir: Path | None, default: str | None) -> None:
        self.models_dir = models_dir
        self.configured_default = default

    def _registry(self) -> Registry:
        return Registry.open(self.models_dir)

    def models(self) -> list[ModelInfo]:
        """Every model whose files are present, and the built-ins."""
        registry = self._registry()
        return [
            ModelInfo(
                name=entry.name,
                arch=entry.arch,
                stems=tuple(entry.stems),
                description=entry.description,
                aliases=tuple(entry.aliases),
                license=entry.license,
            )
            for entry in registry.entries()
            if not registry.missing_files(entry)
        ]

    def default(self) -> str:
        """The name used when a request gives none."""
        return self.configured_default or self._registry().default or "center"

    def resolve(self, name: str | None) -> str:
        """The canonical name for ``name`` (None: the default); raise ModelNotFound."""
        return self._registry().resolve(name or self.default()).name
