"""The catalog: well-known public models with their official URLs and checksums.

The built-in catalog is the package data ``dsu/registry/catalog/*.json``; a site may add
its own with ``dsu models pull --catalog FILE``. A catalog file::

    {"version": 1, "models": {"htdemucs": {
        "arch": "demucs", "weights": ["955717e8-8726e21a.th"],
        "url": {"955717e8-8726e21a.th": "https://..."},
        "sha256": {"955717e8-8726e21a.th": "8726e21a"},
        "stems": [...], "bag": {"models": ["955717e8"]}, "config": null,
        "license": "MIT", "description": "...", "aliases": [], "requires": null}}}

Every file to fetch needs a URL and a sha256 (full or prefix): nothing unverified is ever
installed. ``bag`` is a Demucs bag definition, written as ``configs/<name>.yaml`` by pull;
``config`` instead names a config file fetched like a weight.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from dsu.errors import RegistryError
from dsu.registry.checksum import is_digest
from dsu.registry.manifest import check_name

FIELDS = (
    "arch",
    "weights",
    "config",
    "bag",
    "url",
    "sha256",
    "stems",
    "license",
    "description",
    "aliases",
    "requires",
)


@dataclass(frozen=True)
class CatalogEntry:
    """A model that can be pulled.

    Attributes:
        weights: checkpoint file names, in the order the family expects.
        config: a config file name to fetch (into ``configs/``), or None.
        bag: a Demucs bag definition (``models``, optional ``weights`` and ``segment``).
        url, sha256: by file name, for every file in ``weights`` and ``config``.
    """

    name: str
    arch: str
    weights: tuple[str, ...]
    url: dict[str, str]
    sha256: dict[str, str]
    stems: tuple[str, ...] = ()
    config: str | None = None
    bag: dict[str, Any] | None = None
    license: str | None = None
    description: str = ""
    aliases: tuple[str, ...] = ()
    requires: str | None = None
    files: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", self.weights + ((self.config,) if self.config else ()))


class Catalog:
    """Pullable models by name; look-ups accept aliases."""

    def __init__(self, entries: Mapping[str, CatalogEntry]) -> None:
        self._entries = dict(entries)
        self._aliases = {a: e.name for e in self._entries.values() for a in e.aliases}
        self._by_file = {f: e for e in self._entries.values() for f in e.files}

    @classmethod
    def from_dict(cls, data: object, source: str) -> Catalog:
        """Validate a decoded catalog document; errors name ``source`` and the field."""
        if not isinstance(data, dict) or data.get("version") != 1:
            raise RegistryError(f"{source}: not a catalog (expected an object with version 1)")
        models = data.get("models")
        if not isinstance(models, dict):
            raise RegistryError(f"{source}: models: must be an object of name: entry")
        return cls({name: _parse(name, raw, source) for name, raw in models.items()})

    @classmethod
    def load(cls, path: Path) -> Catalog:
        """Read a catalog JSON file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{path}: cannot read the catalog: {exc}") from None
        return cls.from_dict(data, str(path))

    def merged(self, other: Catalog) -> Catalog:
        """This catalog with ``other``'s entries added (``other`` wins on a name clash)."""
        return Catalog({**self._entries, **other._entries})

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[CatalogEntry]:
        return [self._entries[n] for n in self.names()]

    def get(self, name: str) -> CatalogEntry | None:
        """The entry for a name or alias, or None."""
        return self._entries.get(self._aliases.get(name, name))

    def by_file(self, file_name: str) -> CatalogEntry | None:
        """The entry that ships a file of this name (Demucs names carry a checksum)."""
        return self._by_file.get(file_name)

    def close_names(self, name: str) -> list[str]:
        return difflib.get_close_matches(name, [*self._entries, *self._aliases], n=3, cutoff=0.6)


@functools.lru_cache(maxsize=1)
def builtin_catalog() -> Catalog:
    """The catalog shipped with dsu (``dsu/registry/catalog/*.json``)."""
    catalog = Catalog({})
    folder = resources.files("dsu.registry") / "catalog"
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if item.name.endswith(".json"):
            data = json.loads(item.read_text(encoding="utf-8"))
            catalog = catalog.merged(Catalog.from_dict(data, f"dsu catalog {item.name}"))
    return catalog


def _parse(name: str, raw: object, source: str) -> CatalogEntry:
    where = f"{source}: models.{name}"
    check_name(name, source, f"models.{name}")
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: must be an object")
    unknown = [k for k in raw if k not in FIELDS]
    if unknown:
        raise RegistryError(f"{where}: unknown field {unknown[0]!r}")
    if not isinstance(raw.get("arch"), str) or not raw["arch"]:
        raise RegistryError(f"{where}.arch: missing")
    weights = raw.get("weights")
    if not isinstance(weights, list) or not all(_plain_name(w) for w in weights) or not weights:
        raise RegistryError(f"{where}.weights: must be a non-empty list of plain file names")
    config = raw.get("config")
    if config is not None and not _plain_name(config):
        raise RegistryError(f"{where}.config: must be a plain file name or null")
    bag = raw.get("bag")
    if bag is not None:
        if config is not None:
            raise RegistryError(f"{where}: give either 'bag' or 'config', not both")
        if not isinstance(bag, dict) or not isinstance(bag.get("models"), list):
            raise RegistryError(f"{where}.bag: must be an object with a 'models' list")
    url, sha256 = raw.get("url", {}), raw.get("sha256", {})
    if not isinstance(url, dict) or not isinstance(sha256, dict):
        raise RegistryError(f"{where}: url and sha256 must be objects of file: value")
    for file_name in [*weights, *([config] if config else [])]:
        if not isinstance(url.get(file_name), str):
            raise RegistryError(f"{where}.url: no URL for {file_name!r}")
        if not is_digest(sha256.get(file_name)):
            raise RegistryError(f"{where}.sha256: no valid sha256 for {file_name!r}")
    return CatalogEntry(
        name=name,
        arch=raw["arch"],
        weights=tuple(weights),
        url=dict(url),
        sha256=dict(sha256),
        stems=tuple(raw.get("stems", [])),
        config=config,
        bag=bag,
        license=raw.get("license"),
        description=raw.get("description") or "",
        aliases=tuple(raw.get("aliases", [])),
        requires=raw.get("requires"),
    )


def _plain_name(value: object) -> bool:
    """A bare file name: no directory part, nothing that could leave the target folder."""
    return (
        isinstance(value, str)
        and value not in ("", ".", "..")
        and "/" not in value
        and "\\" not in value
    )
