"""Mel-Band RoFormer (Wang et al., 2023, "Mel-Band RoFormer for Music Source
Separation", arXiv:2310.01809).

BS-RoFormer with overlapping bands: band ``i`` covers the STFT bins where the ``i``-th
triangle of a mel filterbank is non-zero, and a bin's mask is the mean of the masks of
the bands that cover it. Every transformer ends with an RMSNorm and there is no final
norm, as in the published checkpoints.

The band layout equals ``librosa.filters.mel(sr=sample_rate, n_fft=stft_n_fft,
n_mels=num_bands)`` (Slaney mel scale) with the first bin of the first band and the last
bin of the last band forced in, as the references do; it is computed here in numpy, so
librosa is not needed at run time.

State dict: exactly MSST's / UVR's ``MelBandRoformer``.
"""

from __future__ import annotations

import numpy as np

from dsu.archs.roformer.config import MelBandRoformerConfig
from dsu.archs.roformer.core import BandRoformer

_MEL_LINEAR_HZ = 200.0 / 3
"""Slaney mel scale: linear below 1 kHz at this many Hz per mel..."""
_MEL_LOG_HZ = 1000.0
"""...and logarithmic above it..."""
_MEL_LOG_STEP = np.log(6.4) / 27.0
"""...with this step in log-Hz per mel."""


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel of frequencies in Hz (float64)."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _MEL_LINEAR_HZ
    log_region = hz >= _MEL_LOG_HZ
    mel_at_log = _MEL_LOG_HZ / _MEL_LINEAR_HZ
    mel[log_region] = mel_at_log + np.log(hz[log_region] / _MEL_LOG_HZ) / _MEL_LOG_STEP
    return mel


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    hz = _MEL_LINEAR_HZ * mel
    mel_at_log = _MEL_LOG_HZ / _MEL_LINEAR_HZ
    log_region = mel >= mel_at_log
    hz[log_region] = _MEL_LOG_HZ * np.exp(_MEL_LOG_STEP * (mel[log_region] - mel_at_log))
    return hz


def mel_band_support(
    sample_rate: int, n_fft: int, num_bands: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Which STFT bins each mel triangle covers: ``[num_bands, n_fft // 2 + 1]`` bool.

    Triangle ``i`` rises from mel edge ``i`` to ``i + 1`` and falls to ``i + 2``; a bin
    is covered where it lies strictly between edges ``i`` and ``i + 2`` (where the
    filterbank weight is positive).
    """
    top = sample_rate / 2 if fmax is None else fmax
    mel_edges = np.linspace(
        hz_to_mel(np.array([fmin]))[0], hz_to_mel(np.array([top]))[0], num_bands + 2
    )
    edges = mel_to_hz(mel_edges)
    bins = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    rising = bins[None, :] - edges[:-2, None]
    falling = edges[2:, None] - bins[None, :]
    return (rising > 0) & (falling > 0)


def mel_bands(config: MelBandRoformerConfig) -> list[list[int]]:
    """Each band's STFT bins, as the references lay them out."""
    support = mel_band_support(
        config.sample_rate, config.stft_n_fft, config.num_bands, config.fmin, config.fmax
    )
    # The lowest and highest bins sit exactly on a triangle's foot; the references force
    # them into the first and last band.
    support[0, 0] = True
    support[-1, -1] = True
    return [np.flatnonzero(row).tolist() for row in support]


class MelBandRoformer(BandRoformer):
    """Mel-Band RoFormer.

    Shapes: ``forward(raw_audio [B, C, L]) -> [B, N, C, L']`` (``[B, C, L']`` for one
    stem); ``L' = L`` with ``match_input_audio_length``, else ``hop * (L // hop)``.
    """

    def __init__(self, config: MelBandRoformerConfig) -> None:
        super().__init__(config, mel_bands(config), norm_output=True, final_norm=False)
