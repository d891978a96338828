"""MDX23C: the TFC-TDF U-Net v3 of KUIELab's Sound Demixing Challenge 2023 entry.

"Sound Demixing Challenge 2023 Music Demixing Track Technical Report: TFC-TDF-UNet v3"
(KUIELab, 2023). The network maps a mixture chunk ``[B, C, T]`` to ``S`` target stems
``[B, S, C, T]``:

1. STFT (Hann, ``center=True``), keep the lowest ``dim_f`` bins; real and imaginary parts
   become channels and the spectrum is cut into ``num_subbands`` bands that are stacked as
   channels too: ``[B, 2·C·k, N, F/k]`` (time-major, so the TDF acts on the last axis).
2. A U-Net of TFC-TDF blocks: each is a 3×3 conv (TFC), a two-layer bottleneck dense
   layer along frequency added back (TDF), another 3×3 conv, and a 1×1 shortcut. Every
   level downsamples time and frequency by ``scale`` with a strided conv and adds
   ``growth`` channels; the decoder mirrors it with transposed convs and skip concats.
3. The decoder output is multiplied by the first 1×1 conv's output, concatenated with the
   input spectrum and mapped by two 1×1 convs to ``S`` complex spectra; iSTFT.

State-dict keys and shapes equal the references' (``TFC_TDF_net`` of MSST's
``models/mdx23c_tfc_tdf_v3.py`` and UVR / audio-separator's ``tfc_tdf_v3.py``), so the
published checkpoints load as they are.

What the wrapper must ensure: ``T = hop_length * (N - 1)`` with ``N`` a multiple of
``scale[0] ** num_scales`` (:meth:`TfcTdfNet.valid_length` rounds up to one) — with
``center=True`` that is exactly ``N`` frames, and the iSTFT then returns exactly ``T``
samples. The references return ``[B, 2, T]`` (UVR, one target) or ``[B, S, 2, T]``; this
module always returns ``[B, S, C, T]``, and unlike both it handles mono correctly.

Precision: STFT, iSTFT and every normalisation run in float32 whatever the compute
precision (autocast or half weights); the output is float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dsu.archs.autocast import float32_region
from dsu.archs.mdx23c.config import AudioConfig, ModelConfig, elu_alpha, norm_groups

NormFactory = Callable[[int], nn.Module]


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float()


class InstanceNorm(nn.InstanceNorm2d):
    """Affine instance norm over ``[B, C, N, F]``, computed in float32."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with float32_region(x.device):
            y = F.instance_norm(
                x.float(), weight=_f32(self.weight), bias=_f32(self.bias), eps=self.eps
            )
        return y.to(x.dtype)


class BatchNorm(nn.BatchNorm2d):
    """Batch norm over ``[B, C, N, F]``; at inference computed in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        with float32_region(x.device):
            y = F.batch_norm(
                x.float(),
                _f32(self.running_mean),
                _f32(self.running_var),
                _f32(self.weight),
                _f32(self.bias),
                training=False,
                eps=self.eps,
            )
        return y.to(x.dtype)


class GroupNorm(nn.GroupNorm):
    """Group norm over ``[B, C, N, F]``, computed in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with float32_region(x.device):
            y = F.group_norm(
                x.float(), self.num_groups, _f32(self.weight), _f32(self.bias), self.eps
            )
        return y.to(x.dtype)


def norm_factory(kind: str | None) -> NormFactory:
    """``channels -> norm layer`` for a ``model.norm`` name (None: no normalisation)."""
    if kind == "InstanceNorm":
        return InstanceNorm
    if kind == "BatchNorm":
        return BatchNorm
    groups = norm_groups(kind)
    if groups is not None:
        return lambda channels: GroupNorm(groups, channels)
    if kind is None:
        return lambda channels: nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


def activation(kind: str) -> nn.Module:
    """The activation a ``model.act`` name stands for."""
    if kind == "gelu":
        return nn.GELU()
    if kind == "relu":
        return nn.ReLU()
    alpha = elu_alpha(kind)
    if alpha is None:
        raise ValueError(f"unknown activation {kind!r}")
    return nn.ELU(alpha)


class NormActLayer(nn.Sequential):
    """``layer(act(norm(x)))``: the pre-activation unit every conv and dense layer uses.

    A ``Sequential`` so its keys are the references' ``0`` (norm) and ``2`` (layer).
    """

    def __init__(self, norm: nn.Module, act: nn.Module, layer: nn.Module) -> None:
        super().__init__(norm, act, layer)


