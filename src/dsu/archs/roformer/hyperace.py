"""BS-RoFormer HyperACE: BS-RoFormer whose mask estimators carry a convolutional
segmentation network with a hypergraph core (pymss-core's ``BSRoformerHyperACE``).

Each stem's mask estimator keeps BS-RoFormer's per-band MLPs and adds a dense estimate
of the same mask, :class:`SegmentationNet`, which reads the transformer's token grid as
an image (``D`` channels over ``T`` frames x ``bands``):

- :class:`Backbone`: four strided stages (time halved at every stage, bands at the last
  two) of depthwise-separable CSP blocks, widths :data:`BACKBONE_WIDTHS`;
- :class:`HyperACE`: the four stages fused at the third one's resolution; part of the
  channels goes through :class:`HypergraphBlock` s (soft hyperedges over all positions,
  "adaptive correlation enhancement"), part through a plain CSP block, the rest as is;
- :class:`Decoder`: a U-Net decoder whose every level gets the HyperACE features
  through a learned gate (:class:`GatedFusion`);
- :class:`UpsampleHead`: back to ``T`` frames, then four frequency pixel shuffles
  (:class:`FreqPixelShuffle`, each doubling the band axis) up to the STFT bins, giving
  the 4 mask values (2 channels x real/imaginary) of every bin.

:data:`MASK_MODES` say which estimates make the mask; pymss-core's default
(:data:`DEFAULT_MASK_MODE`) is the MLPs alone.

Module and parameter names are pymss-core's (``mask_estimators.<s>.segm.backbone...``),
so its state dicts and the published checkpoints load strictly; :func:`is_hyperace`
recognises a checkpoint by them. Every instance norm runs in fp32 under autocast.

Shape names: ``B`` batch, ``C`` channels, ``H`` frames (the image's height), ``W`` bands
or bins (its width), ``N = H * W`` positions, ``E`` hyperedges.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import accumulate

import torch
import torch.nn.functional as F
from torch import nn

from dsu.archs.roformer.bands import MaskEstimator
from dsu.archs.roformer.bs_roformer import BSRoformer
from dsu.archs.roformer.config import BSRoformerConfig
from dsu.archs.roformer.layers import fp32
from dsu.errors import BadRequest, UnsupportedModel

INSTANCE_NORM_EPS = 1e-8
"""The reference's ``InstanceNorm2d(eps=1e-8)`` everywhere in the segmentation network."""

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

FULL, NO_SEGM, SEGM_ONLY = "full", "no_segm", "segm_only"
MASK_MODES: tuple[str, ...] = (FULL, NO_SEGM, SEGM_ONLY)
"""What a mask is: MLP masks + segmentation masks, MLP masks alone, segmentation alone
(pymss-core's names)."""

DEFAULT_MASK_MODE = NO_SEGM
"""pymss-core's default: the segmentation network is loaded but not run."""

_SEGM_KEY = re.compile(r"mask_estimators\.\d+\.segm\.")


def is_hyperace(state_dict_keys: Iterable[str]) -> bool:
    """Whether a BS-RoFormer checkpoint is the HyperACE variant (its mask estimators hold
    a ``segm`` network). Works on keys with or without a ``module.`` prefix."""
    return any(_SEGM_KEY.search(key) for key in state_dict_keys)


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``) of ``[B, C, H, W]`` to ``size = (H', W')``.

    At the same size this is the identity, so that case is skipped.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


# --- convolution blocks ---------------------------------------------------------------


