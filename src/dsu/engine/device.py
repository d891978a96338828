"""Device selection and numeric precision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from dsu.errors import BadRequest

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
