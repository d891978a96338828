"""The C heap's policy while separating: keep freed tensor memory for the next chunk.

A network's activations are hundreds of megabytes allocated and freed for every chunk.
glibc serves each block above its mmap threshold (at most 32 MiB) from a fresh ``mmap``
and unmaps it on free, and trims the heap's free top back to the kernel, so every chunk
faults its working set in again page by page, and the kernel zeroes each page: about
0.9 M minor faults and a sixth of the CPU time of a 15 s HTDemucs separation on CPU.
Serving every block from the heap and never trimming it during a separation removes that
cost; :func:`release_free_memory` hands what is free back to the kernel between
separations and when a model is unloaded, so an idle worker does not keep its peak.

Process-wide by nature. Elsewhere than on glibc (macOS, Windows, musl) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# mallopt takes an int: 2 GiB of free heap top is as close to "never trim" as it goes.
_TRIM_ABOVE = 2**31 - 1
_lock = threading.Lock()
_tuned = False


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def keep_freed_memory(*, share_main_heap: bool = False) -> bool:
    """Make the C heap reuse freed blocks instead of returning them to the kernel.

    Args:
        share_main_heap: also make threads started after this call allocate from the
            main heap. glibc otherwise gives each thread a heap of its own, which still
            shrinks and grows around the chunks a thread separates (about a sixth of the
            page faults are left). The service, which separates in a thread it starts,
            asks for it; it is not the default because every thread of the process then
            shares one heap lock.

    Idempotent and thread-safe. Returns whether the policy is in force (glibc only).
    """
    global _tuned
    libc = _libc()
    if libc is None:
        return False
    with _lock:
        if not _tuned:
            _tuned = bool(
                libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_ABOVE)
            )
        if _tuned and share_main_heap:
            libc.mallopt(_M_ARENA_MAX, 1)
        return _tuned


def release_free_memory() -> None:
    """Return the heap's free pages to the kernel (``malloc_trim``); a no-op off glibc."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
