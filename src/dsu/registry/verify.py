"""``verify``: check that every file of a models directory is there and has its checksum."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dsu.errors import RegistryError
from dsu.registry.checksum import file_sha256, matches
from dsu.registry.manifest import MANIFEST
from dsu.registry.registry import BUILTIN, Registry


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
    try:
        registry = Registry.open(models_dir)
    except RegistryError as exc:
        where = Path(models_dir) / MANIFEST if models_dir is not None else MANIFEST
        return [VerifyResult(name="", file=str(where), ok=False, problem=exc.message)]
    entries = [registry.lookup(name) for name in names] if names else registry.entries()
    digests: dict[Path, str] = {}
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
                actual = digests.setdefault(path, file_sha256(path))
            except OSError as exc:
                results.append(VerifyResult(entry.name, shown, False, f"unreadable: {exc}"))
                continue
            if matches(actual, expected):
                results.append(VerifyResult(entry.name, shown, True, checked=True))
            else:
                problem = f"sha256 mismatch: expected {expected}, got {actual}"
                results.append(VerifyResult(entry.name, shown, False, problem, checked=True))
    return results


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
