"""A track's normalisation: part of the model contract, measured by the engine.

Demucs (and MSST with ``inference.normalize``) standardise the whole track by the mean and
std of its mono mix; a model may bring its own measure (VR's spectrogram peak) through
``SeparationModel.stats_accumulator``. Either is computed over the stream in a first pass,
so the track is never held whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TrackStats:
    """Mean and standard deviation of a track's mono mix (Demucs' normalisation)."""

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def of(cls, mix: torch.Tensor) -> TrackStats:
        """Stats of a whole ``[C, T]`` mixture, as ``demucs.api`` computes them."""
        ref = mix.mean(0)
        return cls(float(ref.mean()), float(ref.std()) + 1e-8)


class StatsAccumulator:
    """Computes :class:`TrackStats` over a stream of ``[C, n]`` blocks."""

    def __init__(self) -> None:
        self.count = 0
        self._sum = 0.0
        self._sumsq = 0.0

    def add(self, block: np.ndarray) -> None:
        ref = block.astype(np.float64).mean(0)
        self.count += ref.size
        self._sum += float(ref.sum())
        self._sumsq += float(np.square(ref).sum())

    def stats(self) -> TrackStats:
        if self.count < 2:
            return TrackStats(self._sum / max(self.count, 1), 1e-8)
        mean = self._sum / self.count
        var = max(self._sumsq - self.count * mean * mean, 0.0) / (self.count - 1)
        return TrackStats(mean, var**0.5 + 1e-8)
