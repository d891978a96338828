"""UVR's multi-band spectrogram, on any span of a track, equal to the whole-track one.

UVR computes each band's signal from the band above it (``librosa.resample``,
``res_type="polyphase"``: scipy's ``resample_poly``), takes each band's STFT (librosa,
``center=True``, zero padding, periodic Hann), crops and stacks the bands into one
spectrogram of ``bins + 1`` rows and filters it; the way back inverts each band (iSTFT),
filters it, resamples it up and adds it to the band above.

Here every step takes *absolute* positions: a span of the track's top-band samples
starting at a multiple of the top band's hop, and the track's length. Each band's signal
is zeroed outside the whole-track signal's extent and each frame outside the whole-track
frame range, so that with enough context around a span (:meth:`MultiBand.analysis_margin`,
:meth:`MultiBand.synthesis_frames`) the frames and samples inside it equal the whole-track
computation's. All of it runs in fp32, outside autocast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dsu.archs.vr.params import Band, VrParams

KAISER_BETA = 5.0
"""``resample_poly``'s default window, ``("kaiser", 5.0)``."""
HALF_LENGTH_PER_RATE = 10
"""``resample_poly``'s filter half-length is ``10 * max(up, down)`` taps."""

MIRROR_GAP = 10
"""UVR's high-end mirroring reads rows ending this many below ``pre_filter_start``."""

# Stereo transforms as 2x2 matrices over (left, right): forward on the signal/spectrum,
# inverse on each band's iSTFT output, as UVR writes them.
_V5_STEREO = {
    "mid_side": ([[0.5, 0.5], [1.0, -1.0]], [[1.0, 0.5], [1.0, -0.5]]),
    "mid_side_b2": ([[0.5, 1.0], [1.0, -0.5]], [[0.4, 1 / 1.25], [1 / 1.25, -0.4]]),
}
_V51_CHANNELS = {
    "mid_side_c": ([[1.0, 0.25], [-0.25, 1.0]], [[1 / 1.0625, -1 / 4.25], [1 / 4.25, 1 / 1.0625]]),
    "mid_side": ([[0.5, 0.5], [1.0, -1.0]], [[1.0, 0.5], [1.0, -0.5]]),
    "stereo_n": (
        [[1 / 0.9375, 0.25 / 0.9375], [0.25 / 0.9375, 1 / 0.9375]],
        [[1.0, -0.25], [-0.25, 1.0]],
    ),
}


def _mix_channels(x: torch.Tensor, matrix: list[list[float]] | None) -> torch.Tensor:
    """Apply a 2x2 channel matrix to ``x [B, 2, ...]``."""
    if matrix is None:
        return x
    (a, b), (c, d) = matrix
    left, right = x[:, 0], x[:, 1]
    return torch.stack([a * left + b * right, c * left + d * right], dim=1)


def polyphase_kernel(up: int, down: int) -> torch.Tensor:
    """``resample_poly``'s FIR: a Kaiser-windowed sinc at ``1 / max(up, down)``, gain ``up``."""
    rate = max(up, down)
    half = HALF_LENGTH_PER_RATE * rate
    taps = 2 * half + 1
    n = np.arange(taps) - half
    cutoff = 1.0 / rate
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(taps, KAISER_BETA)
    return torch.from_numpy(h / h.sum() * up).float()


def resample_poly(x: torch.Tensor, up: int, down: int, kernel: torch.Tensor) -> torch.Tensor:
    """Polyphase resampling of ``x [B, C, n]`` to ``[B, C, ceil(n * up / down)]``.

    Output sample ``k`` is ``sum_i x[i] h[k * down - i * up + half]``, so a span starting at
    input sample ``s`` (with ``s * up`` a multiple of ``down``) gives the whole signal's
    outputs from ``s * up / down``, up to the edges where the span lacks context.
    """
    batch, channels, n = x.shape
    half = (kernel.numel() - 1) // 2
    flat = x.reshape(batch * channels, 1, n)
    if up > 1:
        stuffed = flat.new_zeros(batch * channels, 1, n * up)
        stuffed[..., ::up] = flat
        flat = stuffed
    out = F.conv1d(F.pad(flat, (half, half)), kernel.flip(0).view(1, 1, -1).to(x), stride=down)
    return out.reshape(batch, channels, -1)


def _lp_ramp(n: int, start: int, stop: int) -> np.ndarray:
    """UVR v5 ``fft_lp_filter`` gains: a falling ramp over ``[start, stop)``, zero above."""
    gain = np.ones(n)
    g = 1.0
    for b in range(start, stop):
        g -= 1 / (stop - start)
        gain[b] = g
    gain[stop:] = 0.0
    return gain