class TDF(nn.Sequential):
    """Time-distributed fully-connected: two dense layers along frequency, per frame.

    ``[B, C, N, F] -> [B, C, N, F]`` through a ``F // bottleneck`` hidden width; keys
    ``0, 2`` and ``3, 5`` as in the references.
    """

    def __init__(
        self, channels: int, bins: int, bottleneck: int, norm: NormFactory, act: str
    ) -> None:
        hidden = bins // bottleneck
        super().__init__(
            norm(channels),
            activation(act),
            nn.Linear(bins, hidden, bias=False),
            norm(channels),
            activation(act),
            nn.Linear(hidden, bins, bias=False),
        )


class TFCTDFBlock(nn.Module):
    """``tfc2(y + tdf(y)) + shortcut(x)`` with ``y = tfc1(x)``: ``[B, C_in, N, F] ->
    [B, C_out, N, F]``."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        bins: int,
        bottleneck: int,
        norm: NormFactory,
        act: str,
    ) -> None:
        super().__init__()
        self.tfc1 = NormActLayer(
            norm(in_channels),
            activation(act),
            nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False),
        )
        self.tdf = TDF(channels, bins, bottleneck, norm, act)
        self.tfc2 = NormActLayer(
            norm(channels), activation(act), nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        )
        self.shortcut = nn.Conv2d(in_channels, channels, 1, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.shortcut(x)
        y = self.tfc1(x)
        y = y + self.tdf(y)
        return self.tfc2(y) + skip


class TFCTDF(nn.Module):
    """``depth`` TFC-TDF blocks in a row (the first maps ``in_channels -> channels``)."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        depth: int,
        bins: int,
        bottleneck: int,
        norm: NormFactory,
        act: str,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TFCTDFBlock(in_channels if i == 0 else channels, channels, bins, bottleneck, norm, act)
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class Resample(nn.Module):
    """Strided (transposed) conv by ``scale`` after norm and activation: ``[B, C_in, N, F]
    -> [B, C_out, N / s0, F / s1]`` down, or ``[B, C_out, N * s0, F * s1]`` up."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: tuple[int, int],
        norm: NormFactory,
        act: str,
        up: bool,
    ) -> None:
        super().__init__()
        conv = nn.ConvTranspose2d if up else nn.Conv2d
        self.conv = NormActLayer(
            norm(in_channels),
            activation(act),
            conv(in_channels, out_channels, scale, stride=scale, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class EncoderLevel(nn.Module):
    """TFC-TDF blocks, then downsampling; keeps the pre-downsampling map for the skip."""

    def __init__(
        self, channels: int, growth: int, bins: int, model: ModelConfig, norm: NormFactory
    ) -> None:
        super().__init__()
        self.tfc_tdf = TFCTDF(
            channels,
            channels,
            model.num_blocks_per_scale,
            bins,
            model.bottleneck_factor,
            norm,
            model.act,
        )
        self.downscale = Resample(channels, channels + growth, model.scale, norm, model.act, False)


class DecoderLevel(nn.Module):
    """Upsampling, concat with the encoder's skip, then TFC-TDF blocks."""

    def __init__(
        self, channels: int, growth: int, bins: int, model: ModelConfig, norm: NormFactory
    ) -> None:
        super().__init__()
        self.upscale = Resample(channels + growth, channels, model.scale, norm, model.act, True)
        self.tfc_tdf = TFCTDF(
            2 * channels,
            channels,
            model.num_blocks_per_scale,
            bins,
            model.bottleneck_factor,
            norm,
            model.act,
        )


