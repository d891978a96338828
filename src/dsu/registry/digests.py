"""sha256 digests of model files, remembered so that loading a model does not hash it again.

A digest is kept per file as ``(size, mtime_ns, sha256)``, in memory for the process and in a
small JSON file (``.dsu-sha256.json``) in the file's own folder, so that every ``dsu separate``
run, a new process each time, does not re-read a 600 MB checkpoint before loading it (hashing
costs about as much as the load itself). Why this is safe enough and where the limits are:

- Any rewrite of a file (a new download, a copy over it, an editor) changes its size or its
  modification time, so the remembered digest no longer applies and the file is hashed again.
- What is stored is the digest, not a verdict: an edited ``sha256`` in ``models.json`` is
  compared against the real digest, never against an old "ok".
- Bit rot that keeps size and mtime is not seen at load time; ``dsu models verify`` always
  hashes every file in full (and refreshes what is remembered).
- A folder that cannot be written (a read-only models directory) just keeps the digests in
  memory; the cache is an optimisation and never a reason to fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

from dsu.registry.checksum import file_sha256

CACHE_FILE = ".dsu-sha256.json"
_VERSION = 1

_lock = threading.Lock()
_memory: dict[Path, tuple[int, int, str]] = {}


def digest(path: Path) -> str:
    """Full hex sha256 of ``path``, hashed only when its size or mtime changed since last time.

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path).absolute()
    stat = path.stat()
    key = (stat.st_size, stat.st_mtime_ns)
    with _lock:
        known = _memory.get(path)
    if known is None:
        known = _read_folder(path.parent).get(path.name)
    if known is not None and known[:2] == key:
        with _lock:
            _memory[path] = known
        return known[2]
    return rehash(path)


def rehash(path: Path) -> str:
    """Hash ``path`` in full, whatever is remembered, and remember the result."""
    path = Path(path).absolute()
    before = path.stat()
    value = file_sha256(path)
    after = path.stat()
    if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):
        # Only a file that did not change while it was read gets its digest remembered.
        remember(path, value, after)
    return value


def remember(path: Path, value: str, stat: os.stat_result | None = None) -> None:
    """Record ``value`` as the digest of ``path`` as it is now (after a verified download)."""
    path = Path(path).absolute()
    stat = stat or path.stat()
    entry = (stat.st_size, stat.st_mtime_ns, value)
    with _lock:
        _memory[path] = entry
        folder = _read_folder(path.parent)
        folder[path.name] = entry
        _write_folder(path.parent, folder)


def forget_all() -> None:
    """Drop what this process remembers (the files in the folders stay)."""
    with _lock:
        _memory.clear()


def _read_folder(folder: Path) -> dict[str, tuple[int, int, str]]:
    try:
        data = json.loads((folder / CACHE_FILE).read_text(encoding="utf-8"))
        files = data["files"] if data.get("version") == _VERSION else {}
        return {
            name: (int(item["size"]), int(item["mtime_ns"]), str(item["sha256"]))
            for name, item in files.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        # Absent or damaged: every file is simply hashed again.
        return {}


def _write_folder(folder: Path, files: dict[str, tuple[int, int, str]]) -> None:
    document = {
        "version": _VERSION,
        "files": {
            name: {"size": size, "mtime_ns": mtime, "sha256": value}
            for name, (size, mtime, value) in sorted(files.items())
        },
    }
    tmp = folder / f".{CACHE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        tmp.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, folder / CACHE_FILE)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
