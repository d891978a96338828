"""A VR network as a :class:`~dsu.archs.base.SeparationModel`: UVR's inference on any span.

UVR's VR inference (audio-separator's ``VRSeparator.inference_vr``) normalises the whole
track's combined magnitude by its peak, cuts it into windows of ``window_size`` frames
every ``roi = window_size - 2 * offset`` frames from frame 0 (with a second grid shifted
by ``roi // 2`` for TTA), predicts a mask per window, sharpens it (aggression), optionally
merges artifacts, and multiplies the input spectrogram by the mask (primary stem) and its
complement (secondary stem).

Here the engine supplies the peak (``normalize``: the track's :class:`PeakAccumulator`
as its scale) and, for every chunk, where the chunk lies in the track
(``positional``: :meth:`VrModel.forward_at`). Each chunk then computes exactly the
whole-track windows, frames and samples that its centre needs, from ``context`` samples on
each side, so the chunked output equals the whole-track one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dsu.archs.base import SeparationModel
from dsu.archs.normalization import TrackStats
from dsu.archs.vr.params import VrParams
from dsu.archs.vr.spectrogram import MultiBand, mirror_high_end

DEFAULT_WINDOW_SIZE = 512
WINDOW_SIZES: tuple[int, ...] = (320, 512, 1024)
"""UVR's window-size choices (any multiple of 16 above ``2 * offset`` works)."""
DEFAULT_AGGRESSION = 5
DEFAULT_POST_PROCESS_THRESHOLD = 0.2
ARTIFACT_MIN_RANGE = 64
ARTIFACT_FADE = 32
POST_PROCESS_MARGIN = 4 * ARTIFACT_MIN_RANGE
"""Mask frames beyond a chunk's own that post-processing reads (runs and fades reach
``min_range + 2 * fade`` frames)."""
WINDOWS_PER_CHUNK = 12
"""Default chunk: this many windows' worth of frames (about 26 s at 44.1 kHz, window 320).
A chunk's spectrogram work dominates the peak memory: with a tiny network, 24 windows
(53 s) peaked at 1.57 GB on 6 minutes and 12 at 995 MB on 60 minutes
(bench/bench_long.py); on the full-width net the wall time is the same within noise."""
WINDOW_BATCH = 1
"""Windows per network call: one, as UVR; on the CPU a batch of 4 ran slower (14.7 s
against 13.4 s on 30 s) at 2.3x the peak memory (bench/bench_vr.py)."""


@dataclass(frozen=True)
class VrOptions:
    """UVR's VR settings (audio-separator's ``vr_params`` names and defaults).

    Attributes:
        window_size: frames per network window.
        aggression: -100..100; how hard the primary stem is pulled out.
        tta: also run the window grid shifted by half a window and average.
        post_process: UVR's ``merge_artifacts`` on the mask.
        post_process_threshold: its threshold.
        high_end_process: mirror the input's top bins into the stems (UVR "mirroring").
    """

    window_size: int = DEFAULT_WINDOW_SIZE
    aggression: int = DEFAULT_AGGRESSION
    tta: bool = False
    post_process: bool = False
    post_process_threshold: float = DEFAULT_POST_PROCESS_THRESHOLD
    high_end_process: bool = False


def adjust_aggression(
    mask: torch.Tensor,
    aggression: int,
    invert: bool,
    split_bin: int,
    correction: tuple[float, float] | None,
) -> torch.Tensor:
    """UVR's ``adjust_aggr`` on ``mask [B, 2, bins + 1, T]``: a power per channel, a third
    as strong below ``split_bin``."""
    value = aggression / 100 * 2
    if value == 0:
        return mask
    if invert:
        value = 1 - value
    per_channel = [value, value]
    if correction is not None:
        per_channel = [value + correction[0], value + correction[1]]
    out = mask.clone()
    for ch, a in enumerate(per_channel):
        out[:, ch, :split_bin] = mask[:, ch, :split_bin] ** (1 + a / 3)
        out[:, ch, split_bin:] = mask[:, ch, split_bin:] ** (1 + a)
    return out


def merge_artifacts(mask: np.ndarray, first: int, threshold: float) -> np.ndarray:
    """UVR's ``merge_artifacts`` on mask frames ``[first, first + T)`` of ``[2, bins + 1, T]``.

    Runs of frames whose every bin exceeds ``threshold`` for more than
    :data:`ARTIFACT_MIN_RANGE` frames are pushed to 1, with linear fades of
    :data:`ARTIFACT_FADE` frames; only a run starting at track frame 0 skips its fade-in.
    Frames within :data:`POST_PROCESS_MARGIN` of a span's ends that are not the track's may
    differ from the whole-track result; callers keep only the inner ones.
    """
    fade = ARTIFACT_FADE
    idx = np.where(mask.min(axis=(0, 1)) > threshold)[0]
    if idx.size == 0:
        return mask
    breaks = np.where(np.diff(idx) != 1)[0]
    starts = np.insert(idx[breaks + 1], 0, idx[0])
    ends = np.append(idx[breaks], idx[-1])
    long = np.where(ends - starts > ARTIFACT_MIN_RANGE)[0]
    weight = np.zeros_like(mask)
    previous_end = None
    for s, e in zip(starts[long], ends[long], strict=True):
        if previous_end is not None and s - previous_end < fade:
            s = previous_end - fade * 2
        if s + first != 0:
            weight[:, :, s : s + fade] = np.linspace(0, 1, fade)
        else:
            s -= fade
        weight[:, :, e - fade : e] = np.linspace(1, 0, fade)
        weight[:, :, max(s + fade, 0) : e - fade] = 1
        previous_end = e
    return mask + weight * (1 - mask)