class TfcTdfNet(nn.Module):
    """MDX23C (TFC-TDF U-Net v3): ``[B, C, T]`` mixture -> ``[B, S, C, T]`` stems.

    Args:
        audio: STFT settings (``n_fft``, ``hop_length``, ``dim_f``, ``num_channels``).
        model: U-Net hyperparameters.
        num_targets: ``S``, the number of stems it predicts.
    """

    def __init__(self, audio: AudioConfig, model: ModelConfig, num_targets: int) -> None:
        super().__init__()
        self.n_fft = audio.n_fft
        self.hop_length = audio.hop_length
        self.dim_f = audio.dim_f
        self.audio_channels = audio.num_channels
        self.num_subbands = model.num_subbands
        self.num_targets = num_targets
        self.frames_multiple = model.scale[0] ** model.num_scales

        norm = norm_factory(model.norm)
        spec_channels = model.num_subbands * audio.num_channels * 2
        channels = model.num_channels
        bins = audio.dim_f // model.num_subbands
        growth = model.growth

        self.first_conv = nn.Conv2d(spec_channels, channels, 1, 1, 0, bias=False)
        encoder = []
        for _ in range(model.num_scales):
            encoder.append(EncoderLevel(channels, growth, bins, model, norm))
            channels += growth
            bins //= model.scale[1]
        self.encoder_blocks = nn.ModuleList(encoder)
        self.bottleneck_block = TFCTDF(
            channels,
            channels,
            model.num_blocks_per_scale,
            bins,
            model.bottleneck_factor,
            norm,
            model.act,
        )
        decoder = []
        for _ in range(model.num_scales):
            channels -= growth
            bins *= model.scale[1]
            decoder.append(DecoderLevel(channels, growth, bins, model, norm))
        self.decoder_blocks = nn.ModuleList(decoder)
        self.final_conv = nn.Sequential(
            nn.Conv2d(channels + spec_channels, channels, 1, 1, 0, bias=False),
            activation(model.act),
            nn.Conv2d(channels, num_targets * spec_channels, 1, 1, 0, bias=False),
        )

    def valid_length(self, length: int) -> int:
        """The shortest input of at least ``length`` samples the network accepts."""
        frames = -(-max(length, 1) // self.hop_length) + 1
        frames = -(-frames // self.frames_multiple) * self.frames_multiple
        return self.hop_length * (frames - 1)

    def analysis(self, mix: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` audio -> ``[B, 2·C·k, N, F/k]`` subband spectrum (float32 STFT).

        Channel ``(c·2 + re/im)·k + band`` holds frequency ``band·F/k + f`` of channel
        ``c``, the references' layout, so the first conv's weights line up.
        """
        batch, chans, length = mix.shape
        k = self.num_subbands
        with float32_region(mix.device):
            window = torch.hann_window(self.n_fft, device=mix.device, dtype=torch.float32)
            spec = torch.stft(
                mix.float().reshape(batch * chans, length),
                self.n_fft,
                self.hop_length,
                window=window,
                center=True,
                return_complex=True,
            )
            spec = torch.view_as_real(spec[:, : self.dim_f])  # [B·C, F, N, 2]
        frames = spec.shape[2]
        spec = spec.reshape(batch, chans, k, self.dim_f // k, frames, 2)
        spec = spec.permute(0, 1, 5, 2, 4, 3).reshape(batch, chans * 2 * k, frames, -1)
        return spec.to(self.first_conv.weight.dtype)

    def synthesis(self, spec: torch.Tensor, chans: int) -> torch.Tensor:
        """``[B, S·2·C·k, N, F/k]`` subband spectra -> ``[B, S, C, T]`` float32 audio."""
        batch, _, frames, bins = spec.shape
        k = self.num_subbands
        spec = spec.reshape(batch, self.num_targets, chans, 2, k, frames, bins)
        spec = spec.permute(0, 1, 2, 4, 6, 5, 3).reshape(-1, k * bins, frames, 2)
        with float32_region(spec.device):
            missing = self.n_fft // 2 + 1 - self.dim_f
            spec = F.pad(spec.float(), (0, 0, 0, 0, 0, missing)).contiguous()
            window = torch.hann_window(self.n_fft, device=spec.device, dtype=torch.float32)
            audio = torch.istft(
                torch.view_as_complex(spec), self.n_fft, self.hop_length, window=window, center=True
            )
        return audio.reshape(batch, self.num_targets, chans, -1)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """Separate ``[B, C, T]`` (``T`` from :meth:`valid_length`) into ``[B, S, C, T]``."""
        length = mix.shape[-1]
        if mix.dim() != 3 or mix.shape[1] != self.audio_channels:
            raise ValueError(f"expected [B, {self.audio_channels}, T] audio, got {list(mix.shape)}")
        if self.valid_length(length) != length:
            raise ValueError(
                f"MDX23C needs hop_length x (frames - 1) samples with frames a multiple of "
                f"{self.frames_multiple}; got {length} (next valid: {self.valid_length(length)})"
            )
        spec = self.analysis(mix)
        first = x = self.first_conv(spec)
        skips = []
        for level in self.encoder_blocks:
            x = level.tfc_tdf(x)
            skips.append(x)
            x = level.downscale(x)
        x = self.bottleneck_block(x)
        for level in self.decoder_blocks:
            x = level.upscale(x)
            x = level.tfc_tdf(torch.cat([x, skips.pop()], 1))
        # The decoder's output gates the first conv's features (the authors' artifact fix).
        x = self.final_conv(torch.cat([spec, x * first], 1))
        return self.synthesis(x, mix.shape[1])
