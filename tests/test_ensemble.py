"""Each ensemble algorithm against a direct numpy computation of its definition, and the
streaming combiners against the whole-array result whatever the block sizes."""

from __future__ import annotations

import numpy as np
import pytest

from dsu.errors import BadRequest
from dsu.pipeline.ensemble import ALGORITHMS, HOP, N_FFT, WAV_SPLITS, combiner, ensemble
from helpers import sdr

LENGTH = 10_007  # not a multiple of the hop: the last frame is partial


def _waves(models: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((models, 2, LENGTH))).astype(np.float32)


# librosa's STFT conventions, written out: a periodic Hann window, frames centred by
# N_FFT // 2 zeros each side, the inverse normalised by the overlapped squared window
# where it is non-zero. (librosa itself JIT-compiles on first use: ~30 s on a fresh venv.)
WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)


def _stft(x: np.ndarray) -> np.ndarray:
    """``[..., T] -> [..., N_FFT // 2 + 1, frames]``."""
    padded = np.pad(x.astype(np.float64), [(0, 0)] * (x.ndim - 1) + [(N_FFT // 2, N_FFT // 2)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=-1)[..., ::HOP, :]
    return np.swapaxes(np.fft.rfft(frames * WINDOW, axis=-1), -1, -2)


def _istft(spec: np.ndarray) -> np.ndarray:
    """``[..., N_FFT // 2 + 1, frames] -> [..., LENGTH]``."""
    frames = np.fft.irfft(np.swapaxes(spec, -1, -2), n=N_FFT, axis=-1) * WINDOW
    count = frames.shape[-2]
    total = N_FFT + HOP * (count - 1)
    out = np.zeros((*frames.shape[:-2], total))
    norm = np.zeros(total)
    for i in range(count):
        out[..., i * HOP : i * HOP + N_FFT] += frames[..., i, :]
        norm[i * HOP : i * HOP + N_FFT] += WINDOW**2
    covered = norm > np.finfo(np.float64).tiny
    out[..., covered] /= norm[covered]
    out = out[..., N_FFT // 2 :][..., :LENGTH]
    return np.pad(out, [(0, 0)] * (out.ndim - 1) + [(0, LENGTH - out.shape[-1])])


def _by_magnitude(stack: np.ndarray, pick) -> np.ndarray:
    index = pick(np.abs(stack), 0)
    return np.take_along_axis(stack, index[None], 0)[0]


def _fold(stack: np.ndarray, later_wins) -> np.ndarray:
    out = stack[0]
    for other in stack[1:]:
        out = np.where(later_wins(np.abs(other), np.abs(out)), other, out)
    return out


def _reference(algorithm: str, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The definitions, written directly on whole arrays."""
    if algorithm == "avg_wave":
        return (w[:, None, None] * x).sum(0) / w.sum()
    if algorithm == "median_wave":
        return np.median(x, 0)
    if algorithm == "min_wave":
        return _by_magnitude(x, np.argmin)
    if algorithm == "max_wave":
        return _by_magnitude(x, np.argmax)
    if algorithm == "ensemble_wav":
        parts = [np.array_split(m, WAV_SPLITS, axis=-1) for m in x]
        chosen = [
            parts[int(np.argmin([np.abs(p[i]).mean() for p in parts]))][i]
            for i in range(WAV_SPLITS)
        ]
        return np.concatenate(chosen, -1)
    s = np.stack([_stft(m) for m in x])
    if algorithm == "avg_fft":
        spec = (w[:, None, None, None] * s).sum(0) / w.sum()
    elif algorithm == "median_fft":
        spec = np.median(s.real, 0) + 1j * np.median(s.imag, 0)
    elif algorithm == "min_fft":
        spec = _by_magnitude(s, np.argmin)
    elif algorithm == "max_fft":
        spec = _by_magnitude(s, np.argmax)
    elif algorithm == "uvr_max_spec":
        spec = _fold(s, np.greater_equal)
    else:
        spec = _fold(s, np.less_equal)
    return _istft(spec)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_algorithm_matches_its_definition(algorithm: str) -> None:
    x = _waves()
    weights = [2.0, 1.0, 0.5] if algorithm in ("avg_wave", "avg_fft") else None
    w = np.asarray(weights or [1.0, 1.0, 1.0])
    ours = ensemble(list(x), algorithm, weights)
    assert ours.shape == (2, LENGTH)
    assert sdr(_reference(algorithm, x.astype(np.float64), w), ours) > 100


@pytest.mark.parametrize("algorithm", ["avg_fft", "median_fft", "uvr_min_spec", "ensemble_wav"])
def test_streaming_equals_whole_array(algorithm: str) -> None:
    x = _waves(2, seed=1)
    whole = ensemble(list(x), algorithm)
    rng = np.random.default_rng(2)
    stream = combiner(algorithm, [1.0, 1.0], 2, LENGTH)
    parts, position = [], 0
    while position < LENGTH:
        size = int(rng.integers(1, 3000))
        parts.append(stream.push(x[..., position : position + size]))
        position += size
    streamed = np.concatenate(parts, -1)
    assert streamed.shape == (2, LENGTH)
    assert sdr(whole, streamed) > 100


def test_weights_are_checked() -> None:
    x = list(_waves(2))
    with pytest.raises(BadRequest, match="one weight per model"):
        ensemble(x, "avg_wave", [1.0])
    with pytest.raises(BadRequest, match="not all zero"):
        ensemble(x, "avg_fft", [0.0, 0.0])
    with pytest.raises(BadRequest, match="median_wave has no weights"):
        ensemble(x, "median_wave", [2.0, 1.0])
    with pytest.raises(BadRequest, match="unknown ensemble algorithm 'mean'"):
        ensemble(x, "mean")
