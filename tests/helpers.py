"""Helpers shared by the test modules: a signal-to-distortion ratio and test signals.

Signals are deterministic (seeded) and returned as ``[C, T]`` float32, DSU's layout;
soundfile wants ``[T, C]``, so the writers here transpose.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

CENTRED = {"amplitude": 0.05, "centre": 0.1}
"""Noise half of which all channels share: the weight-free ``center`` model finds a
non-trivial vocal stem in it."""

VOICED = {"amplitude": 0.05, "tone": 0.3}
"""A centred tone over quiet noise: a clear 'vocal' for ``center``, noise for the rest."""


def sdr(reference: np.ndarray | torch.Tensor, estimate: np.ndarray | torch.Tensor) -> float:
    """Signal-to-distortion ratio in dB of ``estimate`` against ``reference``.

    One number over every element (all stems, channels and samples together), summed in
    float64. Both are arrays or tensors of the same shape, any shape; an exact match gives
    about 300 dB rather than infinity.

    Raises:
        ValueError: the shapes differ (numpy would broadcast them silently).
    """
    ref = _float64(reference)
    est = _float64(estimate)
    if ref.shape != est.shape:
        raise ValueError(f"sdr of different shapes: {ref.shape} and {est.shape}")
    error = np.square(ref - est).sum()
    return float(10 * np.log10(np.square(ref).sum() / max(error, 1e-30)))


def _float64(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def noise(
    seconds: float,
    rate: int = 44100,
    channels: int = 2,
    seed: int = 0,
    *,
    amplitude: float = 0.2,
    centre: float = 0.0,
    tone: float = 0.0,
    tone_hz: float = 440.0,
) -> np.ndarray:
    """A test signal of ``round(seconds * rate)`` frames: ``[C, T]`` float32.

    White noise of standard deviation ``amplitude`` in each channel, plus noise of
    standard deviation ``centre`` that all channels share, plus a sine of peak ``tone`` at
    ``tone_hz`` that all channels share (see :data:`CENTRED`, :data:`VOICED`).
    """
    frames = round(seconds * rate)
    rng = np.random.default_rng(seed)
    # The shared part is drawn first and the noise frame by frame ([T, C]), so each seed
    # keeps giving the signal the tests were written with.
    shared = centre * rng.standard_normal(frames) if centre else np.zeros(frames)
    if tone:
        shared = shared + tone * np.sin(2 * np.pi * tone_hz * np.arange(frames) / rate)
    x = shared[:, None] + amplitude * rng.standard_normal((frames, channels))
    return np.ascontiguousarray(x.T, dtype=np.float32)


def write_noise(
    path: Path,
    seconds: float,
    rate: int = 44100,
    channels: int = 2,
    seed: int = 0,
    *,
    subtype: str | None = None,
    **signal: float,
) -> Path:
    """Write :func:`noise` (``signal``: its keywords) to ``path``, making its directory.

    The format follows the suffix; ``subtype`` None is soundfile's default for it (16-bit
    for wav and flac).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, noise(seconds, rate, channels, seed, **signal).T, rate, subtype=subtype)
    return path


def noise_wav(
    seconds: float, rate: int = 44100, channels: int = 2, seed: int = 0, **signal: float
) -> bytes:
    """:func:`noise` (``signal``: its keywords) as the bytes of a 16-bit WAV file."""
    buffer = io.BytesIO()
    x = noise(seconds, rate, channels, seed, **signal)
    sf.write(buffer, x.T, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
