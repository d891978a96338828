"""Model families: one module per checkpoint format, each with ``load(entry) -> model``.

Family modules import torch and their own dependencies, so they are imported only when
a model of theirs is loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dsu.errors import UnsupportedModel

if TYPE_CHECKING:
    from dsu.archs.base import Bag, SeparationModel
    from dsu.registry.entry import ModelEntry

FAMILIES: dict[str, str] = {
    "demucs": "dsu.archs.demucs",
    "center": "dsu.archs.builtin",
    "hpss": "dsu.archs.builtin",
    "tdc_unet": "dsu.archs.tdc_unet",
}
"""Architecture name (``models.json`` ``arch``) -> module implementing it."""


def supported() -> list[str]:
    """Architectures this installation can load."""
    return sorted(FAMILIES)


def load(entry: ModelEntry, **options: Any) -> SeparationModel | Bag:
    """Build the model an entry describes, on the CPU, in fp32."""
    module_name = FAMILIES.get(entry.arch)
    if module_name is None:
        raise UnsupportedModel(
            f"model {entry.name!r} has architecture {entry.arch!r}, which this version of DSU "
            f"cannot run yet (supported: {', '.join(supported())})"
        )
    module = importlib.import_module(module_name)
    return module.load(entry, **options)
