"""``models.json``: read, validate and write the registry of a models directory (DESIGN §2).

Every problem raises :class:`~dsu.errors.RegistryError` naming the file and the field,
e.g. ``/m/models.json: models.htdemucs.weights[1]: path '../x.th' leaves the models
directory``. Paths in the file are relative to the directory and may not leave it: absolute
paths, ``..`` and symlinks that resolve outside are refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from dsu.errors import RegistryError
from dsu.registry.checksum import is_digest
from dsu.registry.entry import ModelEntry

MANIFEST = "models.json"
VERSION = 1
TOP_FIELDS = ("version", "default", "models")
ENTRY_FIELDS = (
    "arch",
    "weights",
    "config",
    "stems",
    "sha256",
    "url",
    "license",
    "description",
    "aliases",
    "options",
    "requires",
    "allow_checksum_mismatch",
)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


@dataclass(frozen=True)
class Manifest:
    """A validated registry.

    Attributes:
        root: the models directory (absolute).
        source: what error messages name: the ``models.json`` path, or the scanned directory.
        default: the default model's name (aliases already resolved) or None.
        entries: models by name, paths absolute.
        aliases: alias -> name.
    """

    root: Path
    source: str
    default: str | None
    entries: dict[str, ModelEntry]
    aliases: dict[str, str]


def read_manifest(root: Path, reserved: Collection[str] = ()) -> Manifest:
    """Read and validate ``root/models.json``; ``reserved`` names (built-ins) may not be reused."""
    path = root / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: cannot read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
        ) from None
    return parse_manifest(data, root, str(path), reserved)


def parse_manifest(
    data: object, root: Path, source: str, reserved: Collection[str] = ()
) -> Manifest:
    """Validate a manifest already decoded from JSON (or built by a scan).

    Args:
        data: the decoded document.
        root: the directory its paths are relative to.
        source: the name errors give the document.
        reserved: names that belong to built-in models and may not be defined again.
    """
    root = root.absolute()
    if not isinstance(data, dict):
        raise RegistryError(f"{source}: the top level must be a JSON object")
    _no_unknown(data, TOP_FIELDS, source, "top level")
    if "version" not in data:
        raise RegistryError(f"{source}: missing 'version' (this dsu reads version {VERSION})")
    version = data["version"]
    if isinstance(version, bool) or version != VERSION:
        raise RegistryError(
            f"{source}: version: {version!r} is not supported (this dsu reads version {VERSION})"
        )
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise RegistryError(f"{source}: models: must be an object of name: entry")

    entries: dict[str, ModelEntry] = {}
    aliases: dict[str, str] = {}
    for name, raw in models.items():
        where = f"models.{name}"
        check_name(name, source, where)
        if name in reserved:
            raise RegistryError(f"{source}: {where}: the name {name!r} belongs to a built-in model")
        entry = _parse_entry(name, raw, root, source)
        for alias in entry.aliases:
            taken = alias in models or alias in aliases or alias in reserved
            if taken:
                raise RegistryError(
                    f"{source}: {where}.aliases: {alias!r} is already a model name or alias"
                )
            aliases[alias] = name
        entries[name] = entry

    default = data.get("default")
    if default is not None:
        if not isinstance(default, str):
            raise RegistryError(f"{source}: default: must be a model name or null")
        default = aliases.get(default, default)
        if default not in entries and default not in reserved:
            raise RegistryError(f"{source}: default: {default!r} names no model of this file")
    return Manifest(root=root, source=source, default=default, entries=entries, aliases=aliases)


def resolve_inside(root: Path, rel: object, source: str, where: str) -> Path:
    """``root / rel`` after checking that ``rel`` is a relative path that stays inside ``root``.

    Refused: non-strings, empty strings, absolute paths (POSIX or Windows, drive letters
    included), any ``..`` component, and symlinks whose target lies outside ``root``.
    """
    if not isinstance(rel, str) or not rel.strip():
        raise RegistryError(f"{source}: {where}: must be a non-empty relative path")
    posix, windows = PurePosixPath(rel), PureWindowsPath(rel)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or rel.startswith("\\"):
        raise RegistryError(
            f"{source}: {where}: absolute path {rel!r} not allowed "
            "(paths are relative to the models directory)"
        )
    if ".." in posix.parts or ".." in windows.parts:
        raise RegistryError(f"{source}: {where}: path {rel!r} leaves the models directory")
    path = root / posix
    real_root = root.resolve()
    if not path.resolve().is_relative_to(real_root):
        raise RegistryError(
            f"{source}: {where}: {rel!r} resolves to {path.resolve()}, "
            "outside the models directory (symlink out)"
        )
    return path


def write_manifest(root: Path, data: Mapping[str, Any], reserved: Collection[str] = ()) -> Path:
    """Validate ``data`` and write it to ``root/models.json`` atomically (temp file + rename)."""
    target = root / MANIFEST
    parse_manifest(dict(data), root, str(target), reserved)
    tmp = root / f".{MANIFEST}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the models directory (``.dsu.lock``) so that concurrent
    pulls neither download into the same part file nor lose each other's manifest entries.
    Where ``fcntl`` is missing (Windows) this is a no-op."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(root / ".dsu.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _parse_entry(name: str, raw: object, root: Path, source: str) -> ModelEntry:
    where = f"models.{name}"
    if not isinstance(raw, dict):
        raise RegistryError(f"{source}: {where}: must be an object")
    _no_unknown(raw, ENTRY_FIELDS, source, where)

    arch = raw.get("arch")
    if not isinstance(arch, str) or not arch:
        raise RegistryError(f"{source}: {where}.arch: missing (the family that loads the model)")

    weights_raw = raw.get("weights", [])
    if isinstance(weights_raw, str):
        weights_raw = [weights_raw]
    if not isinstance(weights_raw, list):
        raise RegistryError(f"{source}: {where}.weights: must be a path or a list of paths")
    weights = tuple(
        resolve_inside(root, rel, source, f"{where}.weights[{i}]")
        for i, rel in enumerate(weights_raw)
    )
    config_raw = raw.get("config")
    config = None
    if config_raw is not None:
        config = resolve_inside(root, config_raw, source, f"{where}.config")

    files = {*weights_raw, *([config_raw] if config_raw is not None else [])}
    files |= {PurePosixPath(f).name for f in list(files)}
    sha256 = _str_map(raw.get("sha256", {}), source, f"{where}.sha256")
    for key, value in sha256.items():
        if key not in files:
            raise RegistryError(f"{source}: {where}.sha256: {key!r} names no file of this model")
        if not is_digest(value):
            raise RegistryError(
                f"{source}: {where}.sha256.{key}: {value!r} is not a lowercase hex sha256 "
                "(full digest or a prefix of at least 8 hex digits)"
            )
    url = _str_map(raw.get("url", {}), source, f"{where}.url")
    for key in url:
        if key not in files:
            raise RegistryError(f"{source}: {where}.url: {key!r} names no file of this model")

    stems = _str_list(raw.get("stems", []), source, f"{where}.stems")
    if len(set(stems)) != len(stems):
        raise RegistryError(f"{source}: {where}.stems: duplicate stem names in {stems}")
    aliases = _str_list(raw.get("aliases", []), source, f"{where}.aliases")
    for alias in aliases:
        check_name(alias, source, f"{where}.aliases")
    options = raw.get("options", {})
    if not isinstance(options, dict):
        raise RegistryError(f"{source}: {where}.options: must be an object")
    allow_mismatch = raw.get("allow_checksum_mismatch", False)
    if not isinstance(allow_mismatch, bool):
        raise RegistryError(f"{source}: {where}.allow_checksum_mismatch: must be true or false")
    return ModelEntry(
        name=name,
        arch=arch,
        weights=weights,
        config=config,
        stems=tuple(stems),
        sha256=sha256,
        url=url,
        license=_opt_str(raw.get("license"), source, f"{where}.license"),
        description=_opt_str(raw.get("description"), source, f"{where}.description") or "",
        aliases=tuple(aliases),
        options=options,
        requires=_opt_str(raw.get("requires"), source, f"{where}.requires"),
        allow_checksum_mismatch=allow_mismatch,
    )


def _no_unknown(data: dict, allowed: tuple[str, ...], source: str, where: str) -> None:
    unknown = [key for key in data if key not in allowed]
    if unknown:
        raise RegistryError(
            f"{source}: {where}: unknown field {unknown[0]!r} "
            f"(expected one of {', '.join(allowed)})"
        )


def check_name(name: object, source: str, where: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise RegistryError(
            f"{source}: {where}: {name!r} is not a valid model name "
            "(letters, digits and . _ + -, starting with a letter or digit)"
        )


def _str_list(value: object, source: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RegistryError(f"{source}: {where}: must be a list of non-empty strings")
    return list(value)


def _str_map(value: object, source: str, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise RegistryError(f"{source}: {where}: must be an object of file: string")
    return dict(value)


def _opt_str(value: object, source: str, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise RegistryError(f"{source}: {where}: must be a string or null")
    return value
