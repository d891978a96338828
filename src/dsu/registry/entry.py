"""A resolved registry entry: everything needed to build one model, paths made absolute."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelEntry:
    """One model of a models directory (DESIGN §2), with paths resolved inside it.

    Attributes:
        name: the registry name (``htdemucs``, ``tdc-vocals``, ``center``).
        arch: the family that loads it (``demucs``, ``tdc_unet``, ``center``, ...).
        weights: absolute checkpoint paths, in the order the family expects (for a
            Demucs bag: one per member, in the bag's order).
        config: absolute path of the config file (MSST yaml, Demucs bag yaml) or None.
        stems: the stem names the model outputs.
        sha256: expected digests by weight file name (full digest or a hex prefix).
        url: download URL by weight file name.
        options: family-specific settings from ``models.json`` (``"options": {...}``),
            e.g. a bag's ``weights`` and ``segment``.
        requires: the ``dsu`` extra the family needs beyond the core install
            (``"quantized"`` for diffq-compressed Demucs models), or None.
        allow_checksum_mismatch: load the model even when a file's sha256 differs from
            ``sha256`` (``models.json`` ``"allow_checksum_mismatch": true``, for a checkpoint
            changed on purpose); off by default.
    """

    name: str
    arch: str
    weights: tuple[Path, ...] = ()
    config: Path | None = None
    stems: tuple[str, ...] = ()
    sha256: dict[str, str] = field(default_factory=dict)
    url: dict[str, str] = field(default_factory=dict)
    license: str | None = None
    description: str = ""
    aliases: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    requires: str | None = None
    allow_checksum_mismatch: bool = False
