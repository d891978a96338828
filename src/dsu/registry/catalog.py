"""The catalog: well-known public models with their official URLs and checksums.

The built-in catalog is the package data ``dsu/registry/catalog/*.json`` (with the configs
it ships in ``dsu/registry/catalog/configs/``); a site may add its own with
``dsu models pull --catalog FILE`` (its shipped configs in a ``configs/`` folder beside the
file). A catalog file::

    {"version": 1, "source": "where the facts come from",
     "models": {"htdemucs": {
        "arch": "demucs", "weights": ["955717e8-8726e21a.th"],
        "url": {"955717e8-8726e21a.th": "https://..."},
        "sha256": {"955717e8-8726e21a.th": "8726e21a"},
        "stems": [...], "bag": {"models": ["955717e8"]}, "config": null,
        "options": {}, "license": "MIT", "description": "...", "aliases": [], "requires": null,
        "sdr": {"vocals": 9.2}, "metrics": [{"stem": "vocals", "sdr": 8.2,
            "dataset": "Multisong", "source": "..."}], "source": "...",
        "size": {"955717e8-8726e21a.th": 84141911}, "category": "four-stem",
        "verified": {"url": true, "sha256": true, "config": true}}}}

Every weight needs a URL. ``config`` names a config file: one with a URL is fetched like a
weight; one without is shipped with the catalog and copied by pull. ``bag`` (Demucs only)
is a bag definition written as ``configs/<name>.yaml`` by pull. ``options`` are family
settings pull copies into the ``models.json`` entry (a UVR VR model's model data, for
instance: its band parameters and primary stem, which its checkpoint does not hold). A
sha256 (full digest or a hex prefix) is given where the publisher's digest is known and
then checked on download; where it is not known (most community checkpoints publish none)
it is left out and pull records the digest of what it downloaded, so any later change to
the file is still caught when the model loads. ``sdr`` is the headline SDR per stem as the
authors publish it (often in the file name, on their own validation set); ``metrics`` are
further published scores, each naming its dataset and source. ``size`` is the byte count
of a file where a source gives it (pull refuses a download of another size). ``category``
is one of :data:`CATEGORIES`. ``verified`` says what could be checked when the entry was
written: ``url`` (every URL is the publisher's own, as a source lists it, rather than a
re-host such as pymss' or MSST-WebUI's Hugging Face mirrors), ``sha256`` (a digest is
known for every fetched file) and ``config`` (no config to fetch: the publisher's config
is shipped, or the family needs none). ``sha256`` must agree with the entry itself;
``config`` cannot be true for a fetched config, and is false for a shipped stand-in: a
sibling's config whose network matches the checkpoint's size (its ``source`` says whose).
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
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
    "options",
    "license",
    "description",
    "aliases",
    "requires",
    "sdr",
    "metrics",
    "source",
    "size",
    "category",
    "verified",
)
CATEGORIES = (
    "vocals",
    "instrumental",
    "karaoke",
    "vocal-parts",
    "four-stem",
    "multi-stem",
    "single-instrument",
    "drum-parts",
    "dereverb",
    "denoise",
    "crowd",
    "restoration",
    "speech",
    "spatial",
)
"""What a catalog model is for (``dsu models list --category``): vocals; instrumental;
karaoke (lead vs backing vocals); vocal-parts (male/female, choir voices, breaths);
four-stem (drums, bass, other, vocals); multi-stem (more stems); single-instrument (one
instrument against the rest); drum-parts (kick, snare, cymbals...); dereverb (reverb and
echo); denoise (noise and bleed); crowd; restoration (lossy or damaged audio); speech
(dialogue, music and effects; speech against the rest); spatial (centre/sides,
similarity)."""
VERIFIED = ("url", "sha256", "config")
METRIC_FIELDS = ("stem", "sdr", "dataset", "source")
CONFIGS = "configs"
"""The folder beside a catalog file that holds the configs it ships."""


@dataclass(frozen=True)
class CatalogEntry:
    """A model that can be pulled.

    Attributes:
        weights: checkpoint file names, in the order the family expects.
        config: the config file name (installed into ``configs/``), or None.
        bag: a Demucs bag definition (``models``, optional ``weights`` and ``segment``).
        options: family settings written into the installed ``models.json`` entry.
        url: by file name, for every weight and a fetched config.
        sha256: by file name, where the publisher's digest is known.
        shipped_config: the config file shipped with the catalog, when it is not fetched.
        sdr: published SDR in dB by stem.
        metrics: further published scores (``stem``, ``sdr``, ``dataset``, ``source``).
        source: where the entry's facts come from.
        size: byte counts by file name, where a source gives them.
        category: one of :data:`CATEGORIES`, or None.
        verified: for each of :data:`VERIFIED`, whether it was checked (see the module).
        files: the files pull fetches (weights, then a fetched config).
    """

    name: str
    arch: str
    weights: tuple[str, ...]
    url: dict[str, str]
    sha256: dict[str, str]
    stems: tuple[str, ...] = ()
    config: str | None = None
    bag: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    license: str | None = None
    description: str = ""
    aliases: tuple[str, ...] = ()
    requires: str | None = None
    shipped_config: Traversable | None = None
    sdr: dict[str, float] = field(default_factory=dict)
    metrics: tuple[dict[str, Any], ...] = ()
    source: str = ""
    size: dict[str, int] = field(default_factory=dict)
    category: str | None = None
    verified: dict[str, bool] = field(default_factory=dict)
    files: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        fetched = (self.config,) if self.config and self.shipped_config is None else ()
        object.__setattr__(self, "files", self.weights + fetched)

    @property
    def config_url(self) -> str | None:
        """Where pull fetches the config from, when it is not shipped."""
        return self.url.get(self.config) if self.config and self.shipped_config is None else None

    @property
    def unverified(self) -> tuple[str, ...]:
        """Which of :data:`VERIFIED` could not be checked for this entry."""
        return tuple(key for key in VERIFIED if not self.verified.get(key, False))


class Catalog:
    """Pullable models by name; look-ups accept aliases."""

    def __init__(self, entries: Mapping[str, CatalogEntry]) -> None:
        """Raises RegistryError when an alias is also a model name or another model's alias."""
        self._entries = dict(entries)
        self._aliases: dict[str, str] = {}
        for entry in self._entries.values():
            for alias in entry.aliases:
                owner = self._aliases.get(alias) or (alias if alias in self._entries else None)
                if owner is not None:
                    raise RegistryError(
                        f"catalog: the alias {alias!r} of {entry.name!r} is already the name "
                        f"or an alias of {owner!r}"
                    )
                self._aliases[alias] = entry.name
        # A file in several entries (a Demucs bag and its members alone) is found under the
        # first of them by name.
        self._by_file: dict[str, CatalogEntry] = {}
        for entry in self.entries():
            for file_name in entry.weights:
                self._by_file.setdefault(file_name, entry)

    @classmethod
    def from_dict(cls, data: object, source: str, configs: Traversable | None = None) -> Catalog:
        """Validate a decoded catalog document; errors name ``source`` and the field.

        Args:
            data: the decoded JSON.
            source: what error messages call the document.
            configs: the folder of the configs the catalog ships (None: it ships none).
        """
        if not isinstance(data, dict) or data.get("version") != 1:
            raise RegistryError(f"{source}: not a catalog (expected an object with version 1)")
        models = data.get("models")
        if not isinstance(models, dict):
            raise RegistryError(f"{source}: models: must be an object of name: entry")
        return cls({name: _parse(name, raw, source, configs) for name, raw in models.items()})

    @classmethod
    def load(cls, path: Path) -> Catalog:
        """Read a catalog JSON file (its shipped configs in ``configs/`` beside it)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{path}: cannot read the catalog: {exc}") from None
        return cls.from_dict(data, str(path), path.parent / CONFIGS)

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
        """The entry whose weights include a file of this name (Demucs names carry a
        checksum)."""
        return self._by_file.get(file_name)

    def close_names(self, name: str) -> list[str]:
        return difflib.get_close_matches(name, [*self._entries, *self._aliases], n=3, cutoff=0.6)


@functools.lru_cache(maxsize=1)
def builtin_catalog() -> Catalog:
    """The catalog shipped with dsu (``dsu/registry/catalog/*.json``).

    Raises:
        RegistryError: two files define the same model name (a packaging bug).
    """
    entries: dict[str, CatalogEntry] = {}
    folder = resources.files("dsu.registry") / "catalog"
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        if item.name.endswith(".json"):
            data = json.loads(item.read_text(encoding="utf-8"))
            part = Catalog.from_dict(data, f"dsu catalog {item.name}", folder / CONFIGS)
            for entry in part.entries():
                if entry.name in entries:
                    raise RegistryError(
                        f"dsu catalog {item.name}: model {entry.name!r} is defined twice"
                    )
                entries[entry.name] = entry
    return Catalog(entries)


def _parse(name: str, raw: object, source: str, configs: Traversable | None) -> CatalogEntry:
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
    options = raw.get("options", {})
    if not isinstance(options, dict):
        raise RegistryError(f"{where}.options: must be an object of setting: value")
    url, sha256 = raw.get("url", {}), raw.get("sha256", {})
    if not isinstance(url, dict) or not isinstance(sha256, dict):
        raise RegistryError(f"{where}: url and sha256 must be objects of file: value")
    shipped = None
    if config is not None and config not in url:
        shipped = configs / config if configs is not None else None
        if shipped is None or not shipped.is_file():
            raise RegistryError(
                f"{where}.config: {config!r} has no URL and is not shipped in the catalog's "
                f"{CONFIGS}/ folder"
            )
    fetched = [*weights, *([config] if config and shipped is None else [])]
    for file_name in fetched:
        if not isinstance(url.get(file_name), str) or not url[file_name]:
            raise RegistryError(f"{where}.url: no URL for {file_name!r}")
    sha256 = {k: v for k, v in sha256.items() if v != ""}
    for file_name, value in sha256.items():
        if file_name not in fetched:
            raise RegistryError(f"{where}.sha256: {file_name!r} is not a file to fetch")
        if not is_digest(value):
            raise RegistryError(
                f"{where}.sha256.{file_name}: {value!r} is not a lowercase hex sha256 "
                "(full digest or a prefix of at least 8 hex digits; leave it out when unknown)"
            )
    size = raw.get("size", {})
    if not isinstance(size, dict) or not all(
        k in fetched and isinstance(v, int) and not isinstance(v, bool) and v > 0
        for k, v in size.items()
    ):
        raise RegistryError(f"{where}.size: must be an object of fetched file: bytes (> 0)")
    category = raw.get("category")
    if category is not None and category not in CATEGORIES:
        raise RegistryError(f"{where}.category: {category!r} is not one of {', '.join(CATEGORIES)}")
    verified = _verified(raw.get("verified", {}), where, fetched, sha256, config, shipped)
    return CatalogEntry(
        name=name,
        arch=raw["arch"],
        weights=tuple(weights),
        url=dict(url),
        sha256=dict(sha256),
        stems=tuple(raw.get("stems", [])),
        config=config,
        bag=bag,
        options=dict(options),
        license=raw.get("license"),
        description=raw.get("description") or "",
        aliases=tuple(raw.get("aliases", [])),
        requires=raw.get("requires"),
        shipped_config=shipped,
        sdr=_sdr(raw.get("sdr", {}), where),
        metrics=_metrics(raw.get("metrics", []), where),
        source=raw.get("source") or "",
        size=dict(size),
        category=category,
        verified=verified,
    )


def _verified(
    value: object,
    where: str,
    fetched: list[str],
    sha256: dict[str, str],
    config: str | None,
    shipped: Traversable | None,
) -> dict[str, bool]:
    """The ``verified`` marker, checked against what the entry itself says."""
    if not isinstance(value, dict) or set(value) - set(VERIFIED):
        raise RegistryError(f"{where}.verified: must be an object of {', '.join(VERIFIED)}: bool")
    if not all(isinstance(v, bool) for v in value.values()):
        raise RegistryError(f"{where}.verified: values must be true or false")
    facts = {
        "sha256": all(f in sha256 for f in fetched),
        "config": config is None or shipped is not None,
    }
    for key, fact in facts.items():
        # A shipped stand-in config is the one claim the entry cannot prove: it may say false.
        stand_in = key == "config" and fact and value.get(key) is False
        if key in value and value[key] != fact and not stand_in:
            raise RegistryError(
                f"{where}.verified.{key}: says {str(value[key]).lower()} but the entry "
                f"{'has' if fact else 'lacks'} it"
            )
    return {
        "url": bool(value.get("url", False)),
        "sha256": facts["sha256"],
        "config": facts["config"] and value.get("config", True),
    }


def _sdr(value: object, where: str) -> dict[str, float]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and _number(v) for k, v in value.items()
    ):
        raise RegistryError(f"{where}.sdr: must be an object of stem: SDR in dB")
    return {k: float(v) for k, v in value.items()}


def _metrics(value: object, where: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list):
        raise RegistryError(f"{where}.metrics: must be a list of objects")
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - set(METRIC_FIELDS):
            raise RegistryError(
                f"{where}.metrics[{i}]: must be an object of {', '.join(METRIC_FIELDS)}"
            )
        if not (isinstance(item.get("stem"), str) and _number(item.get("sdr"))):
            raise RegistryError(f"{where}.metrics[{i}]: needs a 'stem' and a numeric 'sdr'")
    return tuple(dict(item) for item in value)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain_name(value: object) -> bool:
    """A bare file name: no directory part, nothing that could leave the target folder."""
    return (
        isinstance(value, str)
        and value not in ("", ".", "..")
        and "/" not in value
        and "\\" not in value
    )
