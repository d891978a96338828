"""Ensemble algorithms: one stem from the same stem of several models, block by block.

The algorithms are UVR's and audio-separator's (``audio_separator.separator.ensembler``),
each defined on the models' waveforms ``x_m [C, T]`` with weights ``w_m``:

- ``avg_wave``: ``sum_m w_m x_m / sum_m w_m``.
- ``median_wave``, ``min_wave``, ``max_wave``: per sample, the median, or the value of
  least / greatest magnitude (the first model's on a tie).
- ``avg_fft``, ``median_fft``, ``min_fft``, ``max_fft``: the same on the complex STFT
  (Hann window of :data:`N_FFT` samples, hop :data:`HOP`, centred frames with zeros
  beyond the track, as ``librosa.stft``), the median taken on the real and the imaginary
  parts apart, then the inverse STFT (window-squared overlap-add, ``librosa.istft``)
  cut to the track's length.
- ``uvr_max_spec``, ``uvr_min_spec``: UVR's ``spec_utils.ensembling``: the same STFT, and
  bin by bin the greatest / least magnitude, a later model winning a tie (UVR folds the
  models one after the other with ``>=`` / ``<=``).
- ``ensemble_wav``: UVR's ``spec_utils.ensemble_wav``: the track cut into
  :data:`WAV_SPLITS` near-equal parts (``numpy.array_split``), each part taken from the
  model whose part has the least mean magnitude. audio-separator hands it ``[C, T]``
  arrays, so it splits the channel axis instead of time (one model per channel for the
  whole track); DSU splits time, as the algorithm means.

Weights count only in the two averages; the other algorithms refuse unequal weights
rather than ignore them (:func:`check_weights`).

Streaming: a combiner takes the models' aligned blocks as they come and returns what is
final. The wave algorithms are per sample; the STFT ones keep one window of context, so
the result equals the whole-array computation to float precision; ``ensemble_wav``
holds one part (``T / 240`` samples) per model. This module needs numpy only, so a
pipeline spec is validated without torch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np

from dsu.errors import BadRequest

WAVE_ALGORITHMS = ("avg_wave", "median_wave", "min_wave", "max_wave")
FFT_ALGORITHMS = ("avg_fft", "median_fft", "min_fft", "max_fft", "uvr_max_spec", "uvr_min_spec")
ALGORITHMS = (*WAVE_ALGORITHMS, *FFT_ALGORITHMS, "ensemble_wav")
"""Every ensemble algorithm, by its UVR / audio-separator name."""
DEFAULT_ALGORITHM = "avg_wave"
WEIGHTED = ("avg_wave", "avg_fft")
"""The algorithms that use per-model weights."""

N_FFT = 2048
HOP = 1024
WAV_SPLITS = 240


def check_weights(algorithm: str, weights: Sequence[float] | None, models: int) -> list[float]:
    """The weights of ``models`` models for ``algorithm`` (None: all equal).

    Raises:
        BadRequest: an unknown algorithm; not one weight per model; a weight negative or
            not finite, or all zero; unequal weights for an algorithm that has none.
    """
    if algorithm not in ALGORITHMS:
        raise BadRequest(
            f"unknown ensemble algorithm {algorithm!r}; one of {', '.join(ALGORITHMS)}"
        )
    if weights is None:
        return [1.0] * models
    values = [float(w) for w in weights]
    if len(values) != models:
        raise BadRequest(f"{len(values)} weights for {models} models: give one weight per model")
    if not all(math.isfinite(w) and w >= 0 for w in values) or sum(values) == 0:
        raise BadRequest(f"weights must be finite, not negative and not all zero, got {values}")
    if algorithm not in WEIGHTED and len(set(values)) > 1:
        raise BadRequest(
            f"{algorithm} has no weights (only {' and '.join(WEIGHTED)} do); drop the weights "
            "or choose a weighted algorithm"
        )
    return values


def _pick(stack: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``stack[index[...], ...]`` along the first axis."""
    return np.take_along_axis(stack, index[None], 0)[0]


