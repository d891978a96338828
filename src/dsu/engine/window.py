"""Cross-fade windows for overlap-add."""

from __future__ import annotations

import torch


def chunk_window(kind: str, length: int, transition_power: float = 1.0) -> torch.Tensor:
    """Weight of each sample of a ``length``-sample chunk when chunks are summed.

    ``triangle`` rises linearly to the middle and falls back (Demucs' window, raised to
    ``transition_power``); ``rect`` weighs every sample equally.

    Returns:
        ``[length]`` float32, strictly positive.
    """
    if kind == "rect":
        return torch.ones(length)
    if kind != "triangle":
        raise ValueError(f"unknown window {kind!r}")
    half = length // 2
    rise = torch.arange(1, half + 1, dtype=torch.float32)
    fall = torch.arange(length - half, 0, -1, dtype=torch.float32)
    weight = torch.cat([rise, fall])
    return (weight / weight.max()) ** transition_power
