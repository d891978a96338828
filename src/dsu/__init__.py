"""DSU: one runtime for music source separation.

The package root stays import-light (no torch) so that ``dsu worker`` can announce
itself before heavy libraries load; :class:`Separator` is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from dsu.api import Separator

__all__ = ["Separator", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Separator":
        from dsu.api import Separator

        return Separator
    raise AttributeError(f"module 'dsu' has no attribute {name!r}")
