"""A one-line progress bar on stderr (stdout stays clean for pipes)."""

from __future__ import annotations

import sys
from typing import TextIO

from dsu.progress import ProgressThrottle

REDRAW_INTERVAL = 0.1
"""Least seconds between two redraws of one stage."""


class ProgressBar:
    """``label [#####.....]  42% reading`` redrawn at most ten times a second (through the
    shared :class:`~dsu.progress.ProgressThrottle`), and always at 100%."""

    def __init__(self, label: str, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.label = label
        self.stream = stream
        self.width = width
        self._tty = stream.isatty()
        self._throttle = ProgressThrottle(self._draw, REDRAW_INTERVAL)

    def __call__(self, stage: str, fraction: float) -> None:
        if not self._tty:
            return
        if fraction >= 1.0:
            self._draw(stage, 1.0)
        else:
            self._throttle(stage, fraction)

    def _draw(self, stage: str, fraction: float) -> None:
        filled = int(self.width * fraction)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {fraction:4.0%} {stage:<10}")
        self.stream.flush()

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
