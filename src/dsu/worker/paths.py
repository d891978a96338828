"""``--allowed-root``: keep a worker's inputs and outputs inside chosen directories."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dsu.errors import PathNotAllowed


def confine(path: str | Path, roots: Sequence[Path], what: str) -> Path:
    """Resolve ``path`` (symlinks and ``..`` included) and check it lies inside a root.

    Args:
        path: a client-supplied path; relative paths are taken from the worker's cwd.
        roots: resolved allowed directories; empty means everything is allowed.
        what: ``"input"`` or ``"output"``, for the message.

    Returns:
        The resolved absolute path.

    Raises:
        PathNotAllowed: the resolved path is outside every root.
    """
    resolved = Path(path).expanduser().resolve()
    if roots and not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise PathNotAllowed(
            f"{what} {path} resolves to {resolved}, outside the allowed roots ({allowed})"
        )
    return resolved
