"""Weight-free models, so DSU separates something with zero downloads.

``center`` splits vocals from the instrumental by stereo centre extraction: a
time-frequency bin that is identical in both channels (panned to the centre, where
lead vocals sit) goes to ``vocals``, in proportion to how identical it is; the rest is
``instrumental``. ``hpss`` splits harmonic from percussive by median filtering the
magnitude spectrogram along time (harmonics are steady) and along frequency
(transients are broadband), after Fitzgerald (DAFx 2010).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dsu.archs.base import SeparationModel
from dsu.errors import UnsupportedModel
from dsu.registry.entry import ModelEntry


class _SpectralModel(SeparationModel):
    """A mask in the STFT domain; chunks carry ``context`` extra frames on each side."""

    samplerate = 44100
    channels = 2
    overlap = 0.25
    window = "triangle"
    n_fft = 4096
    hop = 1024
    context_frames = 8

    def __init__(self, segment_seconds: float = 10.0) -> None:
        self.segment = int(segment_seconds * self.samplerate)
        self.device = torch.device("cpu")

    def valid_length(self, length: int, segment: int) -> int:
        return length + 2 * self.context_frames * self.hop

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> _SpectralModel:
        self.device = torch.device(device)
        return self

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T] -> [B, C, F, N]`` complex."""
        window = torch.hann_window(self.n_fft, device=x.device)
        flat = x.reshape(-1, x.shape[-1])
        spec = torch.stft(flat, self.n_fft, self.hop, window=window, return_complex=True)
        return spec.reshape(*x.shape[:-1], *spec.shape[-2:])

    def _istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """``[..., F, N]`` complex -> ``[..., length]``."""
        window = torch.hann_window(self.n_fft, device=spec.device)
        flat = spec.reshape(-1, *spec.shape[-2:])
        wav = torch.istft(flat, self.n_fft, self.hop, window=window, length=length)
        return wav.reshape(*spec.shape[:-2], length)


class Center(_SpectralModel):
    """Vocals as the stereo centre: ``[B, 2, T] -> [B, 2 (vocals, instrumental), 2, T]``."""

    stems = ["vocals", "instrumental"]  # noqa: RUF012 - a class-level constant

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        spec = self._stft(mix.float())
        left, right = spec[:, 0], spec[:, 1]
        power = left.abs().square() + right.abs().square()
        # 1 where the channels are equal (centred), 0 where uncorrelated or opposed.
        similarity = (2 * (left * right.conj()).real / power.clamp_min(1e-10)).clamp(0, 1)
        mid = (left + right) / 2
        centre = (similarity.square() * mid)[:, None].expand(-1, 2, -1, -1)
        vocals = self._istft(centre, mix.shape[-1])
        return torch.stack([vocals, mix - vocals], 1)


class HPSS(_SpectralModel):
    """Harmonic/percussive: ``[B, C, T] -> [B, 2 (harmonic, percussive), C, T]``."""

    stems = ["harmonic", "percussive"]  # noqa: RUF012 - a class-level constant
    n_fft = 2048
    hop = 512
    kernel = 17
    context_frames = 17

    def _median(self, mag: torch.Tensor, dim: int) -> torch.Tensor:
        """Running median of width ``kernel`` along ``dim`` (-1 time, -2 frequency)."""
        moved = mag.movedim(dim, -1)
        half = self.kernel // 2
        padded = F.pad(moved.reshape(-1, 1, moved.shape[-1]), (half, half), mode="reflect")
        med = padded.unfold(-1, self.kernel, 1).median(-1).values
        return med.reshape(moved.shape).movedim(-1, dim)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        spec = self._stft(mix.float())
        mag = spec.abs()
        harmonic = self._median(mag, -1).square()
        percussive = self._median(mag, -2).square()
        mask = harmonic / (harmonic + percussive).clamp_min(1e-10)
        harm = self._istft(spec * mask, mix.shape[-1])
        return torch.stack([harm, mix - harm], 1)


BUILTINS = {"center": Center, "hpss": HPSS}


def load(entry: ModelEntry, **_: Any) -> SeparationModel:
    """Build a built-in model by its ``arch`` (``center`` or ``hpss``)."""
    try:
        return BUILTINS[entry.arch]()
    except KeyError:
        raise UnsupportedModel(f"no built-in model {entry.arch!r}") from None