class PeakAccumulator:
    """The peak of a track's combined magnitude spectrogram, over a stream of blocks.

    ``add`` takes ``[2, n]`` blocks at the model's rate in order; ``stats`` gives
    ``TrackStats(0, peak)``, the engine's scale for this model. Memory: a few pieces of
    audio, whatever the track's length.
    """

    PIECE_FRAMES = 1024

    def __init__(self, bands: MultiBand) -> None:
        self._bands = bands
        self._margin = bands.analysis_margin()
        self._buffer = np.zeros((2, 0), dtype=np.float32)
        self._buffer_start = -self._margin
        self.count = 0
        self._next = 0
        self._peak = 0.0

    def add(self, block: np.ndarray) -> None:
        if self.count == 0:
            self._buffer = np.zeros((block.shape[0], self._margin), dtype=np.float32)
        self._buffer = np.concatenate([self._buffer, block.astype(np.float32)], axis=1)
        self.count += block.shape[-1]
        hop = self._bands.hop
        while (self._next + self.PIECE_FRAMES) * hop + self._margin <= self.count:
            self._piece(self.PIECE_FRAMES, length=1 << 62)

    def _piece(self, frames: int, length: int) -> None:
        hop = self._bands.hop
        lo = self._next * hop - self._margin
        hi = (self._next + frames - 1) * hop + self._margin
        have = self._buffer[:, lo - self._buffer_start : hi - self._buffer_start]
        audio = np.zeros((have.shape[0], hi - lo), dtype=np.float32)
        audio[:, : have.shape[1]] = have
        spec, _ = self._bands.analyse(torch.from_numpy(audio)[None], lo, length, self._next, frames)
        self._peak = max(self._peak, float(spec.abs().max()))
        self._next += frames
        cut = self._next * hop - self._margin - self._buffer_start
        self._buffer = self._buffer[:, cut:]
        self._buffer_start += cut

    def stats(self) -> TrackStats:
        total = self._bands.frame_count(self.count)
        while self._next < total:
            self._piece(min(self.PIECE_FRAMES, total - self._next), self.count)
        return TrackStats(0.0, self._peak if self._peak > 0 else 1.0)


