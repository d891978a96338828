"""``pull``: install a catalog model into a models directory.

Weights go to ``weights/``, configs to ``configs/`` (a Demucs bag definition is written as
``configs/<name>.yaml``, a config shipped with the catalog is copied), then the entry is
added to ``models.json``, with the catalog entry's ``options``. Files come from their
official URL or from a mirror: a local directory holding the files by name (also in its
``weights/`` or ``configs/`` folder, so another models directory works as a mirror) or a
base URL. Files already present with the right checksum are not fetched again.
A download is checked against the catalog's byte count and sha256 where it gives them.
``models.json`` records the sha256 of every installed file: the catalog's where it has one,
else the digest of what was downloaded, so a file damaged later is refused when the model
loads. A config fetched from its URL (not shipped, so not read when the catalog was
written) names the model's stems itself: the installed entry takes them from it.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from dsu.archs.families import family_of
from dsu.archs.msst_config import config_stems, read_config
from dsu.errors import DownloadError, ModelNotFound, RegistryError
from dsu.registry import digests
from dsu.registry.catalog import Catalog, CatalogEntry, builtin_catalog
from dsu.registry.checksum import matches
from dsu.registry.download import Progress, fetch
from dsu.registry.entry import ModelEntry
from dsu.registry.manifest import MANIFEST, VERSION, locked, read_manifest, write_manifest
from dsu.registry.registry import BUILTIN, Registry
from dsu.registry.scan import scan
from dsu.registry.settings import settings


def pull(
    name: str,
    models_dir: str | Path | None = None,
    *,
    mirror: str | Path | None = None,
    progress: Progress | None = None,
    catalog: Catalog | None = None,
) -> ModelEntry:
    """Fetch a catalog model into ``models_dir`` and register it.

    Args:
        name: catalog name or alias.
        models_dir: target directory (default ``DSU_MODELS_DIR`` or ``~/.cache/dsu/models``);
            created if needed.
        mirror: directory or base URL to fetch from instead of the official URLs
            (default ``DSU_MODELS_MIRROR``).
        progress: ``progress(file_name, bytes_done, bytes_total_or_None)``.
        catalog: where to look ``name`` up (default: the built-in catalog).

    Returns:
        The installed entry, resolved as :meth:`Registry.resolve` would.

    Raises:
        ModelNotFound: ``name`` is not in the catalog.
        DownloadError, ChecksumMismatch: a file could not be fetched or verified; nothing
            of it is installed and ``models.json`` is unchanged.
        RegistryError: the directory's existing ``models.json`` is invalid.
    """
    config = settings()
    root = Path(models_dir).expanduser() if models_dir is not None else config.models_dir
    catalog = catalog or builtin_catalog()
    item = catalog.get(name)
    if item is None:
        close = catalog.close_names(name)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelNotFound(
            f"{name!r} is not in the catalog{hint} (`dsu models list` shows what can be pulled)"
        )
    mirror = mirror if mirror is not None else config.mirror

    root.mkdir(parents=True, exist_ok=True)
    with locked(root):
        # Read the current registry first: an invalid models.json fails before any download.
        document = _current_document(root)
        installed = document["models"].get(item.name, {}).get("sha256", {})
        recorded: dict[str, str] = {}
        for file_name in item.files:
            folder = root / ("configs" if file_name == item.config else "weights")
            folder.mkdir(exist_ok=True)
            dest = folder / file_name
            # Without a published digest, the one recorded by an earlier pull says whether
            # the file on disk is still the one that was downloaded.
            expected = item.sha256.get(file_name) or installed.get(file_name)
            size = item.size.get(file_name)
            if (
                dest.is_file()
                and expected
                and size in (None, dest.stat().st_size)
                and matches(digests.digest(dest), expected)
            ):
                recorded[file_name] = digests.digest(dest)
                continue
            recorded[file_name] = fetch(
                _source(file_name, item.url[file_name], mirror),
                dest,
                item.sha256.get(file_name),
                timeout=config.timeout,
                retries=config.retries,
                progress=progress,
                expected_size=size,
            )
        if item.shipped_config is not None and item.config is not None:
            (root / "configs").mkdir(exist_ok=True)
            dest = root / "configs" / item.config
            _write_bytes(dest, item.shipped_config.read_bytes())
            recorded[item.config] = digests.rehash(dest)
        if item.bag is not None:
            (root / "configs").mkdir(exist_ok=True)
            _write_bytes(root / "configs" / f"{item.name}.yaml", yaml.safe_dump(item.bag).encode())
        document["models"][item.name] = _manifest_entry(item, recorded)
        if item.config_url is not None:
            stems = _fetched_stems(item, root / "configs" / item.config)
            if stems is not None:
                document["models"][item.name]["stems"] = stems
        document["default"] = document.get("default") or item.name
        write_manifest(root, document, reserved=BUILTIN)
    return Registry.open(root, catalog=catalog).resolve(item.name)


def _current_document(root: Path) -> dict[str, Any]:
    """The directory's registry as a document to extend: models.json (validated), else what
    a scan finds (so models already in a plain Demucs repo stay listed), else empty."""
    path = root / MANIFEST
    if path.is_file():
        read_manifest(root, reserved=BUILTIN)
        return json.loads(path.read_text(encoding="utf-8"))
    document = scan(root)
    document.setdefault("models", {})
    document.setdefault("version", VERSION)
    return document


def _manifest_entry(item: CatalogEntry, recorded: dict[str, str]) -> dict[str, Any]:
    """The ``models.json`` entry; ``recorded`` are the digests of the installed files (the
    catalog's own digest, a Demucs prefix for instance, is kept where it has one). Its
    ``options`` are the catalog entry's, plus a bag's ``weights`` and ``segment``."""
    entry: dict[str, Any] = {
        "arch": item.arch,
        "weights": [f"weights/{f}" for f in item.weights],
        "config": f"configs/{item.config}" if item.config else None,
        "stems": list(item.stems),
        "sha256": {**recorded, **item.sha256},
        "url": dict(item.url),
        "license": item.license,
        "description": item.description,
        "aliases": list(item.aliases),
    }
    options = dict(item.options)
    if item.bag is not None:
        entry["config"] = f"configs/{item.name}.yaml"
        options.update(
            {k: item.bag[k] for k in ("weights", "segment") if item.bag.get(k) is not None}
        )
    if options:
        entry["options"] = options
    if item.requires:
        entry["requires"] = item.requires
    return entry


def _fetched_stems(item: CatalogEntry, config: Path) -> list[str] | None:
    """The stems a fetched config gives (every fetched catalog config is an MSST YAML), or
    None when it does not say: the loader then names the config's problem."""
    family = family_of(item.arch)
    try:
        return config_stems(read_config(config), config, residual=family is None or family.residual)
    except RegistryError:
        return None


def _source(file_name: str, url: str, mirror: str | Path | None) -> str | Path:
    """Where to fetch ``file_name`` from: the mirror when one is set, else ``url``."""
    if mirror is None:
        return url
    text = str(mirror)
    scheme = urllib.parse.urlsplit(text).scheme
    if scheme in ("http", "https"):
        return text.rstrip("/") + "/" + urllib.parse.quote(file_name)
    folder = (
        Path(urllib.request.url2pathname(text[len("file://") :]))
        if scheme == "file"
        else Path(text)
    )
    if not folder.is_dir():
        raise DownloadError(f"mirror {text}: not a directory nor an http(s) URL")
    for candidate in (
        folder / file_name,
        folder / "weights" / file_name,
        folder / "configs" / file_name,
    ):
        if candidate.is_file():
            return candidate
    raise DownloadError(f"{file_name}: not found in the mirror directory {folder}")


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
