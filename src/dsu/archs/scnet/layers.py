"""SCNet's encoder and decoder: sparse down-sampling (SD) and up-sampling (SU) blocks.

Activations are ``[B, C, F, T]`` spectra (channels, frequency bins, frames). An SD block
splits the bins into a low, a mid and a high band (shares ``band_SR``), downsamples each
along frequency by its own stride (the "sparse compression": the high band the most),
refines each band with a stack of 1-D convolution modules along time, and mixes the
re-joined spectrum with a 3×3 conv. The SU layer inverts the band split with transposed
convs. Module and parameter names are the references' (``SDlayer.convs``,
``conv_modules.*.layers.*``, ``globalconv``, ``convtrs``), so checkpoints load as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dsu.archs.scnet.config import ScnetConfig


def band_edges(bins: int, ratios: tuple[float, float, float]) -> tuple[int, int]:
    """Where the mid and the high band start among ``bins`` frequency bins.

    Rounded up, summed in this order, exactly as the references (a different rounding
    moves a band edge and misaligns every checkpoint's band convs).
    """
    return math.ceil(bins * ratios[0]), math.ceil(bins * (ratios[0] + ratios[1]))


class ConvolutionModule(nn.Module):
    """Residual stack of ``depth`` (GLU conv, depthwise conv, 1×1 conv) layers along time.

    Each layer: GroupNorm(1) → conv ``C -> 2H`` → GLU → depthwise conv ``H`` → GroupNorm(1)
    → Swish → 1×1 conv ``H -> C``, added to its input; ``H = int(C / compress)``.

    Shapes: ``[N, C, T] -> [N, C, T]``.
    """

    def __init__(self, channels: int, depth: int, compress: float, kernel: int) -> None:
        super().__init__()
        hidden = int(channels / compress)
        pad = kernel // 2
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.GroupNorm(1, channels),
                nn.Conv1d(channels, 2 * hidden, kernel, padding=pad),
                nn.GLU(1),
                nn.Conv1d(hidden, hidden, kernel, padding=pad, groups=hidden),
                nn.GroupNorm(1, hidden),
                nn.SiLU(),
                nn.Conv1d(hidden, channels, 1),
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return x


class SDLayer(nn.Module):
    """Band split and per-band frequency downsampling.

    Shapes: ``[B, C_in, F, T]`` -> three ``[B, C_out, F_b / stride_b, T]`` bands, and the
    bins each band had (for the SU layer).
    """

    def __init__(self, in_channels: int, out_channels: int, config: ScnetConfig) -> None:
        super().__init__()
        self.ratios = config.band_ratios
        self.strides = config.band_strides
        self.kernels = config.band_kernels
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, (kernel, 1), (stride, 1))
            for stride, kernel in zip(config.band_strides, config.band_kernels, strict=True)
        )

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
        bins = x.shape[2]
        mid, high = band_edges(bins, self.ratios)
        bands, widths = [], []
        for conv, stride, kernel, (start, end) in zip(
            self.convs,
            self.strides,
            self.kernels,
            ((0, mid), (mid, high), (high, bins)),
            strict=True,
        ):
            band = x[:, :, start:end]
            # Stride 1 keeps the width ("same" padding); a stride pads up to its multiple.
            pad = kernel - 1 if stride == 1 else -(end - start) % stride
            bands.append(conv(F.pad(band, (0, 0, pad // 2, pad - pad // 2))))
            widths.append(end - start)
        return bands, widths


class SULayer(nn.Module):
    """Per-band frequency upsampling (transposed convs) back to the bins of the SD layer.

    Shapes: ``[B, C_in, F', T]`` (the three bands concatenated) -> ``[B, C_out, F, T]``.
    """

    def __init__(self, in_channels: int, out_channels: int, config: ScnetConfig) -> None:
        super().__init__()
        self.convtrs = nn.ModuleList(
            nn.ConvTranspose2d(in_channels, out_channels, (kernel, 1), (stride, 1))
            for stride, kernel in zip(config.band_strides, config.band_kernels, strict=True)
        )

    def forward(self, x: torch.Tensor, lengths: list[int], widths: list[int]) -> torch.Tensor:
        """``lengths``: each band's bins in ``x``; ``widths``: its bins before the SD layer."""
        outs = []
        start = 0
        for convtr, length, width in zip(self.convtrs, lengths, widths, strict=True):
            out = convtr(x[:, :, start : start + length])
            start += length
            trim = abs(width - out.shape[2]) // 2  # the SD layer's padding, centred
            outs.append(out[:, :, trim : trim + width])
        return torch.cat(outs, 2)


class SDBlock(nn.Module):
    """One encoder level: SD layer, a convolution module per band (along time, then GELU),
    and a 3×3 conv over the re-joined spectrum.

    Shapes: ``[B, C_in, F, T] -> [B, C_out, F', T]``; also returns the re-joined spectrum
    before the 3×3 conv (the decoder's skip), each band's bins in it and before the
    SD layer.
    """

    def __init__(self, in_channels: int, out_channels: int, config: ScnetConfig) -> None:
        super().__init__()
        self.SDlayer = SDLayer(in_channels, out_channels, config)
        self.conv_modules = nn.ModuleList(
            ConvolutionModule(out_channels, depth, config.compress, config.conv_kernel)
            for depth in config.conv_depths
        )
        self.globalconv = nn.Conv2d(out_channels, out_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
        bands, widths = self.SDlayer(x)
        refined = []
        for module, band in zip(self.conv_modules, bands, strict=True):
            batch, channels, bins, frames = band.shape
            # Every bin is a time sequence: [B, C, F, T] -> [B·F, C, T] and back.
            rows = band.transpose(1, 2).reshape(batch * bins, channels, frames)
            rows = module(rows).view(batch, bins, channels, frames).transpose(1, 2)
            refined.append(F.gelu(rows))
        skip = torch.cat(refined, 2)
        return self.globalconv(skip), skip, [band.shape[2] for band in refined], widths


class FusionLayer(nn.Module):
    """Merge the decoder path with the encoder's skip: ``GLU(conv3×3([x + skip] * 2))``.

    Shapes: ``[B, C, F, T]`` (both) -> ``[B, C, F, T]``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, 2 * channels, 3, 1, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return F.glu(self.conv((x + skip).repeat(1, 2, 1, 1)), dim=1)


class DecoderLevel(nn.Sequential):
    """One decoder level: a fusion layer (``.0``) then an SU layer (``.1``), the
    references' ``nn.Sequential`` layout."""

    def __init__(self, in_channels: int, out_channels: int, config: ScnetConfig) -> None:
        super().__init__(FusionLayer(in_channels), SULayer(in_channels, out_channels, config))

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, skip: torch.Tensor, lengths: list[int], widths: list[int]
    ) -> torch.Tensor:
        fusion, su = self[0], self[1]
        return su(fusion(x, skip), lengths, widths)
