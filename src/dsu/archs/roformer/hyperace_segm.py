"""The dense mask estimate of BS-RoFormer HyperACE: :class:`SegmentationNet`, which reads
the transformer's token grid as an image (``D`` channels over ``T`` frames x ``bands``):

- :class:`Backbone`: four strided stages (time halved at every stage, bands at the last
  two) of depthwise-separable CSP blocks, widths :data:`BACKBONE_WIDTHS`;
- :class:`~dsu.archs.roformer.hyperace_blocks.HyperACE`: the four stages fused at the
  third one's resolution; part of the channels goes through hypergraph blocks (soft
  hyperedges over all positions), part through a plain CSP block, the rest as is;
- :class:`Decoder`: a U-Net decoder whose every level gets the HyperACE features
  through a learned gate (:class:`GatedFusion`);
- :class:`UpsampleHead`: back to ``T`` frames, then four frequency pixel shuffles
  (:class:`FreqPixelShuffle`, each doubling the band axis) up to the STFT bins, giving
  the :data:`SEGM_OUTPUTS` mask values (2 channels x real/imaginary) of every bin.

Module and parameter names are pymss-core's (``segm.backbone...``), so its state dicts
load strictly. Shape names as in :mod:`dsu.archs.roformer.hyperace_blocks`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dsu.archs.roformer.hyperace_blocks import (
    ConvNormAct,
    HyperACE,
    InstanceNorm,
    SeparableConv,
    SlimCSPBlock,
    resize,
)

BACKBONE_WIDTHS: tuple[int, int, int, int] = (256, 384, 512, 768)
"""Channels of the four backbone stages (fixed in the published network)."""

STEM_WIDTH = 64
"""Channels of the backbone's first (stem) convolution."""

BACKBONE_DEPTH = 2
"""Bottlenecks per backbone stage, doubled in the two middle stages."""

HYPEREDGES = 32
"""Soft hyperedges of every hypergraph block."""

HYPERGRAPH_HEADS = 8
"""Heads of the hyperedge-membership attention."""

HIGH_ORDER_BRANCHES = 2
"""Parallel hypergraph blocks in HyperACE's high-order branch."""

UPSAMPLE_STAGES = 4
"""Frequency pixel shuffles in the head; each doubles the band axis, halves the channels."""

SEGM_OUTPUTS = 4
"""Values per STFT bin the segmentation network gives: 2 channels x (real, imaginary)."""


# --- encoder and decoder --------------------------------------------------------------


