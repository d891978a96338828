"""The engine: chunking, overlap-add, batching, precision, device, streaming, cancel.

Every family goes through :func:`separate_stream`, so a speed or memory gain here lands
everywhere at once. Names are imported on first use, so :mod:`dsu.engine.options` (the
option limits and choices a command line needs) is read without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EngineOptions": "dsu.engine.options",
    "check_against": "dsu.engine.options",
    "check_precision": "dsu.engine.device",
    "precision_context": "dsu.engine.device",
    "resolve_device": "dsu.engine.device",
    "StatsAccumulator": "dsu.archs.normalization",
    "TrackStats": "dsu.archs.normalization",
    "center_trim": "dsu.engine.framing",
    "iter_separate": "dsu.engine.overlap_add",
    "separate_array": "dsu.engine.overlap_add",
    "separate_stream": "dsu.engine.overlap_add",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dsu.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
