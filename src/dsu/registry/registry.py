"""The registry of one models directory: names to :class:`ModelEntry`, plus the built-ins.

Opening never touches the network. A directory with ``models.json`` is read from it; one
without is scanned in memory (so a plain Demucs repo works as it is); a directory that
does not exist yet holds nothing but the built-in weight-free models, which always resolve.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dsu.errors import ModelNotFound, RegistryError
from dsu.registry.catalog import Catalog, CatalogEntry, builtin_catalog
from dsu.registry.entry import ModelEntry
from dsu.registry.manifest import MANIFEST, Manifest, parse_manifest, read_manifest
from dsu.registry.scan import Warn, scan
from dsu.registry.settings import default_models_dir
from dsu.registry.verify import ensure_checksums

FALLBACK_MODEL = "center"
"""The model used when neither a request nor the models directory names one: built in,
weight-free, so DSU separates something with zero downloads."""

BUILTIN: dict[str, ModelEntry] = {
    "center": ModelEntry(
        name="center",
        arch="center",
        stems=("vocals", "instrumental"),
        license="MIT",
        description="built in, no weights: centre-panned content (vocals) against the rest",
    ),
    "hpss": ModelEntry(
        name="hpss",
        arch="hpss",
        stems=("harmonic", "percussive"),
        license="MIT",
        description="built in, no weights: harmonic / percussive separation",
    ),
}

# Listing order of the statuses in ``Registry.listing``.
STATUSES = ("installed", "incomplete", "builtin", "available")


@dataclass(frozen=True)
class ModelInfo:
    """One line of ``dsu models list``.

    ``status``: ``installed`` (all files present), ``incomplete`` (listed in models.json,
    files missing), ``builtin`` (weight-free, always there) or ``available`` (in the
    catalog, not in this directory: ``dsu models pull NAME``). ``category``, ``size``
    (bytes, when every file's is known), ``unverified`` and ``config_url`` come from the
    catalog entry of that name, if any.
    """

    name: str
    arch: str
    stems: tuple[str, ...]
    status: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    default: bool = False
    requires: str | None = None
    license: str | None = None
    category: str | None = None
    size: int | None = None
    unverified: tuple[str, ...] = ()
    config_url: str | None = None
    sdr: dict[str, float] = field(default_factory=dict)

    @property
    def installed(self) -> bool:
        return self.status in ("installed", "builtin")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "stems": list(self.stems),
            "status": self.status,
            "aliases": list(self.aliases),
            "description": self.description,
            "default": self.default,
            "requires": self.requires,
            "license": self.license,
            "installed": self.installed,
            "category": self.category,
            "size": self.size,
            "sdr": dict(self.sdr),
            "config_url": self.config_url,
            "unverified": list(self.unverified),
        }


class Registry:
    """Models of one directory plus the built-ins. Build it with :meth:`open`."""

    def __init__(self, root: Path, manifest: Manifest | None, catalog: Catalog) -> None:
        self.root = root
        self._manifest = manifest
        self._catalog = catalog

    @classmethod
    def open(
        cls,
        models_dir: str | Path | None = None,
        *,
        catalog: Catalog | None = None,
        warn: Warn | None = None,
    ) -> Registry:
        """Open a models directory (``None``: ``DSU_MODELS_DIR`` or ``~/.cache/dsu/models``).

        Raises:
            RegistryError: the path is not a directory, or its ``models.json`` is invalid.
        """
        root = Path(models_dir).expanduser() if models_dir is not None else default_models_dir()
        root = root.absolute()
        catalog = catalog or builtin_catalog()
        if root.exists() and not root.is_dir():
            raise RegistryError(f"{root}: the models directory is not a directory")
        manifest = None
        if (root / MANIFEST).is_file():
            manifest = read_manifest(root, reserved=BUILTIN)
        elif root.is_dir():
            document = scan(root, catalog=catalog, warn=warn)
            manifest = parse_manifest(
                document, root, f"{root} (scanned: no {MANIFEST})", reserved=BUILTIN
            )
        return cls(root, manifest, catalog)

    @property
    def source(self) -> str:
        """What this registry was read from, for messages."""
        return self._manifest.source if self._manifest else f"{self.root} (absent)"

    @property
    def scanned(self) -> bool:
        """True when the directory has no ``models.json`` and was scanned instead."""
        return self._manifest is not None and not (self.root / MANIFEST).is_file()

    @property
    def default(self) -> str | None:
        """The directory's default model, or None (callers then use ``center``)."""
        return self._manifest.default if self._manifest else None

    def names(self) -> list[str]:
        """Every resolvable name (aliases excluded), sorted."""
        return sorted({*BUILTIN, *self._own()})

    def entries(self) -> list[ModelEntry]:
        """Every entry of the directory, then the built-ins."""
        own = self._own()
        return [own[n] for n in sorted(own)] + list(BUILTIN.values())

    def lookup(self, name: str | None = None) -> ModelEntry:
        """The entry for a name or alias (None: the default, else :data:`FALLBACK_MODEL`),
        whether or not its files are present."""
        if name is None:
            name = self.default or FALLBACK_MODEL
        if name in BUILTIN:
            return BUILTIN[name]
        aliases = self._manifest.aliases if self._manifest else {}
        own = self._own()
        entry = own.get(aliases.get(name, name))
        if entry is not None:
            return entry
        if self._catalog.get(name) is not None:
            raise ModelNotFound(
                f"model {name!r} is not installed in {self.root}; fetch it with "
                f"`dsu models pull {name}` (or see `dsu models list`)"
            )
        known = [*BUILTIN, *own, *aliases, *self._catalog.names()]
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelNotFound(
            f"unknown model {name!r} in {self.root}{hint} "
            "(`dsu models list` shows the models you can use)"
        )

    def resolve(
        self, name: str | None = None, *, allow_checksum_mismatch: bool = False
    ) -> ModelEntry:
        """The entry for a name or alias (None: the default, else ``center``), with absolute
        paths, after checking its files exist and match the sha256 the registry records.

        Args:
            name: model name or alias.
            allow_checksum_mismatch: return the entry even when a file's sha256 differs
                (the explicit override of ``--allow-checksum-mismatch``).

        Raises:
            ModelNotFound: unknown name (with close names), a catalog model not pulled yet,
                or a listed model whose weight or config file is missing.
            ChecksumMismatch: a file's digest differs from the recorded one.
        """
        entry = self.lookup(name)
        missing = self.missing_files(entry)
        if missing:
            raise ModelNotFound(
                f"model {entry.name!r}: file {missing[0]} is missing (listed in {self.source}); "
                f"`dsu models pull {entry.name}` fetches catalog models again, "
                "`dsu models verify` checks the whole directory"
            )
        ensure_checksums(entry, allow_mismatch=allow_checksum_mismatch)
        return entry

    @staticmethod
    def missing_files(entry: ModelEntry) -> list[Path]:
        """Weight and config files of ``entry`` that are not there."""
        files = [*entry.weights, *([entry.config] if entry.config else [])]
        return [path for path in files if not path.is_file()]

    def listing(self) -> list[ModelInfo]:
        """What ``dsu models list`` shows: the directory's models, the built-ins, then the
        catalog models this directory does not have yet."""
        infos = []
        for entry in self.entries():
            if entry.name in BUILTIN:
                status = "builtin"
            else:
                status = "incomplete" if self.missing_files(entry) else "installed"
            infos.append(_info(entry, status, entry.name == self.default))
        present = {info.name for info in infos}
        infos = [_with_catalog(info, self._catalog.get(info.name)) for info in infos]
        for item in self._catalog.entries():
            if item.name not in present:
                info = ModelInfo(
                    name=item.name,
                    arch=item.arch,
                    stems=item.stems,
                    status="available",
                    aliases=item.aliases,
                    description=item.description,
                    requires=item.requires,
                    license=item.license,
                )
                infos.append(_with_catalog(info, item))
        return sorted(infos, key=lambda i: (STATUSES.index(i.status), i.name))

    def _own(self) -> dict[str, ModelEntry]:
        return self._manifest.entries if self._manifest else {}


def _with_catalog(info: ModelInfo, item: CatalogEntry | None) -> ModelInfo:
    """``info`` with the catalog's facts about the model of that name."""
    if item is None:
        return info
    known = all(f in item.size for f in item.weights)
    return replace(
        info,
        category=item.category,
        size=sum(item.size[f] for f in dict.fromkeys(item.weights)) if known else None,
        unverified=item.unverified,
        config_url=item.config_url,
        sdr=dict(item.sdr),
    )


def _info(entry: ModelEntry, status: str, default: bool) -> ModelInfo:
    return ModelInfo(
        name=entry.name,
        arch=entry.arch,
        stems=entry.stems,
        status=status,
        aliases=entry.aliases,
        description=entry.description,
        default=default,
        requires=entry.requires,
        license=entry.license,
    )
