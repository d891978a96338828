"""BandIt's musical band split: ``n_bands`` overlapping bands equally spaced in pitch.

Band ``i`` is centred on the ``i``-th of ``n_bands`` MIDI pitches spaced evenly from the
first STFT bin's frequency (``fs / n_fft``) to Nyquist, and spans a constant number of
octaves (the whole range divided by ``n_bands``) either side, rounded outwards to whole
bins; the first band also takes every bin below it and the last every bin above. Bands
overlap, so each bin's weight in a band is ``1 / (number of bands covering it)``: the
frequency weights that sum the per-band masks back into one mask.

This is the arithmetic of BandIt's ``MusicalBandsplitSpecification`` (Watcharasupat et
al., 2023), which its public checkpoints' tensor shapes depend on bin for bin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

A4_HZ = 440.0
A4_MIDI = 69.0


def hz_to_midi(hz: np.ndarray | float) -> np.ndarray:
    """MIDI pitch of a frequency (A4 = 440 Hz = 69), as librosa computes it."""
    return 12 * (np.log2(np.asanyarray(hz)) - np.log2(A4_HZ)) + A4_MIDI


def midi_to_hz(midi: np.ndarray | float) -> np.ndarray:
    """Frequency of a MIDI pitch, as librosa computes it."""
    return A4_HZ * (2.0 ** ((np.asanyarray(midi) - A4_MIDI) / 12.0))


@dataclass(frozen=True)
class BandSpec:
    """The band split of one STFT size and rate.

    Attributes:
        bands: ``(first_bin, end_bin)`` of each band, ``end_bin`` exclusive.
        weights: per band, float64 ``[end_bin - first_bin]``: each bin's share of the band
            (the bands covering a bin sum to 1 there).
    """

    bands: tuple[tuple[int, int], ...]
    weights: tuple[torch.Tensor, ...]

    @property
    def widths(self) -> tuple[int, ...]:
        """Bins in each band."""
        return tuple(end - start for start, end in self.bands)


def musical_bands(n_fft: int, fs: int, n_bands: int) -> BandSpec:
    """The musical band split of an ``n_fft``-point STFT at ``fs`` Hz into ``n_bands``.

    Raises:
        ValueError: the split leaves a bin in no band (too many bands for the FFT size).
    """
    n_freqs = n_fft // 2 + 1
    bin_hz = fs / (2 * (n_freqs - 1))
    f_min, f_max = bin_hz, fs / 2
    bandwidth_mult = np.power(2.0, np.log2(f_max / f_min) / n_bands)
    centres = midi_to_hz(np.linspace(max(0, hz_to_midi(f_min)), hz_to_midi(f_max), n_bands))
    low = np.floor(centres / bandwidth_mult / bin_hz).astype(int)
    high = np.ceil(centres * bandwidth_mult / bin_hz).astype(int)

    filterbank = np.zeros((n_bands, n_freqs))
    for i in range(n_bands):
        filterbank[i, low[i] : high[i] + 1] = 1.0
    filterbank[0, : low[0]] = 1.0
    filterbank[-1, high[-1] + 1 :] = 1.0
    coverage = filterbank.sum(axis=0, keepdims=True)
    if (coverage == 0).any():
        raise ValueError(f"{n_bands} musical bands leave bins of a {n_fft}-point STFT uncovered")
    shares = torch.as_tensor(filterbank / coverage)

    bands, weights = [], []
    for i in range(n_bands):
        active = np.flatnonzero(filterbank[i])
        if active.size == 0:
            continue  # a band narrower than a bin, which BandIt drops too
        start, end = int(active[0]), int(active[-1]) + 1
        bands.append((start, end))
        weights.append(shares[i, start:end])
    return BandSpec(tuple(bands), tuple(weights))
