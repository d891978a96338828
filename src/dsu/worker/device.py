"""Check ``--device`` and resolve ``auto`` without importing torch.

``import torch`` takes seconds; the worker must announce ``ready`` (with its device) sooner,
so it infers the device from the installed torch build and the machine: a CUDA build of
torch plus an NVIDIA driver means ``cuda``, macOS on arm64 means ``mps``, anything else
``cpu``. The engine checks the device for real when the first model loads.
"""

from __future__ import annotations

import importlib.util
import platform
import re
import shutil
import sys
from pathlib import Path

from dsu.errors import BadRequest

DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N", "mps")
"""What ``--device`` accepts (``N`` is a GPU index)."""

_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")
_NVIDIA_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version")


def _torch_cuda_build() -> bool:
    """True when the installed torch was built with CUDA (read from ``torch/version.py``)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    version_file = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        text = version_file.read_text(encoding="utf-8")
    except OSError:
        return False
    match = re.search(r"^cuda\s*(?::[^=]*)?=\s*(.+)$", text, re.MULTILINE)
    return bool(match) and match.group(1).strip() not in ("None", "''", '""')


def _nvidia_driver_present() -> bool:
    if any(Path(p).exists() for p in _NVIDIA_DEVICE_FILES):
        return True
    return shutil.which("nvidia-smi") is not None


def guess_device(requested: str) -> str:
    """The device a worker will use: ``requested`` itself unless it is ``auto``."""
    if requested != "auto":
        return requested
    if _torch_cuda_build() and _nvidia_driver_present():
        return "cuda"
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "mps"
    return "cpu"


def check_device_name(name: str) -> str:
    """``name`` itself when it is one of :data:`DEVICE_NAMES`.

    Only the name is checked: whether that GPU is there is known once torch loads, and a
    model load then says so.

    Raises:
        BadRequest: any other name.
    """
    if not _DEVICE_PATTERN.fullmatch(name):
        raise BadRequest(f"--device {name}: not a device; use {', '.join(DEVICE_NAMES)}")
    return name
