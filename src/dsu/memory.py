"""Process and GPU memory figures for ``status`` and the model cache's budget."""

from __future__ import annotations

import os
import sys
from typing import Any


def rss_bytes() -> int | None:
    """Resident set size of this process now (Linux), else its peak (macOS, BSD); None on
    Windows."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in bytes on macOS and in KiB elsewhere.
    return peak if sys.platform == "darwin" else peak * 1024


def gpu_bytes() -> dict[str, int] | None:
    """Memory held by torch on the GPU, if torch is already imported and using one.

    Never imports torch itself: ``status`` must stay instant before the first model loads.
    """
    torch: Any = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return {
                "allocated": int(torch.cuda.memory_allocated()),
                "reserved": int(torch.cuda.memory_reserved()),
            }
        mps = getattr(torch, "mps", None)
        if mps is not None and torch.backends.mps.is_available():
            return {"allocated": int(mps.current_allocated_memory())}
    except (RuntimeError, AttributeError):
        return None
    return None


def gpu_allocated() -> int:
    """Bytes allocated on the GPU by torch (0 without a GPU or before torch loads)."""
    figures = gpu_bytes()
    return figures["allocated"] if figures else 0


def megabytes(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


def parameter_bytes(model: Any) -> int:
    """Bytes of the parameters and buffers of the torch modules a model object holds.

    A floor for a model's memory cost when the RSS it added is hidden by allocator reuse.
    Looks at a bag's members and at every ``torch.nn.Module`` attribute of a model.
    """
    torch: Any = sys.modules.get("torch")
    if torch is None:
        return 0
    members = getattr(model, "members", None) or [model]
    modules = [
        value
        for member in members
        for value in getattr(member, "__dict__", {}).values()
        if isinstance(value, torch.nn.Module)
    ]
    return sum(
        t.numel() * t.element_size()
        for module in modules
        for t in [*module.parameters(), *module.buffers()]
    )
