"""sha256 digests of model files: full digests or the hex prefixes Demucs puts in file names."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_HEX = re.compile(r"[0-9a-f]{8,64}")
# Demucs names its checkpoints ``<signature>-<first 8 hex of the sha256>.th`` and checks
# that prefix when loading (demucs.repo.check_checksum, torch.hub's check_hash).
_DEMUCS_NAME = re.compile(r"^(?P<sig>.+)-(?P<prefix>[0-9a-f]{8})\.th$")

CHUNK = 1 << 20


def is_digest(text: object) -> bool:
    """True if ``text`` is a lowercase hex sha256 digest or a prefix of at least 8 hex."""
    return isinstance(text, str) and _HEX.fullmatch(text) is not None


def file_sha256(path: Path) -> str:
    """Full hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def matches(actual: str, expected: str) -> bool:
    """True if the full digest ``actual`` starts with ``expected`` (full digest or prefix)."""
    return actual.startswith(expected.lower())


def demucs_name(file_name: str) -> tuple[str, str] | None:
    """``(signature, sha256 prefix)`` of a Demucs checkpoint name, or None for other names."""
    found = _DEMUCS_NAME.match(file_name)
    return (found["sig"], found["prefix"]) if found else None