def _hp_ramp(n: int, start: int, stop: int) -> np.ndarray:
    """UVR v5 ``fft_hp_filter`` gains: a ramp from ``start`` down to ``stop``, zero below."""
    gain = np.ones(n)
    g = 1.0
    for b in range(start, stop, -1):
        g -= 1 / (start - stop)
        gain[b] = g
    gain[: stop + 1] = 0.0
    return gain


def _lp_mask(n: int, start: int, stop: int) -> np.ndarray:
    """UVR v5.1 low-pass mask: ones, a linear ramp over ``[start - 1, stop]``, zeros."""
    return np.concatenate(
        [np.ones(start - 1), np.linspace(1, 0, stop - start + 1), np.zeros(n - stop)]
    )


def _hp_mask(n: int, start: int, stop: int) -> np.ndarray:
    """UVR v5.1 high-pass mask: zeros to ``stop``, a linear ramp to ``start``, ones."""
    return np.concatenate(
        [np.zeros(stop + 1), np.linspace(0, 1, 1 + start - stop), np.ones(n - start - 2)]
    )


def _pre_filter(params: VrParams, v51: bool) -> np.ndarray:
    """Gains of the combined spectrogram's ``bins + 1`` rows."""
    n, start, stop = params.bins + 1, params.pre_filter_start, params.pre_filter_stop
    if start <= 0:
        return np.ones(n)
    if v51:
        return _lp_mask(n, start, stop)
    if len(params.bands) == 1:
        return _lp_ramp(n, start, stop)
    gain = np.ones(n)
    previous = 1.0
    for b in range(start + 1, stop):
        previous = math.pow(10, -(b - start) * (3.5 - previous) / 20.0)
        gain[b] = previous
    return gain


def _band_filter(band: Band, index: int, count: int, v51: bool) -> np.ndarray:
    """Gains UVR applies to band ``index`` (0 = lowest) on the way back to audio."""
    n = band.n_fft // 2 + 1
    gain = np.ones(n)
    low_pass = _lp_mask if v51 else _lp_ramp
    high_pass = _hp_mask if v51 else _hp_ramp
    top = index == count - 1
    if top:
        if band.hpf_start > 0:
            gain *= high_pass(n, band.hpf_start, band.hpf_stop - 1)
        return gain
    if index > 0:
        gain *= high_pass(n, band.hpf_start, band.hpf_stop - 1)
    return gain * low_pass(n, band.lpf_start, band.lpf_stop)


@dataclass(frozen=True)
class _Step:
    """Resampling between band ``i`` and band ``i + 1``: the lower rate is ``low / high``
    times the upper (in lowest terms); kernels are None when the rates are equal."""

    low: int
    high: int
    down_kernel: torch.Tensor | None
    up_kernel: torch.Tensor | None


