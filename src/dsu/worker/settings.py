"""A worker's configuration: one typed object, built once from the command line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dsu.archs.families import known_archs
from dsu.engine.options import BACKENDS, DEFAULT_BACKEND, DEFAULT_PRECISION
from dsu.errors import BadRequest
from dsu.worker.device import check_device_name


@dataclass(frozen=True)
class WorkerSettings:
    """How one worker process runs; every value is checked here, before ``ready``.

    Attributes:
        models_dir: the models directory; None uses the library default
            (``DSU_MODELS_DIR`` or ``~/.cache/dsu/models``).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, as requested.
        archs: the families this worker serves (``list_models`` and loading are restricted
            to them); None serves every family.
        max_loaded_models: models kept warm at once; the least recently used is unloaded.
        memory_budget_mb: unload least recently used models while the loaded ones cost more
            than this many MiB (RSS plus GPU memory they added); None for no budget.
        allowed_roots: resolved directories inputs and outputs must lie in; empty allows
            every path (desktop use).
        precision: ``fp32``, ``fp16`` or ``bf16``.
        backend: one of :data:`dsu.engine.options.BACKENDS`.
        progress_interval: least seconds between two progress events of a request.
    """

    models_dir: Path | None = None
    device: str = "auto"
    archs: frozenset[str] | None = None
    max_loaded_models: int = 2
    memory_budget_mb: float | None = None
    allowed_roots: tuple[Path, ...] = ()
    precision: str = DEFAULT_PRECISION
    backend: str = DEFAULT_BACKEND
    progress_interval: float = 0.25

    def __post_init__(self) -> None:
        check_device_name(self.device)
        if self.backend not in BACKENDS:
            raise BadRequest(
                f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        unknown = sorted((self.archs or frozenset()) - set(known_archs()))
        if unknown:
            raise BadRequest(
                f"--arch {','.join(unknown)}: no such model family "
                f"(known: {', '.join(known_archs())})"
            )
        if self.max_loaded_models < 1:
            raise BadRequest("--max-loaded-models must be at least 1")
        if self.memory_budget_mb is not None and self.memory_budget_mb <= 0:
            raise BadRequest("--memory-budget must be a positive number of MiB")
        for root in self.allowed_roots:
            if not root.is_dir():
                raise BadRequest(f"--allowed-root {root} is not a directory")

    @property
    def memory_budget_bytes(self) -> int | None:
        return None if self.memory_budget_mb is None else int(self.memory_budget_mb * 2**20)

    def serves(self, arch: str) -> bool:
        """Whether models of family ``arch`` belong to this worker."""
        return self.archs is None or arch in self.archs


def parse_archs(values: Iterable[str] | None) -> frozenset[str] | None:
    """``--arch a,b --arch c`` as a set; None when not given."""
    if not values:
        return None
    archs = frozenset(part.strip() for value in values for part in value.split(",") if part.strip())
    return archs or None


def resolve_roots(values: Iterable[str] | None) -> tuple[Path, ...]:
    """``--allowed-root`` directories, resolved once (symlinks included)."""
    return tuple(Path(value).expanduser().resolve() for value in values or ())
