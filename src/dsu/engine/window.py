"""Cross-fade windows for overlap-add."""

from __future__ import annotations

import torch

MSST_FADE_DIVISOR = 10
"""MSST fades each chunk in and out over ``chunk // MSST_FADE_DIVISOR`` samples."""


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


def msst_fade_length(chunk: int, step: int) -> int:
    """Samples MSST fades over at each end of a ``chunk``-sample chunk.

    A fade starts and ends at exactly 0, so with chunks ``step`` apart it needs
    ``step <= chunk - 2``: then a neighbouring chunk weighs every sample that one chunk
    weighs 0. With (almost) no overlap there is nothing to cross-fade, and the window is
    flat instead of zeroing the samples at chunk boundaries as MSST's ``demix`` does.
    """
    return chunk // MSST_FADE_DIVISOR if step <= chunk - 2 else 0


def fade_window(
    length: int, fade: int, *, fade_in: bool = True, fade_out: bool = True
) -> torch.Tensor:
    """MSST's window: ones, with linear ramps ``0 -> 1`` and ``1 -> 0`` over ``fade`` samples.

    The ramps are ``linspace(0, 1, fade)`` and its reverse, as MSST's
    ``_getWindowingArray`` (where they overlap, ``2 * fade > length``, the fade-in wins);
    ``fade_in=False`` / ``fade_out=False`` then set that end back to ones, as MSST does for
    a track's first and last chunk.

    Returns:
        ``[length]`` float32 in ``[0, 1]``.
    """
    window = torch.ones(length)
    if fade <= 0:
        return window
    window[-fade:] = torch.linspace(1, 0, fade)
    window[:fade] = torch.linspace(0, 1, fade)
    if not fade_in:
        window[:fade] = 1
    if not fade_out:
        window[-fade:] = 1
    return window
