"""Where a job's input and result files live: the :class:`ResultStorage` interface.

Every path is derived from the job's storage key (random, server-chosen) and from fixed
names, never from client input. :class:`LocalStorage` keeps them under the data dir;
a shared-storage backend for several worker machines implements the same methods.
"""

from __future__ import annotations

import re
import shutil
import time
from abc import ABC, abstractmethod
from pathlib import Path

_KEY = re.compile(r"^[0-9a-f]{32}$")
# Input file extensions kept so decoders that look at the name see the right one.
INPUT_EXTENSIONS = frozenset(
    {"wav", "mp3", "flac", "ogg", "oga", "opus", "m4a", "mp4", "aac", "aif", "aiff", "webm"}
)


def input_extension(candidate: str | None) -> str:
    """A safe extension for an input file, from a client hint (file name, URL or mime)."""
    if not candidate:
        return ""
    tail = candidate.lower().rsplit("/", 1)[-1].split("?", 1)[0]
    ext = tail.rsplit(".", 1)[-1] if "." in tail else tail
    aliases = {"mpeg": "mp3", "x-wav": "wav", "wave": "wav", "x-flac": "flac", "x-m4a": "m4a"}
    ext = aliases.get(ext, ext)
    return ext if ext in INPUT_EXTENSIONS else ""


class ResultStorage(ABC):
    """Files of jobs, addressed by storage key."""

    @abstractmethod
    def input_path(self, key: str, extension: str = "") -> Path:
        """Where the job's input audio is (or will be) written; parents exist."""

    @abstractmethod
    def find_input(self, key: str) -> Path | None:
        """The job's input file, if present."""

    @abstractmethod
    def output_dir(self, key: str) -> Path:
        """The directory the job's stems are written into; it exists."""

    @abstractmethod
    def result_file(self, key: str, name: str) -> Path | None:
        """A result file by its base name, if present."""

    @abstractmethod
    def remove_input(self, key: str) -> None: ...

    @abstractmethod
    def remove_outputs(self, key: str) -> None:
        """Remove the job's stem files (its input stays, for a rerun)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove everything of the job."""

    @abstractmethod
    def sweep(self, keep: set[str], older_than: float) -> int:
        """Remove leftovers of jobs not in ``keep`` untouched for ``older_than`` seconds."""


class LocalStorage(ResultStorage):
    """Files under ``root/<key>/``: ``input.<ext>`` and ``out/<stem>.<format>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _dir(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / key

    def input_path(self, key: str, extension: str = "") -> Path:
        directory = self._dir(key)
        directory.mkdir(parents=True, exist_ok=True)
        return directory / (f"input.{extension}" if extension else "input")

    def find_input(self, key: str) -> Path | None:
        directory = self._dir(key)
        if not directory.is_dir():
            return None
        found = [p for p in directory.iterdir() if p.is_file() and p.name.startswith("input")]
        return found[0] if found else None

    def output_dir(self, key: str) -> Path:
        out = self._dir(key) / "out"
        out.mkdir(parents=True, exist_ok=True)
        return out

    def result_file(self, key: str, name: str) -> Path | None:
        if "/" in name or "\\" in name or name.startswith("."):
            return None
        path = self._dir(key) / "out" / name
        return path if path.is_file() else None

    def remove_input(self, key: str) -> None:
        found = self.find_input(key)
        if found is not None:
            found.unlink(missing_ok=True)

    def remove_outputs(self, key: str) -> None:
        shutil.rmtree(self._dir(key) / "out", ignore_errors=True)

    def delete(self, key: str) -> None:
        shutil.rmtree(self._dir(key), ignore_errors=True)

    def sweep(self, keep: set[str], older_than: float) -> int:
        cutoff = time.time() - older_than
        removed = 0
        for entry in self.root.iterdir():
            if entry.name in keep or not _KEY.match(entry.name) or not entry.is_dir():
                continue
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed
