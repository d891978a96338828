"""The engine: chunking, overlap-add, batching, precision, device, streaming, cancel.

Every family goes through :func:`separate_stream`, so a speed or memory gain here lands
everywhere at once.
"""

from dsu.engine.device import precision_context, resolve_device
from dsu.engine.options import EngineOptions
from dsu.engine.overlap_add import (
    StatsAccumulator,
    TrackStats,
    center_trim,
    separate_array,
    separate_stream,
)

__all__ = [
    "EngineOptions",
    "StatsAccumulator",
    "TrackStats",
    "center_trim",
    "precision_context",
    "resolve_device",
    "separate_array",
    "separate_stream",
]
