"""The Python API's audio streams: the mixture read block by block (:class:`Input`, from
an array or a file) and each stem's output (:class:`StemSink`, to an array or a file).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dsu import audio
from dsu.errors import BadAudio, BadRequest

BLOCK = 1 << 17
"""Frames per block read from an input (about 3 s at 44.1 kHz)."""


@dataclass(frozen=True)
class Input:
    """A mixture to separate: a file or an array, read block by block at its own rate."""

    name: str
    samplerate: int
    channels: int
    frames: int  # exact for arrays and most files, an estimate for AAC/MP4 (progress only)
    blocks: Callable[[], Iterator[np.ndarray]]


def array_input(data: np.ndarray | torch.Tensor, samplerate: int | None) -> Input:
    """An array at ``samplerate``: ``[C, T]``, ``[T]`` (mono), or soundfile's ``[T, C]``
    (more than two rows, at most two columns).

    Raises:
        BadRequest: no ``samplerate``.
        BadAudio: not one or two dimensions, no samples, or NaN/infinite samples.
    """
    if samplerate is None:
        raise BadRequest("an array input needs its samplerate")
    array = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise BadAudio("<array>", f"expected [channels, samples], got shape {array.shape}")
    if array.shape[1] <= 2 < array.shape[0]:
        array = array.T  # [T, C], as soundfile returns it
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.shape[1] == 0:
        raise BadAudio("<array>", "no audio samples (zero length)")
    if not np.isfinite(array).all():
        raise BadAudio("<array>", "contains NaN or infinite samples")
    return Input(
        "<array>",
        samplerate,
        array.shape[0],
        array.shape[1],
        lambda: (array[:, i : i + BLOCK] for i in range(0, array.shape[1], BLOCK)),
    )


def file_input(path: Path) -> Input:
    """A file, probed now and decoded anew by every ``blocks()`` call.

    Raises:
        AudioIOError: the path cannot be opened.
        BadAudio: the file is not decodable audio (see :func:`dsu.audio.probe`).
    """
    info = audio.probe(path)
    # Decoded on its own thread, ahead of the engine (dsu.audio.decode.read_ahead).
    blocks = lambda: audio.read_ahead(path, BLOCK)  # noqa: E731 - one decode per call
    return Input(str(path), info.samplerate, info.channels, info.frames, blocks)


class StemSink:
    """Turns model-rate stem blocks into one output: resampled, channel-matched, exact length.

    With a ``writer`` blocks are encoded as they come; without one they are kept and
    joined by :meth:`finish`.
    """

    def __init__(
        self, model_rate: int, model_channels: int, out_rate: int, channels: int, length: int
    ) -> None:
        self._resampler = audio.Resampler(model_rate, out_rate, model_channels)
        self._model_channels = model_channels
        self._channels = channels
        self._length = length
        self._written = 0
        self._parts: list[np.ndarray] = []
        self.writer: audio.AudioWriter | None = None

    def _emit(self, block: np.ndarray) -> None:
        block = block[:, : self._length - self._written]
        if not block.shape[-1]:
            return
        if self._channels == 1:
            block = block.mean(0, keepdims=True)
        if self.writer is not None:
            self.writer.write(block)
        else:
            self._parts.append(block)
        self._written += block.shape[-1]

    def push(self, block: torch.Tensor) -> None:
        """Take the next ``[C, n]`` block at the model's rate."""
        self._emit(self._resampler.process(block.numpy()))

    def finish(self) -> np.ndarray | None:
        """Flush, pad to the exact length; the joined ``[C, T]`` array when not writing."""
        self._emit(self._resampler.flush())
        missing = self._length - self._written
        if missing > 0:
            self._emit(np.zeros((self._model_channels, missing), dtype=np.float32))
        if self.writer is not None:
            return None
        return np.concatenate(self._parts, -1).astype(np.float32, copy=False)
