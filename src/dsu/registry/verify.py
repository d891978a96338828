"""Checksums of model files: ``verify`` a whole models directory (``dsu models verify``) and
``ensure_checksums`` of one entry before it is loaded.

``ensure_checksums`` hashes through :mod:`dsu.registry.digests`, which remembers each file's
digest by size and mtime, so a model that did not change is not hashed on every load;
``verify`` always hashes in full.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dsu.errors import ChecksumMismatch, RegistryError
from dsu.registry import digests
from dsu.registry.checksum import matches
from dsu.registry.entry import ModelEntry
from dsu.registry.manifest import MANIFEST


@dataclass(frozen=True)
class VerifyResult:
    """The check of one file.

    Attributes:
        name: the model ("" when the registry itself could not be read).
        file: the file, relative to the models directory when inside it.
        ok: False on any problem.
        problem: what is wrong, or None.
        checked: True when a recorded sha256 was compared (False: the file exists but the
            registry records no checksum for it).
    """

    name: str
    file: str
    ok: bool
    problem: str | None = None
    checked: bool = False


def verify(
    models_dir: str | Path | None = None, names: Iterable[str] | None = None
) -> list[VerifyResult]:
    """Check the files of the named models (default: every model of the directory).

    An unreadable or invalid ``models.json`` is reported as one failed result rather than
    raised, so ``dsu models verify`` can report it like any other problem.

    Raises:
        ModelNotFound: a name in ``names`` is unknown.
    """
    # Imported here: the registry calls ensure_checksums from this module when resolving.
    from dsu.registry.registry import BUILTIN, Registry

    try:
        registry = Registry.open(models_dir)
    except RegistryError as exc:
        where = Path(models_dir) / MANIFEST if models_dir is not None else MANIFEST
        return [VerifyResult(name="", file=str(where), ok=False, problem=exc.message)]
    entries = [registry.lookup(name) for name in names] if names else registry.entries()
    hashed: dict[Path, str] = {}
    results = []
    for entry in entries:
        if entry.name in BUILTIN:
            continue
        files = [*entry.weights, *([entry.config] if entry.config else [])]
        for path in dict.fromkeys(files):
            shown = _relative(path, registry.root)
            expected = entry.sha256.get(shown) or entry.sha256.get(path.name)
            if not path.is_file():
                results.append(VerifyResult(entry.name, shown, False, "missing"))
                continue
            if not expected:
                results.append(VerifyResult(entry.name, shown, True))
                continue
            try:
                if path not in hashed:
                    hashed[path] = digests.rehash(path)
                actual = hashed[path]
            except OSError as exc:
                results.append(VerifyResult(entry.name, shown, False, f"unreadable: {exc}"))
                continue
            if matches(actual, expected):
                results.append(VerifyResult(entry.name, shown, True, checked=True))
            else:
                problem = f"sha256 mismatch: expected {expected}, got {actual}"
                results.append(VerifyResult(entry.name, shown, False, problem, checked=True))
    return results


def ensure_checksums(entry: ModelEntry, *, allow_mismatch: bool = False) -> None:
    """Refuse to load a model whose files do not match the sha256 its registry records.

    Files without a recorded sha256 are not checked; a hex prefix (the one Demucs puts in
    its file names) is checked as a prefix. A digest is computed once per file version
    (see :mod:`dsu.registry.digests`), so calling this before every load is cheap.

    Args:
        entry: the resolved entry (absolute paths).
        allow_mismatch: load anyway (``--allow-checksum-mismatch``); the entry's own
            ``allow_checksum_mismatch`` flag in ``models.json`` does the same.

    Raises:
        ChecksumMismatch: a file's digest differs; the message names the file, both digests
            and how to fetch it again or override.
        RegistryError: a file cannot be read.
    """
    if allow_mismatch or entry.allow_checksum_mismatch:
        return
    for path in dict.fromkeys([*entry.weights, *([entry.config] if entry.config else [])]):
        expected = _expected(entry, path)
        if not expected:
            continue
        try:
            actual = digests.digest(path)
            size = path.stat().st_size
        except OSError as exc:
            raise RegistryError(
                f"{path}: cannot read to check its sha256: {exc.strerror}"
            ) from None
        if not matches(actual, expected):
            raise ChecksumMismatch(
                f"{path}: sha256 mismatch for model {entry.name!r}: expected {expected}, got "
                f"{actual} ({size} bytes); the file is damaged or not the one the registry "
                f"lists. Fetch it again (`dsu models pull {entry.name}` for catalog models) or, "
                "if you changed it on purpose, load it anyway with --allow-checksum-mismatch "
                "(Python: allow_checksum_mismatch=True; models.json: "
                '"allow_checksum_mismatch": true)'
            )


def _expected(entry: ModelEntry, path: Path) -> str | None:
    """The recorded digest of ``path``: keyed by its file name or by a path ending in it."""
    posix = path.as_posix()
    for key, value in entry.sha256.items():
        if key == path.name or posix.endswith("/" + key.lstrip("/")):
            return value
    return None


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