class VrModel(SeparationModel):
    """A VR network with UVR's band parameters and settings.

    ``forward_at(mix [B, 2, T], starts, length) -> [B, 2, 2, T]`` (primary, secondary);
    ``forward(mix)`` treats each batch item as a whole track.
    """

    normalize = True
    positional = True
    window = "rect"
    overlap = 0.0
    framing = "demucs"

    def __init__(
        self,
        net: nn.Module,
        params: VrParams,
        v51: bool,
        stems: tuple[str, str],
        invert_aggression: bool,
        options: VrOptions,
    ) -> None:
        offset = int(net.offset)
        roi = options.window_size - 2 * offset
        if roi <= 0 or options.window_size % 16:
            raise ValueError(
                f"window_size {options.window_size} must be a multiple of 16 above "
                f"{2 * offset} for this network"
            )
        self.net = net.eval()
        self.params = params
        self.bands = MultiBand(params, v51)
        self.options = options
        self.invert_aggression = invert_aggression
        self.samplerate = params.sr
        self.channels = 2
        self.stems = list(stems)
        self.offset = offset
        self.roi = roi
        hop = self.bands.hop
        reach = self.bands.synthesis_frames() + roi + roi // 2 + offset + 2
        if options.post_process:
            reach += POST_PROCESS_MARGIN
        self.context = reach * hop + self.bands.analysis_margin() + hop
        self.segment = WINDOWS_PER_CHUNK * roi * hop

    def stats_accumulator(self) -> PeakAccumulator:
        """The engine's per-track statistic for this model (its input scale)."""
        return PeakAccumulator(self.bands)

    def valid_length(self, length: int, segment: int) -> int:
        return length + 2 * self.context

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> VrModel:
        self.net.to(device, dtype)
        return self

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        outs = []
        for item in mix:
            accumulator = self.stats_accumulator()
            accumulator.add(item.detach().cpu().float().numpy())
            scale = accumulator.stats().std
            padded = torch.nn.functional.pad(item[None] / scale, (self.context, self.context))
            stems = self.forward_at(padded, [-self.context], item.shape[-1])[0]
            outs.append(stems[..., self.context : self.context + item.shape[-1]] * scale)
        return torch.stack(outs)

    def forward_at(self, mix: torch.Tensor, starts: list[int], length: int) -> torch.Tensor:
        """Separate chunks ``mix [B, 2, T]`` whose first samples lie at track positions
        ``starts`` of a track of ``length`` samples; the centre ``T - 2 * context`` samples
        of the result are the whole-track stems there. Returns ``[B, 2, 2, T]``."""
        out = mix.new_zeros(mix.shape[0], 2, 2, mix.shape[-1])
        for b, start in enumerate(starts):
            lo, hi = start + self.context, start + mix.shape[-1] - self.context
            stems = self._span(mix[b : b + 1], start, lo, hi, length)
            out[b, :, :, self.context : self.context + hi - lo] = stems[0]
        return out

    def _span(self, audio: torch.Tensor, start: int, lo: int, hi: int, length: int) -> torch.Tensor:
        """Stems ``[1, 2, 2, hi - lo]`` of track samples ``[lo, hi)`` from ``audio`` (from
        ``start``)."""
        bands, hop, roi, opt = self.bands, self.bands.hop, self.roi, self.options
        frames = bands.frame_count(length)
        reach = bands.synthesis_frames()
        f0 = max(0, lo // hop - reach)
        f1 = min(frames, hi // hop + reach + 1)
        if f1 <= f0:
            return audio.new_zeros(1, 2, 2, hi - lo)
        margin = POST_PROCESS_MARGIN if opt.post_process else 0
        m0, m1 = max(0, f0 - margin), min(frames, f1 + margin)
        grids = [0, roi // 2] if opt.tta else [0]
        windows = [
            (shift, i)
            for shift in grids
            for i in range((m0 + shift) // roi, -(-(m1 + shift) // roi))
        ]
        g0 = min(i * roi - shift for shift, i in windows) - self.offset
        g1 = max((i + 1) * roi - shift for shift, i in windows) + self.offset
        a0 = g0 * hop - bands.analysis_margin()
        a1 = (g1 - 1) * hop + bands.analysis_margin()
        if a0 < start or a1 > start + audio.shape[-1]:
            raise RuntimeError("VR chunk context is too short for its frames")
        fp32 = torch.autocast(audio.device.type, enabled=False)
        with fp32:
            spec, top = bands.analyse(
                audio[..., a0 - start : a1 - start].float(), a0, length, g0, g1 - g0
            )
            mag = spec.abs()
        mask = self._mask(mag, windows, g0, m0, m1, grids)
        with fp32:
            mask = adjust_aggression(
                mask,
                opt.aggression,
                self.invert_aggression,
                self.params.bands[0].crop_stop,
                self.params.aggr_correction,
            )
            if opt.post_process:
                mask = torch.from_numpy(
                    merge_artifacts(mask[0].detach().cpu().numpy(), m0, opt.post_process_threshold)
                )[None].to(mask.device)
            mask = mask[..., f0 - m0 : f1 - m0]
            x = spec[..., f0 - g0 : f1 - g0]
            phase = torch.exp(1j * torch.angle(x))
            magnitude = mag[..., f0 - g0 : f1 - g0]
            outputs = []
            for stem_mask in (mask, 1 - mask):
                stem = torch.nan_to_num(stem_mask * magnitude) * phase
                high_end = None
                if opt.high_end_process:
                    rows = self.params.high_end_bins
                    n = self.params.top.n_fft // 2
                    source = top[:, :, n - rows : n, f0 - g0 : f1 - g0]
                    high_end = mirror_high_end(stem, source, self.params)
                wave, origin = bands.synthesise(stem, f0, length, high_end)
                outputs.append(_slice(wave, origin, lo, hi))
        return torch.stack(outputs, dim=1)

    def _mask(
        self,
        mag: torch.Tensor,
        windows: list[tuple[int, int]],
        g0: int,
        m0: int,
        m1: int,
        grids: list[int],
    ) -> torch.Tensor:
        """Mask frames ``[m0, m1)`` from magnitude frames from ``g0``, averaged over grids."""
        roi, size = self.roi, self.options.window_size
        total = mag.new_zeros(1, 2, mag.shape[2], m1 - m0)
        for shift in grids:
            mine = [i for s, i in windows if s == shift]
            for k in range(0, len(mine), WINDOW_BATCH):
                group = mine[k : k + WINDOW_BATCH]
                starts = [i * roi - shift - self.offset - g0 for i in group]
                batch = torch.cat([mag[..., s : s + size] for s in starts])
                pred = self.net(batch).float()
                pred = pred[..., self.offset : self.offset + roi]
                for j, i in enumerate(group):
                    first = i * roi - shift
                    lo, hi = max(first, m0), min(first + roi, m1)
                    if hi > lo:
                        total[..., lo - m0 : hi - m0] += pred[
                            j : j + 1, ..., lo - first : hi - first
                        ]
        return total / len(grids)


def _slice(wave: torch.Tensor, origin: int, lo: int, hi: int) -> torch.Tensor:
    """Samples ``[lo, hi)`` of ``wave [B, C, n]`` (from ``origin``), zero where absent."""
    out = wave.new_zeros(*wave.shape[:-1], hi - lo)
    a, b = max(lo, origin), min(hi, origin + wave.shape[-1])
    if b > a:
        out[..., a - lo : b - lo] = wave[..., a - origin : b - origin]
    return out
