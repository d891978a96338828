"""A one-line progress bar on stderr (stdout stays clean for pipes)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``label [#####.....]  42% reading`` redrawn at most ten times a second."""

    def __init__(self, label: str, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.label = label
        self.stream = stream
        self.width = width
        self._last = 0.0
        self._tty = stream.isatty()

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        if not self._tty or (now - self._last < 0.1 and fraction < 1.0):
            return
        self._last = now
        filled = int(self.width * fraction)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {fraction:4.0%} {stage:<10}")
        self.stream.flush()

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