class MultiBand:
    """UVR's band split and recombination for one band-parameter file.

    Shapes: signals ``[B, 2, n]`` (top band rate), combined spectrograms
    ``[B, 2, bins + 1, frames]`` complex.
    """

    def __init__(self, params: VrParams, v51: bool) -> None:
        self.params = params
        self.v51 = v51
        self.bands = params.bands
        self.hop = params.top.hl
        self.pre_gain = torch.from_numpy(_pre_filter(params, v51)).float()
        self.band_gain = [
            torch.from_numpy(_band_filter(b, i, len(self.bands), v51)).float()
            for i, b in enumerate(self.bands)
        ]
        self.steps: list[_Step] = []
        for low, high in zip(self.bands, self.bands[1:], strict=False):
            g = math.gcd(low.sr, high.sr)
            p, q = low.sr // g, high.sr // g
            same = p == q
            self.steps.append(
                _Step(
                    p,
                    q,
                    None if same else polyphase_kernel(p, q),
                    None if same else polyphase_kernel(q, p),
                )
            )
        self.windows = {b.n_fft: torch.hann_window(b.n_fft, periodic=True) for b in self.bands}
        stereo = None if v51 else ("mid_side" if params.mid_side else None)
        if not v51 and params.mid_side_b2:
            stereo = "mid_side_b2"
        self._stereo = _V5_STEREO.get(stereo) if stereo else None

    # -- geometry ---------------------------------------------------------------------

    def band_lengths(self, length: int) -> list[int]:
        """Samples of each band's whole-track signal (lowest first)."""
        lengths = [length]
        for step in reversed(self.steps):
            lengths.append(-(-lengths[-1] * step.low // step.high))
        return lengths[::-1]

    def frame_count(self, length: int) -> int:
        """Frames of the whole-track combined spectrogram (the fewest of any band)."""
        return min(
            1 + n // b.hl for n, b in zip(self.band_lengths(length), self.bands, strict=True)
        )

    def _scale(self, band: Band) -> float:
        """Top-band samples per sample of ``band``."""
        return self.params.sr / band.sr

    def analysis_margin(self) -> int:
        """Top-band samples an analysis span needs beyond its frames' centres, per side."""
        margin = 0.0
        chain = 0.0
        for index in range(len(self.bands) - 1, -1, -1):
            band = self.bands[index]
            margin = max(margin, (band.n_fft / 2 + 2) * self._scale(band) + chain)
            if index > 0:
                step = self.steps[index - 1]
                taps = HALF_LENGTH_PER_RATE * max(step.low, step.high) + 2
                chain += taps / step.low * self._scale(self.bands[index - 1])
        return int(math.ceil(margin / self.hop) + 1) * self.hop

    def synthesis_frames(self) -> int:
        """Frames on each side of a span of samples that the way back reads."""
        frames = max(math.ceil(b.n_fft / (2 * b.hl)) for b in self.bands)
        return frames + 2 + len(self.steps)

    # -- analysis ----------------------------------------------------------------------

    def analyse(
        self, audio: torch.Tensor, start: int, length: int, first: int, count: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames ``[first, first + count)`` of the whole-track combined spectrogram.

        Args:
            audio: ``[B, 2, n]`` top-band samples ``[start, start + n)`` of the track (any
                values outside ``[0, length)`` are ignored); ``start`` is a multiple of the
                top band's hop and the span covers :meth:`analysis_margin` around the frames.
            length: the track's length in top-band samples.

        Returns:
            ``(combined [B, 2, bins + 1, count], top [B, 2, n_fft / 2 + 1, count])``: the
            combined spectrogram (zero at frames outside the track's) and the top band's own
            spectrogram, which the high-end process reads.
        """
        if start % self.hop:
            raise ValueError(f"analysis span must start on a hop ({self.hop}), got {start}")
        lengths = self.band_lengths(length)
        valid = self.frame_count(length)
        signal = _keep_range(audio.float(), start, 0, length)
        signal = _mix_channels(signal, self._stereo[0] if self._stereo else None)
        specs: list[torch.Tensor] = [torch.empty(0)] * len(self.bands)
        origin = start
        for index in range(len(self.bands) - 1, -1, -1):
            band = self.bands[index]
            if index < len(self.bands) - 1:
                step = self.steps[index]
                if step.down_kernel is not None:
                    signal = resample_poly(signal, step.low, step.high, step.down_kernel)
                    origin = origin * step.low // step.high
                    signal = _keep_range(signal, origin, 0, lengths[index])
            specs[index] = self._stft(signal, origin, band, first, count)
        combined = torch.zeros(
            audio.shape[0],
            2,
            self.params.bins + 1,
            count,
            dtype=torch.complex64,
            device=audio.device,
        )
        row = 0
        for index, band in enumerate(self.bands):
            height = band.crop_stop - band.crop_start
            spec = specs[index]
            if self.v51:
                forward = _V51_CHANNELS.get(band.convert_channels or "")
                spec = _mix_channels(spec, forward[0] if forward else None)
                specs[index] = spec
            combined[:, :, row : row + height] = spec[:, :, band.crop_start : band.crop_stop]
            row += height
        combined = combined * self.pre_gain.to(audio.device)[:, None]
        frames = torch.arange(first, first + count, device=audio.device)
        inside = ((frames >= 0) & (frames < valid)).to(combined.real.dtype)
        return combined * inside, specs[-1]

    def _stft(
        self, signal: torch.Tensor, origin: int, band: Band, first: int, count: int
    ) -> torch.Tensor:
        """Frames ``[first, first + count)`` of one band (centred, zero padded)."""
        lo = first * band.hl - band.n_fft // 2 - origin
        span = band.n_fft + (count - 1) * band.hl
        if lo < 0 or lo + span > signal.shape[-1]:
            raise ValueError("analysis span lacks context for its frames")
        piece = signal[..., lo : lo + span]
        batch = piece.shape[0]
        spec = torch.stft(
            piece.reshape(batch * 2, span),
            band.n_fft,
            band.hl,
            window=self.windows[band.n_fft].to(piece.device),
            center=False,
            return_complex=True,
        )
        return spec.reshape(batch, 2, spec.shape[-2], spec.shape[-1])

    # -- synthesis ---------------------------------------------------------------------

    def synthesise(
        self,
        spec: torch.Tensor,
        first: int,
        length: int,
        high_end: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Audio of combined frames ``[first, first + F)``, as UVR's ``cmb_spectrogram_to_wave``.

        Args:
            spec: ``[B, 2, bins + 1, F]`` complex.
            length: the track's length in top-band samples.
            high_end: ``[B, 2, high_end_bins, F]`` rows written below the top band's last
                bin before its high-pass (UVR's high-end process), or None.

        Returns:
            ``(audio [B, 2, n], origin)``: top-band samples from track position ``origin``,
            exact where all frames they overlap lie in the span (and zero past the
            whole-track output's ``hop * (frames - 1)`` samples).
        """
        valid = self.frame_count(length)
        wave: torch.Tensor | None = None
        origin = 0
        row = 0
        for index, band in enumerate(self.bands):
            height = band.crop_stop - band.crop_start
            rows = band.n_fft // 2 + 1
            part = spec.new_zeros(spec.shape[0], 2, rows, spec.shape[-1])
            part[:, :, band.crop_start : band.crop_stop] = spec[:, :, row : row + height]
            row += height
            if high_end is not None and index == len(self.bands) - 1:
                top = band.n_fft // 2
                part[:, :, top - high_end.shape[2] : top] = high_end
            part = part * self.band_gain[index].to(spec.device)[:, None]
            audio, band_origin = self._istft(part, band, first, valid)
            if self.v51:
                inverse = _V51_CHANNELS.get(band.convert_channels or "")
                audio = _mix_channels(audio, inverse[1] if inverse else None)
            elif self._stereo:
                audio = _mix_channels(audio, self._stereo[1])
            if wave is not None:
                audio = audio + _place(wave, origin, band_origin, audio.shape[-1])
            if index < len(self.bands) - 1:
                step = self.steps[index]
                if step.up_kernel is not None:
                    audio = resample_poly(audio, step.high, step.low, step.up_kernel)
                    band_origin = band_origin * step.high // step.low
                    upper = self.bands[index + 1]
                    audio = _keep_range(audio, band_origin, 0, upper.hl * (valid - 1))
            wave, origin = audio, band_origin
        assert wave is not None
        return wave, origin

    def _istft(
        self, part: torch.Tensor, band: Band, first: int, valid: int
    ) -> tuple[torch.Tensor, int]:
        """Overlap-add of frames ``[first, first + F)``, normalised by the squared windows of
        the whole-track frames ``[0, valid)`` only, as librosa's ``istft``; zero outside the
        whole-track output ``[0, hl * (valid - 1))``."""
        batch, _, _, frames = part.shape
        window = self.windows[band.n_fft].to(part.device)
        chunks = torch.fft.irfft(part, n=band.n_fft, dim=2) * window[:, None]
        total = band.n_fft + (frames - 1) * band.hl
        ola = F.fold(
            chunks.reshape(batch * 2, band.n_fft, frames),
            output_size=(1, total),
            kernel_size=(1, band.n_fft),
            stride=(1, band.hl),
        ).reshape(batch, 2, total)
        index = torch.arange(first, first + frames, device=part.device)
        inside = ((index >= 0) & (index < valid)).to(window.dtype)
        squares = (window**2)[:, None] * inside[None, :]
        norm = F.fold(
            squares.reshape(1, band.n_fft, frames),
            output_size=(1, total),
            kernel_size=(1, band.n_fft),
            stride=(1, band.hl),
        ).reshape(total)
        tiny = torch.finfo(torch.float64).tiny
        ola = torch.where(norm > tiny, ola / norm.clamp_min(tiny), ola)
        origin = first * band.hl - band.n_fft // 2
        return _keep_range(ola, origin, 0, band.hl * (valid - 1)), origin


def _place(x: torch.Tensor, origin: int, target: int, size: int) -> torch.Tensor:
    """``x`` (from track position ``origin``) on ``size`` samples from ``target``, zero-filled."""
    out = x.new_zeros(*x.shape[:-1], size)
    lo, hi = max(origin, target), min(origin + x.shape[-1], target + size)
    if hi > lo:
        out[..., lo - target : hi - target] = x[..., lo - origin : hi - origin]
    return out


def _keep_range(x: torch.Tensor, origin: int, lo: int, hi: int) -> torch.Tensor:
    """Zero the samples of ``x [..., n]`` (from track position ``origin``) outside ``[lo, hi)``."""
    a, b = lo - origin, hi - origin
    if a <= 0 and b >= x.shape[-1]:
        return x
    position = torch.arange(x.shape[-1], device=x.device)
    keep = (position >= a) & (position < b)
    return x * keep.to(x.dtype)


def mirror_high_end(
    spec: torch.Tensor, input_high_end: torch.Tensor, params: VrParams
) -> torch.Tensor:
    """UVR's ``mirroring``: the stem's rows below the pre-filter, flipped, with the input's
    high-end phase, wherever they are quieter than the input's high end.

    Args:
        spec: a stem's combined spectrogram ``[B, 2, bins + 1, F]``.
        input_high_end: the input's top rows ``[B, 2, h, F]``.

    Returns:
        ``[B, 2, h, F]`` complex.
    """
    h = input_high_end.shape[2]
    stop = params.pre_filter_start - MIRROR_GAP
    mirror = spec[:, :, stop - h : stop].abs().flip(2) * torch.exp(1j * torch.angle(input_high_end))
    return torch.where(input_high_end.abs() <= mirror.abs(), input_high_end, mirror)