class Backbone(nn.Module):
    """A separable stem and four stages; each stage a strided separable conv and a
    :class:`SlimCSPBlock`. Time is halved by the stem and every stage, bands by the last
    two stages.

    Shapes: ``[B, D, H, W]`` -> four maps ``[B, BACKBONE_WIDTHS[i], H_i, W_i]`` with
    ``H_i = H / 2^(i+2)`` and ``W_i = W, W, W / 2, W / 4`` (rounded up).
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        w2, w3, w4, w5 = BACKBONE_WIDTHS
        time_only = (2, 1)
        self.stem = SeparableConv(in_channels, STEM_WIDTH, stride=time_only)
        self.p2 = self._stage(STEM_WIDTH, w2, time_only, BACKBONE_DEPTH)
        self.p3 = self._stage(w2, w3, time_only, 2 * BACKBONE_DEPTH)
        self.p4 = self._stage(w3, w4, 2, 2 * BACKBONE_DEPTH)
        self.p5 = self._stage(w4, w5, 2, BACKBONE_DEPTH)

    @staticmethod
    def _stage(c_in: int, c_out: int, stride: int | tuple[int, int], n: int) -> nn.Sequential:
        return nn.Sequential(
            SeparableConv(c_in, c_out, stride=stride), SlimCSPBlock(c_out, c_out, n)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        p2 = self.p2(self.stem(x))
        p3 = self.p3(p2)
        p4 = self.p4(p3)
        return [p2, p3, p4, self.p5(p4)]


class GatedFusion(nn.Module):
    """``x + gamma * h`` with a learned per-channel gate (zero at initialisation).

    Shapes: ``x, h [B, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * h


class Decoder(nn.Module):
    """U-Net decoder from the deepest stage up to the shallowest: at each level, upsample
    the level below, add the 1x1-projected skip, add the gated HyperACE features resized
    to the level.

    Shapes: stages as :class:`Backbone` gives them, ``context [B, C_ctx, H_3, W_3]``
    -> ``[B, BACKBONE_WIDTHS[0], H_0, W_0]``.
    """

    def __init__(self, widths: Sequence[int], context_channels: int) -> None:
        super().__init__()
        w2, w3, w4, w5 = widths
        self.h_to_d5 = ConvNormAct(context_channels, w5)
        self.h_to_d4 = ConvNormAct(context_channels, w4)
        self.h_to_d3 = ConvNormAct(context_channels, w3)
        self.h_to_d2 = ConvNormAct(context_channels, w2)
        self.fusion_d5 = GatedFusion(w5)
        self.fusion_d4 = GatedFusion(w4)
        self.fusion_d3 = GatedFusion(w3)
        self.fusion_d2 = GatedFusion(w2)
        self.skip_p5 = ConvNormAct(w5, w5)
        self.skip_p4 = ConvNormAct(w4, w4)
        self.skip_p3 = ConvNormAct(w3, w3)
        self.skip_p2 = ConvNormAct(w2, w2)
        self.up_d5 = SlimCSPBlock(w5, w4)
        self.up_d4 = SlimCSPBlock(w4, w3)
        self.up_d3 = SlimCSPBlock(w3, w2)
        self.final_d2 = SlimCSPBlock(w2, w2)

    def forward(self, stages: Sequence[torch.Tensor], context: torch.Tensor) -> torch.Tensor:
        p2, p3, p4, p5 = stages

        def gated(x: torch.Tensor, project: nn.Module, fusion: nn.Module) -> torch.Tensor:
            return fusion(x, project(resize(context, x.shape[-2:])))

        d = gated(self.skip_p5(p5), self.h_to_d5, self.fusion_d5)
        levels = (
            (p4, self.up_d5, self.skip_p4, self.h_to_d4, self.fusion_d4),
            (p3, self.up_d4, self.skip_p3, self.h_to_d3, self.fusion_d3),
            (p2, self.up_d3, self.skip_p2, self.h_to_d2, self.fusion_d2),
        )
        for skip, up, project_skip, project_context, fusion in levels:
            d = up(resize(d, skip.shape[-2:])) + project_skip(skip)
            d = gated(d, project_context, fusion)
        return self.final_d2(d)


# --- frequency upsampling head --------------------------------------------------------


class TFCTDFBlock(nn.Module):
    """Time-frequency convolutions with a time-distributed fully connected bottleneck
    over the frequency axis, and a 1x1 shortcut.

    Shapes: ``[B, C_in, H, W] -> [B, C, H, W]`` (``W`` fixed by the bottleneck).
    """

    def __init__(self, c_in: int, channels: int, width: int, bottleneck: int = 4) -> None:
        super().__init__()
        self.tfc1 = nn.Sequential(
            InstanceNorm(c_in), nn.SiLU(), nn.Conv2d(c_in, channels, 3, padding=1, bias=False)
        )
        self.tdf = nn.Sequential(
            InstanceNorm(channels),
            nn.SiLU(),
            nn.Linear(width, width // bottleneck, bias=False),
            InstanceNorm(channels),
            nn.SiLU(),
            nn.Linear(width // bottleneck, width, bias=False),
        )
        self.tfc2 = nn.Sequential(
            InstanceNorm(channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        )
        self.shortcut = nn.Conv2d(c_in, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tfc1(x)
        return self.tfc2(h + self.tdf(h)) + self.shortcut(x)


class TFCTDF(nn.Module):
    """Two :class:`TFCTDFBlock` s. Shapes: ``[B, C, H, W] -> [B, C, H, W]``."""

    def __init__(self, channels: int, width: int, blocks: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TFCTDFBlock(channels, channels, width) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class FreqPixelShuffle(nn.Module):
    """Trade channels for frequency resolution: a separable conv to ``scale * C_out``
    channels, channel ``c * scale + r`` becoming column ``w * scale + r``; then a
    :class:`TFCTDF`.

    Shapes: ``[B, C_in, H, W] -> [B, C_out, H, W * scale]``.
    """

    def __init__(self, c_in: int, c_out: int, scale: int, width_out: int) -> None:
        super().__init__()
        self.scale = scale
        self.conv = SeparableConv(c_in, c_out * scale)
        self.out_conv = TFCTDF(c_out, width_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        batch, channels, height, width = x.shape
        x = x.view(batch, channels // self.scale, self.scale, height, width)
        x = x.permute(0, 1, 3, 4, 2).reshape(batch, channels // self.scale, height, -1)
        return self.out_conv(x)


class UpsampleHead(nn.Module):
    """:data:`UPSAMPLE_STAGES` frequency pixel shuffles (bands x 16), a resize to the
    STFT bins, a 3x3 conv to the output values.

    Shapes: ``[B, C, H, bands] -> [B, C_out, H, bins]``.
    """

    def __init__(self, channels: int, c_out: int, bins: int, bands: int) -> None:
        super().__init__()
        self.bins = bins
        for stage in range(1, UPSAMPLE_STAGES + 1):
            block = FreqPixelShuffle(
                channels >> (stage - 1), channels >> stage, 2, bands * 2**stage
            )
            self.add_module(f"block{stage}", block)
        self.final_conv = nn.Conv2d(channels >> UPSAMPLE_STAGES, c_out, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in range(1, UPSAMPLE_STAGES + 1):
            x = getattr(self, f"block{stage}")(x)
        return self.final_conv(resize(x, (x.shape[-2], self.bins)))


class SegmentationNet(nn.Module):
    """The dense mask estimate (see the module docstring).

    Args:
        bands: bands of the token grid.
        dim: token width.
        bins: STFT bins of the output.

    Shapes: ``[B, dim, T, bands] -> [B, SEGM_OUTPUTS, T, bins]``; needs ``T`` and
    ``bands`` large enough that the deepest stage has more than one position
    (``ceil(T / 32) * ceil(bands / 4) > 1``), as the reference does.
    """

    def __init__(self, bands: int, dim: int, bins: int) -> None:
        super().__init__()
        self.backbone = Backbone(dim)
        context = BACKBONE_WIDTHS[2]
        self.hyperace = HyperACE(
            BACKBONE_WIDTHS, context, HYPEREDGES, HYPERGRAPH_HEADS, HIGH_ORDER_BRANCHES
        )
        self.decoder = Decoder(BACKBONE_WIDTHS, context)
        self.upsample_head = UpsampleHead(BACKBONE_WIDTHS[0], SEGM_OUTPUTS, bins, bands)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stages = self.backbone(x)
        decoded = self.decoder(stages, self.hyperace(stages))
        return self.upsample_head(resize(decoded, (x.shape[-2], decoded.shape[-1])))
