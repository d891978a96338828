"""The frozen runtime's one entry point.

Every launcher of the bundle (``dsu``, ``dsu-demucs``, ...) is this script under the name
of one of DSU's console scripts; it runs the function ``pyproject.toml`` declares for
that name, read from the bundled package metadata, so a new console script needs no
edit here.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from pathlib import Path


def main() -> None:
    # The executable's own name says which launcher this is ('.exe' dropped on Windows).
    name = Path(sys.executable).stem
    scripts = entry_points(group="console_scripts", name=name)
    if not scripts:
        sys.exit(f"{name}: not a DSU launcher (rename it back to one of DSU's console scripts)")
    sys.exit(next(iter(scripts)).load()())


if __name__ == "__main__":
    main()