class InstanceNorm(nn.Module):
    """Affine instance norm over each channel's ``H x W`` plane, in fp32.

    Shapes: ``[B, C, H, W] -> [B, C, H, W]`` (the input's dtype); ``H * W > 1``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with fp32(x.device):
            y = F.instance_norm(
                x.float(), weight=self.weight.float(), bias=self.bias.float(), eps=INSTANCE_NORM_EPS
            )
        return y.to(x.dtype)


class ConvNormAct(nn.Module):
    """1x1 conv (no bias) -> instance norm -> SiLU.

    Shapes: ``[B, C_in, H, W] -> [B, C_out, H, W]``.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = InstanceNorm(c_out)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SeparableConv(nn.Module):
    """Depthwise ``k x k`` conv -> pointwise conv -> instance norm -> SiLU.

    Shapes: ``[B, C_in, H, W] -> [B, C_out, H / s_h, W / s_w]`` (rounded up).
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int = 3, stride: int | tuple[int, int] = 1
    ) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(
            c_in, c_in, kernel, stride, padding=kernel // 2, groups=c_in, bias=False
        )
        self.pwconv = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = InstanceNorm(c_out)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.pwconv(self.dwconv(x))))


class SeparableBottleneck(nn.Module):
    """Two separable convs with a residual. Shapes: ``[B, C, H, W] -> [B, C, H, W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dsconv1 = SeparableConv(channels, channels)
        self.dsconv2 = SeparableConv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dsconv2(self.dsconv1(x))


class CSPBlock(nn.Module):
    """Cross-stage partial block: one 1x1 branch through ``n`` bottlenecks, one 1x1 branch
    as is, concatenated and fused by a 1x1 conv (the reference's ``DS_C3k``).

    Shapes: ``[B, C_in, H, W] -> [B, C_out, H, W]``; each branch has ``C_out * e``
    channels.
    """

    def __init__(self, c_in: int, c_out: int, n: int = 1, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c_out * e)
        self.cv1 = ConvNormAct(c_in, hidden)
        self.cv2 = ConvNormAct(c_in, hidden)
        self.cv3 = ConvNormAct(2 * hidden, c_out)
        self.m = nn.Sequential(*(SeparableBottleneck(hidden) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class SlimCSPBlock(nn.Module):
    """1x1 down to ``C_out / 2``, a :class:`CSPBlock` there, 1x1 up to ``C_out`` (the
    reference's ``DS_C3k2``). Shapes: ``[B, C_in, H, W] -> [B, C_out, H, W]``."""

    def __init__(self, c_in: int, c_out: int, n: int = 1) -> None:
        super().__init__()
        hidden = c_out // 2
        self.cv1 = ConvNormAct(c_in, hidden)
        self.m = CSPBlock(hidden, hidden, n=n, e=1.0)
        self.cv2 = ConvNormAct(hidden, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(self.m(self.cv1(x)))


# --- hypergraph core (HyperACE) -------------------------------------------------------


class HyperedgeGeneration(nn.Module):
    """Soft membership of every position in ``E`` hyperedges.

    Each hyperedge has a prototype: a learned global one plus an offset predicted from
    the input's mean and max over positions. Positions are scored against prototypes by
    multi-head dot products (averaged over heads) and each hyperedge's scores are
    softmaxed over positions.

    Shapes: ``[B, N, C] -> [B, E, N]`` (each row sums to 1).
    """

    def __init__(self, channels: int, hyperedges: int, heads: int) -> None:
        super().__init__()
        self.hyperedges = hyperedges
        self.heads = heads
        self.scale = (channels // heads) ** -0.5
        self.global_proto = nn.Parameter(torch.randn(hyperedges, channels))
        self.context_mapper = nn.Linear(2 * channels, hyperedges * channels, bias=False)
        self.query_proj = nn.Linear(channels, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, positions, channels = x.shape
        context = torch.cat((x.mean(dim=1), x.amax(dim=1)), dim=1)  # [B, 2C]
        offset = self.context_mapper(context).view(batch, self.hyperedges, channels)
        prototypes = self.global_proto + offset  # [B, E, C]
        head_dim = channels // self.heads
        queries = self.query_proj(x).view(batch, positions, self.heads, head_dim).transpose(1, 2)
        keys = prototypes.view(batch, self.hyperedges, self.heads, head_dim).permute(0, 2, 3, 1)
        scores = (queries @ keys * self.scale).mean(dim=1)  # [B, N, E]
        return scores.transpose(1, 2).softmax(dim=-1)


class HypergraphConv(nn.Module):
    """Nodes -> hyperedges -> nodes message passing, with a residual.

    ``x + SiLU(W_v(A^T SiLU(W_e(A x))))`` for memberships ``A``.

    Shapes: ``x [B, N, C]``, ``memberships [B, E, N]`` -> ``[B, N, C]``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.W_e = nn.Linear(channels, channels, bias=False)
        self.W_v = nn.Linear(channels, channels, bias=False)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, memberships: torch.Tensor) -> torch.Tensor:
        edges = self.act(self.W_e(memberships @ x))  # [B, E, C]
        return x + self.act(self.W_v(memberships.transpose(1, 2) @ edges))


class HypergraphBlock(nn.Module):
    """A hypergraph convolution over all positions of a feature map, hyperedges
    generated from the map itself. Shapes: ``[B, C, H, W] -> [B, C, H, W]``."""

    def __init__(self, channels: int, hyperedges: int, heads: int) -> None:
        super().__init__()
        self.adaptive_hyperedge_gen = HyperedgeGeneration(channels, hyperedges, heads)
        self.hypergraph_conv = HypergraphConv(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = x.flatten(2).transpose(1, 2)  # [B, N, C]
        out = self.hypergraph_conv(nodes, self.adaptive_hyperedge_gen(nodes))
        return out.transpose(1, 2).reshape(x.shape)


class HypergraphCSP(nn.Module):
    """CSP block whose processed branch is a :class:`HypergraphBlock` (the reference's
    ``C3AH``). Shapes: ``[B, C, H, W] -> [B, C, H, W]``."""

    def __init__(self, channels: int, hyperedges: int, heads: int) -> None:
        super().__init__()
        self.cv1 = ConvNormAct(channels, channels)
        self.cv2 = ConvNormAct(channels, channels)
        self.ahc = HypergraphBlock(channels, hyperedges, heads)
        self.cv3 = ConvNormAct(2 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.ahc(self.cv2(x)), self.cv1(x)), dim=1))


class HyperACE(nn.Module):
    """Fuse the four backbone stages at the third one's resolution, then split the
    channels three ways: half through parallel :class:`HypergraphCSP` s (high order), a
    quarter through a :class:`CSPBlock` (low order), the rest untouched; fuse again.

    Shapes: the stages ``[B, C_i, H_i, W_i]`` -> ``[B, C_out, H_3, W_3]``.
    """

    def __init__(
        self, widths: Sequence[int], c_out: int, hyperedges: int, heads: int, branches: int
    ) -> None:
        super().__init__()
        width = widths[2]
        self.c_h = width // 2
        self.c_l = width // 4
        self.c_s = width - self.c_h - self.c_l
        self.fuse_conv = ConvNormAct(sum(widths), width)
        self.high_order_branch = nn.ModuleList(
            HypergraphCSP(self.c_h, hyperedges, heads) for _ in range(branches)
        )
        self.high_order_fuse = ConvNormAct(self.c_h * branches, self.c_h)
        self.low_order_branch = nn.Sequential(CSPBlock(self.c_l, self.c_l, n=1, e=1.0))
        self.final_fuse = ConvNormAct(width, c_out)

    def forward(self, stages: Sequence[torch.Tensor]) -> torch.Tensor:
        size = stages[2].shape[-2:]
        fused = self.fuse_conv(torch.cat([_resize(stage, size) for stage in stages], dim=1))
        high, low, rest = torch.split(fused, [self.c_h, self.c_l, self.c_s], dim=1)
        high = self.high_order_fuse(torch.cat([m(high) for m in self.high_order_branch], dim=1))
        return self.final_fuse(torch.cat((high, self.low_order_branch(low), rest), dim=1))


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
            return fusion(x, project(_resize(context, x.shape[-2:])))

        d = gated(self.skip_p5(p5), self.h_to_d5, self.fusion_d5)
        levels = (
            (p4, self.up_d5, self.skip_p4, self.h_to_d4, self.fusion_d4),
            (p3, self.up_d4, self.skip_p3, self.h_to_d3, self.fusion_d3),
            (p2, self.up_d3, self.skip_p2, self.h_to_d2, self.fusion_d2),
        )
        for skip, up, project_skip, project_context, fusion in levels:
            d = up(_resize(d, skip.shape[-2:])) + project_skip(skip)
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
        return self.final_conv(_resize(x, (x.shape[-2], self.bins)))


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
        return self.upsample_head(_resize(decoded, (x.shape[-2], decoded.shape[-1])))


# --- the mask estimator and the network -----------------------------------------------


class HyperACEMaskEstimator(MaskEstimator):
    """BS-RoFormer's mask estimator plus a :class:`SegmentationNet` (``segm``); which of
    the two make the mask is :attr:`mask_mode` (one of :data:`MASK_MODES`).

    The bands must be contiguous and disjoint (BS-RoFormer's): the dense estimate is laid
    out bin by bin and is reordered here into the band split's computation order.

    Shapes: ``[B, T, bands, dim]`` -> ``[B, T, sum(dims_in)]``, as
    :class:`~dsu.archs.roformer.bands.MaskEstimator`.
    """

    def __init__(
        self, dim: int, dims_in: Sequence[int], hidden_layers: int, mlp_expansion_factor: int = 4
    ) -> None:
        super().__init__(dim, dims_in, hidden_layers, mlp_expansion_factor)
        self.mask_mode = DEFAULT_MASK_MODE
        total = sum(self.dims_in)
        # The reference sizes the dense estimate for a stereo model (4 values per bin).
        self.segm = SegmentationNet(len(self.dims_in), dim, total // SEGM_OUTPUTS)
        self.segm_fits = total % SEGM_OUTPUTS == 0
        starts = [0, *accumulate(self.dims_in)]
        index = torch.cat(
            [torch.arange(starts[band], starts[band + 1]) for band in self.groups.order]
        )
        self.register_buffer(
            "segm_index", None if self.groups.is_natural else index, persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask_mode == NO_SEGM:
            return super().forward(x)
        dense = self.segm(x.permute(0, 3, 1, 2))  # [B, 4, T, bins]
        dense = dense.permute(0, 2, 3, 1).flatten(2)  # [B, T, bins * 4], bin-major
        if self.segm_index is not None:
            dense = dense.index_select(-1, self.segm_index)
        if self.mask_mode == SEGM_ONLY:
            return dense
        return super().forward(x) + dense


class BSRoformerHyperACE(BSRoformer):
    """BS-RoFormer with :class:`HyperACEMaskEstimator` s.

    Args:
        config: the BS-RoFormer hyperparameters (HyperACE adds none).
        mask_mode: one of :data:`MASK_MODES`.

    Shapes: ``forward(raw_audio [B, C, L]) -> [B, N, C, L]`` (``[B, C, L]`` for one
    stem), as :class:`~dsu.archs.roformer.bs_roformer.BSRoformer`.

    Raises:
        BadRequest: an unknown ``mask_mode``.
        UnsupportedModel: a mode that runs the segmentation network on a mono model
            (the network is laid out for two channels).
    """

    mask_estimator_cls = HyperACEMaskEstimator

    def __init__(self, config: BSRoformerConfig, mask_mode: str = DEFAULT_MASK_MODE) -> None:
        super().__init__(config)
        self.set_mask_mode(mask_mode)

    @property
    def mask_mode(self) -> str:
        return self._estimators()[0].mask_mode

    def set_mask_mode(self, mode: str) -> None:
        """Choose what the masks are made of (see :data:`MASK_MODES`).

        Raises:
            BadRequest: an unknown mode.
            UnsupportedModel: a mode that needs the segmentation network on a mono model.
        """
        if mode not in MASK_MODES:
            raise BadRequest(
                f"unknown HyperACE mask mode {mode!r}; choose one of {', '.join(MASK_MODES)}"
            )
        estimators = self._estimators()
        if mode != NO_SEGM and not all(estimator.segm_fits for estimator in estimators):
            raise UnsupportedModel(
                f"HyperACE mask mode {mode!r} needs a stereo model; use {NO_SEGM!r}"
            )
        for estimator in estimators:
            estimator.mask_mode = mode

    def _estimators(self) -> list[HyperACEMaskEstimator]:
        return [e for e in self.mask_estimators if isinstance(e, HyperACEMaskEstimator)]
