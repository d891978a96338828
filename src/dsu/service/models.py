"""Which models the service offers: the models directory's installed ones plus the built-ins.

A request's model is resolved here at submission, so an unknown or not-yet-pulled name is
refused at once rather than failing in the queue. Nothing here loads weights; the
directory is re-read on each call, so models pulled while the server runs show up. Its
errors are written for HTTP clients: no paths of the server, no ``dsu`` commands.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from dsu.errors import ModelNotFound
from dsu.registry import Registry
from dsu.registry.entry import ModelEntry
from dsu.registry.registry import FALLBACK_MODEL


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

    def registry(self) -> Registry:
        """The models directory as it is now (re-read on each call)."""
        return Registry.open(self.models_dir)

    @property
    def root(self) -> Path:
        """The models directory (the registry's default when none was given)."""
        return self.registry().root

    def models(self) -> list[ModelInfo]:
        """Every model whose files are present, and the built-ins."""
        registry = self.registry()
        return [_info(entry) for entry in registry.entries() if not registry.missing_files(entry)]

    def default(self) -> str:
        """The name used when a request gives none."""
        return self.configured_default or self.registry().default or FALLBACK_MODEL

    def resolve(self, name: str | None) -> ModelInfo:
        """The model ``name`` (None: the default) names, by its canonical name.

        Raises:
            ModelNotFound: no such model here, or its files are not all present.
        """
        registry = self.registry()
        wanted = name or self.default()
        try:
            return _info(registry.resolve(wanted))
        except ModelNotFound:
            pass
        offered = [n for m in self.models() for n in (m.name, *m.aliases)]
        close = difflib.get_close_matches(wanted, offered, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelNotFound(
            f"model {wanted!r} is not available on this server{hint} "
            "(GET /models lists the models it can run)"
        )


def _info(entry: ModelEntry) -> ModelInfo:
    return ModelInfo(
        name=entry.name,
        arch=entry.arch,
        stems=tuple(entry.stems),
        description=entry.description,
        aliases=tuple(entry.aliases),
        license=entry.license,
    )
