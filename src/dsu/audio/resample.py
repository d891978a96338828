"""Sample-rate conversion with libsoxr, one-shot or streaming, with exact output lengths.

Both paths use soxr's "VHQ" quality (28-bit precision, passband to 95% of Nyquist) and
produce exactly ``round(T * out_rate / in_rate)`` frames for ``T`` input frames, so a file
resampled to a model's rate and back keeps its length. Streaming and one-shot outputs of
the same input are identical (soxr runs the same filter either way; tests check it).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import soxr

QUALITY = "VHQ"


def output_length(frames: int, in_rate: int, out_rate: int) -> int:
    """``round(frames * out_rate / in_rate)``, computed exactly (no float rounding drift)."""
    return round(Fraction(frames * out_rate, in_rate))


def _check_rates(in_rate: int, out_rate: int) -> None:
    if in_rate <= 0 or out_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")


def _fit(x: np.ndarray, frames: int) -> np.ndarray:
    """Trim or zero-pad ``[C, n]`` to ``[C, frames]``."""
    if x.shape[1] >= frames:
        return x[:, :frames]
    return np.pad(x, ((0, 0), (0, frames - x.shape[1])))


def resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """One-shot conversion: ``[C, T]`` -> float32 ``[C, round(T * out_rate / in_rate)]``.

    Returns ``x`` itself (no copy) when the rates are equal.
    """
    _check_rates(in_rate, out_rate)
    if in_rate == out_rate:
        return x
    frames = output_length(x.shape[1], in_rate, out_rate)
    if x.shape[1] == 0:
        return np.zeros((x.shape[0], 0), np.float32)
    y = soxr.resample(np.ascontiguousarray(x.T, dtype=np.float32), in_rate, out_rate, QUALITY)
    return np.ascontiguousarray(_fit(y.reshape(len(y), x.shape[0]).T, frames))


class Resampler:
    """Streaming conversion for one signal: feed blocks in order, then flush once.

    ``process`` takes ``[C, n]`` and returns ``[C, m]`` (m may be 0 while the filter
    fills); ``flush`` returns the rest, so that the outputs together hold exactly
    ``round(total_in * out_rate / in_rate)`` frames. With equal rates the blocks pass
    through untouched (no copy, no delay).
    """

    def __init__(self, in_rate: int, out_rate: int, channels: int) -> None:
        _check_rates(in_rate, out_rate)
        if channels <= 0:
            raise ValueError(f"channels must be positive, got {channels}")
        self.in_rate, self.out_rate, self.channels = in_rate, out_rate, channels
        self._identity = in_rate == out_rate
        self._stream = (
            None
            if self._identity
            else soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32", quality=QUALITY)
        )
        self._frames_in = 0
        self._frames_out = 0
        self._flushed = False

    def process(self, block: np.ndarray) -> np.ndarray:
        """Convert the next ``[C, n]`` block; returns ``[C, m]`` float32."""
        if self._flushed:
            raise RuntimeError("Resampler.process after flush")
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected a [{self.channels}, n] block, got {block.shape}")
        if self._stream is None:
            return block
        self._frames_in += block.shape[1]
        y = self._stream.resample_chunk(np.ascontiguousarray(block.T, dtype=np.float32))
        return self._emit(y, limit=None)

    def flush(self) -> np.ndarray:
        """The remaining ``[C, k]`` frames; the stream is finished afterwards."""
        if self._flushed:
            raise RuntimeError("Resampler.flush called twice")
        self._flushed = True
        if self._stream is None:
            return np.zeros((self.channels, 0), np.float32)
        tail = self._stream.resample_chunk(np.zeros((0, self.channels), np.float32), last=True)
        remaining = output_length(self._frames_in, self.in_rate, self.out_rate) - self._frames_out
        return self._emit(tail, limit=max(remaining, 0))

    def _emit(self, y: np.ndarray, limit: int | None) -> np.ndarray:
        out = y.reshape(len(y), self.channels).T
        if limit is not None:
            out = _fit(out, limit)
        self._frames_out += out.shape[1]
        return np.ascontiguousarray(out)
