"""Model families: one module per checkpoint format, each with ``load(entry) -> model``.

Which module loads which ``arch`` is declared once, in :mod:`dsu.archs.families`.
Family modules import torch and their own dependencies, so they are imported only when
a model of theirs is loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dsu.archs.families import family_of, runnable_archs
from dsu.errors import UnsupportedModel

if TYPE_CHECKING:
    from dsu.archs.base import Bag, SeparationModel
    from dsu.registry.entry import ModelEntry


def supported() -> list[str]:
    """Architectures this installation can load."""
    return runnable_archs()


def runnable(arch: str) -> bool:
    """Whether this version of DSU has a loader for ``arch``."""
    family = family_of(arch)
    return family is not None and family.module is not None


def load(entry: ModelEntry, **options: Any) -> SeparationModel | Bag:
    """Build the model an entry describes, on the CPU, in fp32.

    Raises:
        UnsupportedModel: the arch is unknown, not runnable yet, or its extra is missing.
    """
    family = family_of(entry.arch)
    if family is None or family.module is None:
        raise UnsupportedModel(
            f"model {entry.name!r} has architecture {entry.arch!r}, which this version of DSU "
            f"cannot run yet (supported: {', '.join(supported())})"
        )
    missing = family.missing()
    if missing is not None:
        raise UnsupportedModel(
            f"model {entry.name!r} is a {family.name} model, which needs the {missing!r} "
            f"package: {family.install_hint()}"
        )
    module = importlib.import_module(family.module)
    return module.load(entry, **options)
