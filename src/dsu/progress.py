"""One progress throttle for every front end that reports a separation's progress.

The engine reports after every forward pass, hundreds of times a second on a GPU. The
worker (protocol events) and the service (the job store) pass those reports through a
:class:`ProgressThrottle`, so a client sees a few updates per second and every change of
stage at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

ProgressCallback = Callable[[str, float], None]
"""``(stage, fraction)``, as :meth:`dsu.api.Separator.separate` reports progress."""


class ProgressThrottle:
    """Passes ``(stage, fraction)`` on to ``emit`` at most once per ``interval`` seconds.

    The first report of each stage always passes (stages are few: ``loading_model``,
    ``reading``, ``separating``); further reports of the same stage pass when ``interval``
    has gone by since the last one passed. Fractions are clamped to ``[0, 1]``.

    Args:
        emit: receives the reports that pass.
        interval: least seconds between two reports of one stage.
        clock: a monotonic clock in seconds (tests pass a fake one).
    """

    def __init__(
        self,
        emit: ProgressCallback,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._interval = interval
        self._clock = clock
        self._stage: str | None = None
        self._last = 0.0

    def __call__(self, stage: str, fraction: float) -> None:
        now = self._clock()
        if stage == self._stage and now - self._last < self._interval:
            return
        self._stage, self._last = stage, now
        self._emit(stage, min(max(float(fraction), 0.0), 1.0))
