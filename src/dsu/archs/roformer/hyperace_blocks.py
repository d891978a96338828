"""Building blocks of the BS-RoFormer HyperACE segmentation network: instance-normed
separable convolutions and cross-stage partial (CSP) blocks, and the hypergraph core
:class:`HyperACE` ("adaptive correlation enhancement": soft hyperedges over all
positions of a feature map).

Module and parameter names are pymss-core's (``hyperace_segm``), so its state dicts load
strictly. Every instance norm runs in fp32 under autocast.

Shape names: ``B`` batch, ``C`` channels, ``H`` frames (the image's height), ``W`` bands
or bins (its width), ``N = H * W`` positions, ``E`` hyperedges.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dsu.archs.autocast import float32_region

INSTANCE_NORM_EPS = 1e-8
"""The reference's ``InstanceNorm2d(eps=1e-8)`` everywhere in the segmentation network."""


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
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
        with float32_region(x.device):
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
        fused = self.fuse_conv(torch.cat([resize(stage, size) for stage in stages], dim=1))
        high, low, rest = torch.split(fused, [self.c_h, self.c_l, self.c_s], dim=1)
        high = self.high_order_fuse(torch.cat([m(high) for m in self.high_order_branch], dim=1))
        return self.final_fuse(torch.cat((high, self.low_order_branch(low), rest), dim=1))
