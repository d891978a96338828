"""Device selection, numeric precision and the CPU's compute threads."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from dsu.errors import BadRequest

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

THREADS_ENV = "DSU_THREADS"
"""Environment variable: intra-op compute threads (an integer >= 1); unset, one per
physical core (:func:`compute_threads`)."""

_threads_set = False


def physical_cores() -> int:
    """Physical cores this process may run on: SMT siblings count once (a second
    hyper-thread on a core adds little to matmul throughput and slows the barrier of every
    op), capped by a cgroup CPU quota (a container limited to N CPUs)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                (
                    (topology / "physical_package_id").read_text().strip(),
                    (topology / "core_id").read_text().strip(),
                )
            )
        except OSError:
            cores = set(cpus)  # no topology (not Linux): every CPU counts
            break
    count = len(cores) or os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, int(quota) // int(period)))
    return count


def compute_threads() -> int:
    """Intra-op threads for the engine: ``DSU_THREADS`` when set, else :func:`physical_cores`.

    Raises:
        BadRequest: ``DSU_THREADS`` is not an integer >= 1.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return physical_cores()
    if not value.isdigit() or int(value) < 1:
        raise BadRequest(f"{THREADS_ENV} must be an integer >= 1, got {value!r}")
    return int(value)


def configure_threads() -> None:
    """Give torch :func:`compute_threads` intra-op threads, once per process (the engine's
    first separation), so a later ``torch.set_num_threads`` of the caller's still wins.
    Decoding and encoding run on threads of their own outside this pool."""
    global _threads_set
    if not _threads_set:
        torch.set_num_threads(compute_threads())
        _threads_set = True


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must be available."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise BadRequest(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadRequest("device 'cuda' requested but no CUDA GPU is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BadRequest("device 'mps' requested but MPS is not available")
    return device


def check_precision(device: torch.device, precision: str) -> None:
    """Raise BadRequest when ``device`` cannot run ``precision`` (fp16 needs a GPU)."""
    if device.type == "cpu" and precision == "fp16":
        raise BadRequest("fp16 is for GPUs; use fp32 or bf16 on the CPU")


@contextlib.contextmanager
def precision_context(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast for fp16/bf16; fp32 runs the weights as they are."""
    if precision == "fp32":
        yield
        return
    check_precision(device, precision)
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield
