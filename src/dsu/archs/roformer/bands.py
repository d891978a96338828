"""Band split (spectrum -> one token per band) and mask estimation (token -> band mask).

Every band has its own small network (an RMSNorm + linear in, an MLP + GLU out), stored
per band as the checkpoints lay them out (``band_split.to_features.<b>``,
``mask_estimators.<s>.to_freqs.<b>``). They run grouped: bands whose feature widths are
equal are stacked and go through one batched matmul, so a forward costs a handful of
``bmm`` calls instead of a Python loop over 60 bands.

Band features travel in *computation order* (:class:`BandGroups`): bands sorted by width,
equal widths adjacent. Callers feed :class:`BandSplit` band features in that order and
read :class:`MaskEstimator`'s masks in that order; for the standard BS-RoFormer band
layout (widths never decrease) it is the natural order.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dsu.archs.autocast import float32_region
from dsu.archs.roformer.layers import NORM_EPS, RMSNorm


@dataclass(frozen=True)
class BandGroups:
    """Bands sorted by feature width, cut into runs of equal width.

    Attributes:
        order: band indices in computation order (stable sort by width).
        runs: ``(start, end)`` slices of ``order``; the bands of a run share one width.
    """

    order: tuple[int, ...]
    runs: tuple[tuple[int, int], ...]

    @classmethod
    def by_width(cls, widths: Sequence[int]) -> BandGroups:
        order = tuple(sorted(range(len(widths)), key=lambda band: widths[band]))
        starts = [
            i for i in range(len(order)) if i == 0 or widths[order[i]] != widths[order[i - 1]]
        ]
        runs = tuple(zip(starts, [*starts[1:], len(order)], strict=True))
        return cls(order, runs)

    @property
    def is_natural(self) -> bool:
        """Whether computation order is band order."""
        return self.order == tuple(range(len(self.order)))


def _stacked(linears: Sequence[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``[G, in, out]`` (a transposed view, no copy beyond the stack) and biases
    ``[G, 1, out]`` of equally shaped linears."""
    weight = torch.stack([linear.weight for linear in linears]).transpose(1, 2)
    bias = torch.stack([linear.bias for linear in linears]).unsqueeze(1)
    return weight, bias


class BandSplit(nn.Module):
    """Per band: RMSNorm over the band's features, then a linear map to ``dim``.

    Shapes: ``[B, T, sum(dims_in)]`` (band features concatenated in computation order)
    -> ``[B, T, bands, dim]`` in band order.
    """

    def __init__(self, dim: int, dims_in: Sequence[int]) -> None:
        super().__init__()
        self.dims_in = tuple(dims_in)
        self.groups = BandGroups.by_width(self.dims_in)
        self.to_features = nn.ModuleList(
            nn.Sequential(RMSNorm(width), nn.Linear(width, dim)) for width in self.dims_in
        )
        inverse = sorted(range(len(self.groups.order)), key=self.groups.order.__getitem__)
        self.register_buffer("band_order", torch.tensor(inverse), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, _ = x.shape
        outs, offset = [], 0
        for start, end in self.groups.runs:
            bands = [self.to_features[b] for b in self.groups.order[start:end]]
            width = self.dims_in[self.groups.order[start]]
            size = (end - start) * width
            feats = x[..., offset : offset + size].reshape(batch * frames, end - start, width)
            offset += size
            with float32_region(x.device):
                gain = torch.stack([band[0].gamma for band in bands]).float() * width**0.5
                feats = (F.normalize(feats.float(), dim=-1, eps=NORM_EPS) * gain).to(x.dtype)
            weight, bias = _stacked([band[1] for band in bands])
            out = torch.baddbmm(bias, feats.transpose(0, 1), weight)  # [G, B*T, dim]
            outs.append(out.transpose(0, 1))
        tokens = torch.cat(outs, dim=1).unflatten(0, (batch, frames))
        if self.groups.is_natural:
            return tokens
        return tokens.index_select(2, self.band_order)


def mask_mlp(dim: int, dim_out: int, dim_hidden: int, hidden_layers: int) -> nn.Sequential:
    """``Linear -> Tanh`` ``hidden_layers`` times, then ``Linear`` to ``dim_out``.

    Indices follow the checkpoints: linears at 0, 2, 4, ..., tanh in between.
    """
    widths = [dim, *[dim_hidden] * hidden_layers, dim_out]
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
        if index:
            layers.append(nn.Tanh())
        layers.append(nn.Linear(width_in, width_out))
    return nn.Sequential(*layers)


class MaskEstimator(nn.Module):
    """Per band: an MLP ``dim -> 2 * width`` then a GLU, giving ``width`` mask values.

    ``width`` is the band's feature count (bins x channels x real/imaginary).

    Shapes: ``[B, T, bands, dim]`` in band order -> ``[B, T, sum(dims_in)]`` with the
    bands in computation order (:class:`BandGroups`), as :class:`BandSplit` reads them.
    """

    def __init__(
        self, dim: int, dims_in: Sequence[int], hidden_layers: int, mlp_expansion_factor: int = 4
    ) -> None:
        super().__init__()
        self.dims_in = tuple(dims_in)
        self.groups = BandGroups.by_width(self.dims_in)
        hidden = dim * mlp_expansion_factor
        self.to_freqs = nn.ModuleList(
            nn.Sequential(mask_mlp(dim, 2 * width, hidden, hidden_layers), nn.GLU(dim=-1))
            for width in self.dims_in
        )
        self.register_buffer("band_order", torch.tensor(self.groups.order), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, bands, dim = x.shape
        tokens = x.permute(2, 0, 1, 3).reshape(bands, batch * frames, dim)
        if not self.groups.is_natural:
            tokens = tokens.index_select(0, self.band_order)
        outs = []
        for start, end in self.groups.runs:
            mlps = [self.to_freqs[b][0] for b in self.groups.order[start:end]]
            h = tokens[start:end]  # [G, B*T, dim]
            depth = len(mlps[0]) // 2 + 1
            for layer in range(depth):
                weight, bias = _stacked([mlp[2 * layer] for mlp in mlps])
                h = torch.baddbmm(bias, h, weight)
                if layer < depth - 1:
                    h = h.tanh_()
            outs.append(F.glu(h, dim=-1).transpose(0, 1).flatten(1))  # [B*T, G * width]
        return torch.cat(outs, dim=-1).unflatten(0, (batch, frames))
