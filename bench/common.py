"""What every side-by-side bench shares: peak memory, a run in a fresh process, parity.

Each bench runs every side in its own subprocess, so a side's peak RSS is its own; the
child prints one JSON line last.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
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