def _wave(algorithm: str, weights: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Per-element rule on a stack ``[M, ...]`` (real samples or complex bins)."""
    if algorithm in ("avg_wave", "avg_fft"):
        return lambda x: np.tensordot(weights, x, 1) / weights.sum()
    if algorithm == "median_wave":
        return lambda x: np.median(x, 0)
    if algorithm == "median_fft":
        return lambda x: np.median(x.real, 0) + 1j * np.median(x.imag, 0)
    if algorithm in ("min_wave", "min_fft"):
        return lambda x: _pick(x, np.abs(x).argmin(0))
    if algorithm in ("max_wave", "max_fft"):
        return lambda x: _pick(x, np.abs(x).argmax(0))
    keep_later = np.greater_equal if algorithm == "uvr_max_spec" else np.less_equal

    def fold(x: np.ndarray) -> np.ndarray:
        out = x[0]
        for other in x[1:]:
            out = np.where(keep_later(np.abs(other), np.abs(out)), other, out)
        return out

    return fold


class Combiner(ABC):
    """Combines one stem of ``M`` models block by block.

    :meth:`push` takes the models' next aligned blocks ``[M, C, n]`` and returns the
    output that is final, ``[C, k]``; after the last block (``length`` samples in all)
    :meth:`push` has returned exactly ``length`` samples.
    """

    def __init__(self, algorithm: str, weights: Sequence[float], channels: int, length: int):
        self.algorithm = algorithm
        self.channels = channels
        self.length = length
        self._weights = np.asarray(weights, dtype=np.float64)
        self._received = 0

    def push(self, blocks: np.ndarray) -> np.ndarray:
        self._received += blocks.shape[-1]
        if self._received > self.length:
            raise ValueError(f"more than the {self.length} samples announced")
        return self._push(blocks)

    @abstractmethod
    def _push(self, blocks: np.ndarray) -> np.ndarray:
        """Combine blocks already counted against the announced length."""


class _WaveCombiner(Combiner):
    def __init__(self, algorithm: str, weights: Sequence[float], channels: int, length: int):
        super().__init__(algorithm, weights, channels, length)
        self._rule = _wave(algorithm, self._weights)

    def _push(self, blocks: np.ndarray) -> np.ndarray:
        return self._rule(blocks.astype(np.float64)).astype(np.float32)


class _SpectralCombiner(Combiner):
    """STFT, combine bin by bin, inverse STFT, one frame at a time with its context.

    Frame ``f`` covers samples ``[f * HOP - N_FFT / 2, f * HOP + N_FFT / 2)`` (zeros
    outside the track); a sample is final once every frame over it is added.
    """

    def __init__(self, algorithm: str, weights: Sequence[float], channels: int, length: int):
        super().__init__(algorithm, weights, channels, length)
        self._rule = _wave(algorithm, self._weights)
        self._window = np.hanning(N_FFT + 1)[:-1]  # periodic, as librosa's "hann"
        self._frames = 1 + length // HOP
        self._next = 0
        half = N_FFT // 2
        models = len(weights)
        self._input = np.zeros((models, channels, half))
        self._input_start = -half
        self._acc = np.zeros((channels, 0))
        self._norm = np.zeros(0)
        self._acc_start = -half
        self._emitted = 0

    def _push(self, blocks: np.ndarray) -> np.ndarray:
        half = N_FFT // 2
        parts = [self._input, blocks.astype(np.float64)]
        if self._received == self.length:
            parts.append(np.zeros((*blocks.shape[:2], N_FFT)))
        self._input = np.concatenate(parts, -1)
        end = self._input_start + self._input.shape[-1]
        last = min(self._frames, (end - half) // HOP + 1)
        if last > self._next:
            self._add_frames(self._next, last)
            self._next = last
            keep = self._next * HOP - half
            self._input = self._input[..., keep - self._input_start :]
            self._input_start = keep
        final = self.length if self._next == self._frames else self._next * HOP - half
        return self._take(max(final, 0))

    def _add_frames(self, first: int, last: int) -> None:
        half = N_FFT // 2
        starts = np.arange(first, last) * HOP - half - self._input_start
        index = starts[:, None] + np.arange(N_FFT)
        frames = self._input[..., index] * self._window  # [M, C, F, N_FFT]
        spectra = np.fft.rfft(frames, axis=-1)
        combined = self._rule(spectra)  # [C, F, bins]
        waves = np.fft.irfft(combined, N_FFT, axis=-1) * self._window
        hi = last * HOP - half + N_FFT - self._acc_start
        grow = hi - self._acc.shape[-1]
        if grow > 0:
            self._acc = np.concatenate([self._acc, np.zeros((self.channels, grow))], -1)
            self._norm = np.concatenate([self._norm, np.zeros(grow)])
        for i, frame in enumerate(range(first, last)):
            lo = frame * HOP - half - self._acc_start
            self._acc[:, lo : lo + N_FFT] += waves[:, i]
            self._norm[lo : lo + N_FFT] += self._window**2

    def _take(self, until: int) -> np.ndarray:
        """The normalised output ``[emitted, until)``, released."""
        if until <= self._emitted:
            return np.zeros((self.channels, 0), dtype=np.float32)
        lo, hi = self._emitted - self._acc_start, until - self._acc_start
        norm = self._norm[lo:hi]
        # As librosa.istft: samples no window covers are left unscaled.
        norm = np.where(norm > np.finfo(np.float32).tiny, norm, 1.0)
        out = (self._acc[:, lo:hi] / norm).astype(np.float32)
        self._acc, self._norm = self._acc[:, hi:], self._norm[hi:]
        self._acc_start, self._emitted = until, until
        return out


class _SplitCombiner(Combiner):
    """``ensemble_wav``: each of :data:`WAV_SPLITS` parts from the model quietest in it."""

    def __init__(self, algorithm: str, weights: Sequence[float], channels: int, length: int):
        super().__init__(algorithm, weights, channels, length)
        size, extra = divmod(length, WAV_SPLITS)
        self._sizes = [size + 1] * extra + [size] * (WAV_SPLITS - extra)
        self._part = 0
        self._buffer = np.zeros((len(weights), channels, 0), dtype=np.float32)

    def _push(self, blocks: np.ndarray) -> np.ndarray:
        self._buffer = np.concatenate([self._buffer, blocks.astype(np.float32)], -1)
        out = []
        while self._part < WAV_SPLITS and self._buffer.shape[-1] >= self._sizes[self._part]:
            size = self._sizes[self._part]
            part, self._buffer = self._buffer[..., :size], self._buffer[..., size:]
            self._part += 1
            if size:
                quietest = np.abs(part.astype(np.float64)).mean(axis=(1, 2)).argmin()
                out.append(part[quietest])
        return np.concatenate(out, -1) if out else np.zeros((self.channels, 0), np.float32)


def combiner(algorithm: str, weights: Sequence[float], channels: int, length: int) -> Combiner:
    """The streaming combiner of ``algorithm`` for ``len(weights)`` models (see
    :func:`check_weights`) over ``length`` samples of ``channels`` channels."""
    if algorithm in WAVE_ALGORITHMS:
        return _WaveCombiner(algorithm, weights, channels, length)
    if algorithm in FFT_ALGORITHMS:
        return _SpectralCombiner(algorithm, weights, channels, length)
    if algorithm == "ensemble_wav":
        return _SplitCombiner(algorithm, weights, channels, length)
    raise BadRequest(f"unknown ensemble algorithm {algorithm!r}; one of {', '.join(ALGORITHMS)}")


def ensemble(
    waves: Sequence[np.ndarray],
    algorithm: str = DEFAULT_ALGORITHM,
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """Combine whole ``[C, T]`` waveforms of one stem, one per model; returns ``[C, T]``.

    Raises:
        BadRequest: bad weights (:func:`check_weights`), or waveforms of different shapes.
    """
    stack = np.stack([np.asarray(w, dtype=np.float32) for w in waves]) if waves else None
    if stack is None or len({w.shape for w in waves}) != 1:
        raise BadRequest("an ensemble needs one or more waveforms of the same shape")
    values = check_weights(algorithm, weights, len(waves))
    return combiner(algorithm, values, stack.shape[1], stack.shape[2]).push(stack)
