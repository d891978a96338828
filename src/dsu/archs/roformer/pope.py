"""PoPE, the polar positional encoding of "BS PolarFormer" (``use_pope: true``).

Rotary embeddings rotate pairs of query/key features by a position-dependent angle.
PoPE instead treats every feature ``j`` as the magnitude of a complex number
(``softplus(q_j)``) whose phase is ``position * inv_freqs[j]`` — plus, for keys, a
learned per-head phase offset ``bias`` clamped to ``[-2 pi, 0]``. The attention logit
is the real part of ``sum_j q_j conj(k_j)``:
``sum_j |q_j| |k_j| cos(phase_q_j - phase_k_j)``, which an ordinary dot product of
``[|q| cos, |q| sin]`` with ``[|k| cos, |k| sin]`` computes, so the attention kernel is
unchanged; only its feature width doubles (the logit scale stays ``dim_head ** -0.5``).

State dict (BS PolarFormer checkpoints): ``inv_freqs [dim_head]`` (a buffer) and
``bias [heads, dim_head]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dsu.archs.autocast import float32_region
from dsu.archs.roformer.layers import ROTARY_THETA


class PoPE(nn.Module):
    """Polar position encoding for one axis, shared by the attention layers on it."""

    def __init__(self, dim_head: int, *, heads: int, theta: float = ROTARY_THETA) -> None:
        super().__init__()
        self.register_buffer("inv_freqs", theta ** -(torch.arange(dim_head).float() / dim_head))
        self.bias = nn.Parameter(torch.zeros(heads, dim_head))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode queries and keys.

        Args:
            q: ``[N, H, n, dim_head]`` queries.
            k: ``[N, H, n, dim_head]`` keys (same positions ``0 .. n - 1``).

        Returns:
            ``(q, k)`` each ``[N, H, n, 2 * dim_head]``: cosine half, then sine half, in
            the inputs' dtype; the phases are computed in fp32 whatever autocast says.
        """
        with float32_region(q.device):
            positions = torch.arange(k.shape[-2], device=q.device, dtype=torch.float32)
            phase = positions[:, None] * self.inv_freqs.float()  # [n, dh]
            offset = self.bias.float().clamp(-2 * math.pi, 0)[:, None, :]  # [H, 1, dh]
            q_polar = _polar(F.softplus(q.float()), phase)
            k_polar = _polar(F.softplus(k.float()), phase + offset)
        return q_polar.to(q.dtype), k_polar.to(k.dtype)


def _polar(magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """``[..., n, d]`` magnitudes and broadcastable phases -> ``[..., n, 2d]`` (cos, sin)."""
    return torch.cat((magnitude * phase.cos(), magnitude * phase.sin()), dim=-1)
