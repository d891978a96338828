"""What every side-by-side bench shares: peak memory, a run in a fresh process, parity,
the network's FLOPs, the machine's peak matmul rate and the JSON each bench leaves for
``bench/report.py``.

Each bench runs every side in its own subprocess, so a side's peak RSS is its own; the
child prints one JSON line last.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str | Path, args: list[str]) -> dict[str, Any]:
    """Run ``python SCRIPT ARGS`` and return the JSON object on its last stdout line."""
    done = subprocess.run(
        [sys.executable, str(script), *args], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Plain SDR in dB of ``estimate`` against ``reference`` over their common length."""
    n = min(reference.shape[-1], estimate.shape[-1])
    reference = reference[..., :n].astype(np.float64)
    error = np.square(reference - estimate[..., :n]).sum()
    return float(10 * np.log10(np.square(reference).sum() / max(error, 1e-30)))


OUT = Path(__file__).resolve().parent / "out"
"""Where benches write their JSON (``bench/out/<name>.json``, gitignored)."""


def count_gflop(run: Callable[[], object]) -> float:
    """GFLOP of the matmuls, convolutions and attention ``run()`` performs
    (FlopCounterMode, which has no formula for the CPU's flash-attention kernel: counted
    here as its two batched matmuls, as the counter counts the GPU's)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_flash(query: Any, key: Any, value: Any, *_: Any, **__: Any) -> int:
        return sdpa_flop_count(query, key, value)

    cpu_attention = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    counter = FlopCounterMode(display=False, custom_mapping={cpu_attention: cpu_flash})
    with torch.inference_mode(), counter:
        run()
    return counter.get_total_flops() / 1e9


def peak_matmul_gflops(size: int = 4096, runs: int = 3) -> float:
    """This machine's fp32 matmul rate in GFLOP/s: the best of ``runs`` ``size``-square
    ``torch.mm`` on the CPU, with torch's default threads (its practical peak)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def machine() -> dict[str, Any]:
    """The CPU, thread count and versions a result was measured with."""
    import torch

    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and cpu in ("", "x86_64"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
                flags = [f for f in line.split(":", 1)[1].split() if f in wanted]
                break
    return {
        "cpu": cpu,
        "cores": torch.get_num_threads(),
        "isa": flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Save one bench's result as ``bench/out/<name>.json`` for ``bench/report.py``."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
