"""The transformer parts both RoFormers share: RMSNorm, feed-forward, rotary attention,
linear (cross-covariance) attention and the pre-norm residual block stack.

Tensors are token-major: ``x`` is ``[..., D]`` and a layer attends along one chosen axis
of its leading dimensions (``seq_dim``), every other leading axis being independent
sequences. The band-split network keeps its ``[B, T, F, D]`` activation contiguous for
the whole stack this way: the time transformer attends along ``T``, the frequency
transformer along ``F``, and only the attention itself sees a head-major copy.

Module and parameter names follow the published checkpoints (``to_qkv``, ``to_gates``,
``to_out.0``, ``net.1``/``net.4``, ``rotary_embed.freqs``, ...), so their state dicts
load byte-for-byte; parameter-free slots the references filled with dropout or einops
layers are ``nn.Identity`` here to keep the indices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsu.archs.autocast import float32_region

NORM_EPS = 1e-12
"""The references clamp the L2 norm of a feature vector at this before dividing."""

ROTARY_THETA = 10_000.0
"""Base of the rotary angle frequencies (``rotary_embedding_torch``'s default)."""

LINEAR_ATTENTION_SCALE = 8.0
"""Fixed logit scale of the linear attention (the references' ``Attend(scale=8)``)."""


def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Unit L2 norm along ``dim``, computed in fp32 and returned in ``x``'s dtype."""
    with float32_region(x.device):
        return F.normalize(x.float(), dim=dim, eps=NORM_EPS).to(x.dtype)


class RMSNorm(nn.Module):
    """``x / ||x|| * sqrt(D) * gamma`` over the last axis, in fp32.

    Shapes: ``[..., D] -> [..., D]`` (same dtype as the input).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with float32_region(x.device):
            # F.normalize's arithmetic, then the (pre-scaled, tiny) gain applied in place:
            # one full-size allocation instead of two. Training keeps the quotient, which
            # the gain's gradient needs.
            x32 = x.float()
            norm = torch.linalg.vector_norm(x32, dim=-1, keepdim=True).clamp_min(NORM_EPS)
            unit, gain = x32 / norm, self.gamma.float() * self.scale
            out = unit * gain if torch.is_grad_enabled() else unit.mul_(gain)
            return out.to(x.dtype)


CPU_SLICE_BYTES = 16 << 20
"""On the CPU, attention and feed-forward layers run over slices of independent tokens
whose widest activation (the qkv projection, the hidden layer) is at most about this
big: it stays in cache between the matmuls, and the allocator reuses it instead of
mapping a fresh one (a 400 MB hidden layer per feed-forward for an 8 s BS-RoFormer
chunk) and faulting its pages in. The results are equal to within rounding (tokens of
one sequence are never cut apart); an 8 s ep_317 chunk's layers run 15-25% faster."""


def cpu_slice(x: torch.Tensor, width: int, seq_dim: int | None = None) -> tuple[int, int] | None:
    """Where to cut ``x [..., D]`` for a layer whose widest activation has ``width``
    features per token: ``(axis, entries per slice)``, or None to run it whole.

    Tokens along leading axis ``seq_dim`` attend to each other, so the cut goes along
    the longest other leading axis; without ``seq_dim`` every token is independent.
    """
    if x.device.type != "cpu" or x.ndim < 2:
        return None
    lead = x.ndim - 1
    axes = [d for d in range(lead) if seq_dim is None or d != seq_dim % lead]
    if not axes:
        return None
    axis = max(axes, key=lambda d: x.shape[d])
    tokens_per_entry = x[..., 0].numel() // max(x.shape[axis], 1)
    budget = CPU_SLICE_BYTES // (width * x.element_size())
    entries = max(1, budget // max(tokens_per_entry, 1))
    return (axis, entries) if entries < x.shape[axis] else None


class FeedForward(nn.Module):
    """Pre-norm MLP ``D -> D * mult -> D`` with GELU. Shapes: ``[..., D] -> [..., D]``."""

    def __init__(self, dim: int, mult: float = 4) -> None:
        super().__init__()
        inner = int(dim * mult)
        # Index 3 held dropout in the reference; the checkpoints name the second linear net.4.
        self.net = nn.Sequential(
            RMSNorm(dim), nn.Linear(dim, inner), nn.GELU(), nn.Identity(), nn.Linear(inner, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        cut = cpu_slice(flat, self.net[1].out_features)
        if cut is None:
            return self.net(x)
        return torch.cat([self.net(part) for part in flat.split(cut[1])]).view(x.shape)


class RotaryEmbedding(nn.Module):
    """Rotary position angles for one axis, shared by every attention layer on it.

    ``freqs`` (``[dim_head / 2]``) is stored in the checkpoints as a parameter; the loaded
    values are the ones used.
    """

    def __init__(self, dim_head: int) -> None:
        super().__init__()
        exponents = torch.arange(0, dim_head, 2).float() / dim_head
        self.freqs = nn.Parameter(ROTARY_THETA**-exponents, requires_grad=False)

    def rotation(self, length: int, device: torch.device) -> torch.Tensor:
        """Unit complex rotations ``[length, dim_head / 2]`` (complex64) for positions 0...

        Built in fp32 whatever autocast says: the angles grow with the position.
        """
        with float32_region(device):
            positions = torch.arange(length, device=device, dtype=torch.float32)
            angles = positions[:, None] * self.freqs.to(device=device, dtype=torch.float32)
            return torch.polar(torch.ones_like(angles), angles)

    @staticmethod
    def rotate_(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
        """Rotate feature pairs ``(2i, 2i + 1)`` of fp32 ``x`` ``[..., n, dim_head]`` in place.

        A pair is a complex number; rotating it is one complex multiply.
        """
        torch.view_as_complex(x.unflatten(-1, (-1, 2))).mul_(rotation)
        return x


class Attention(nn.Module):
    """Pre-norm multi-head self-attention with per-head sigmoid output gates.

    Positions are encoded by rotary embeddings (``rotary_embed``), by PoPE
    (``pope_embed``, see :mod:`dsu.archs.roformer.pope`) or not at all. ``shared_bias``
    is ``(qkv [3 * H * dh], out [D])``, biases of the two projections that are owned
    (and shared with other layers) by the caller; without it they have none.

    Shapes: ``x [..., D]`` contiguous; attention runs along leading axis ``seq_dim``;
    returns ``[..., D]`` in the same layout.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        rotary_embed: RotaryEmbedding | None = None,
        pope_embed: nn.Module | None = None,
        shared_bias: tuple[nn.Parameter, nn.Parameter] | None = None,
    ) -> None:
        super().__init__()
        if rotary_embed is not None and pope_embed is not None:
            raise ValueError("an attention layer takes rotary or PoPE positions, not both")
        self.heads = heads
        self.dim_head = dim_head
        inner = heads * dim_head
        # Registered first, as in the references, so the state dicts list keys alike.
        self.rotary_embed = rotary_embed
        self.pope_embed = pope_embed
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False))
        if shared_bias is not None:
            self.to_qkv.bias, self.to_out[0].bias = shared_bias

    def forward(self, x: torch.Tensor, seq_dim: int) -> torch.Tensor:
        cut = cpu_slice(x, self.to_qkv.out_features, seq_dim)
        if cut is None:
            return self._attend(x, seq_dim)
        axis, entries = cut
        parts = [self._attend(part, seq_dim) for part in x.split(entries, dim=axis)]
        return torch.cat(parts, dim=axis)

    def _attend(self, x: torch.Tensor, seq_dim: int) -> torch.Tensor:
        h = self.norm(x)
        lead = h.ndim - 1
        seq_dim %= lead
        others = [d for d in range(lead) if d != seq_dim]
        # [*lead, 3, H, dh] -> [3, *others, H, n, dh]: the one copy to head-major layout.
        qkv = self.to_qkv(h).unflatten(-1, (3, self.heads, self.dim_head))
        qkv = qkv.permute(lead, *others, lead + 1, seq_dim, lead + 2).contiguous()
        qkv = qkv.flatten(1, len(others))
        q, k, v = qkv[0], qkv[1], qkv[2]  # [N, H, n, dh] each
        if self.rotary_embed is not None:
            rotation = self.rotary_embed.rotation(q.shape[-2], q.device)
            q, k = (self._rotated(t, rotation) for t in (q, k))
        if self.pope_embed is not None:
            q, k = self.pope_embed(q, k)
            out = F.scaled_dot_product_attention(q, k, v, scale=self.dim_head**-0.5)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        # Back to token-major [*lead, H, dh]; the gate multiply writes it contiguous.
        out = out.unflatten(0, [h.shape[d] for d in others]).movedim(-2, seq_dim)
        gates = self.to_gates(h).sigmoid().unsqueeze(-1)
        out = (gates * out).flatten(-2)
        return self.to_out(out)

    @staticmethod
    def _rotated(t: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
        with float32_region(t.device):
            # .float() is t itself in fp32, so the rotation then happens in place.
            rotated = RotaryEmbedding.rotate_(t.float(), rotation)
        return rotated.to(t.dtype)


class LinearAttention(nn.Module):
    """Cross-covariance attention (El-Nouby et al., 2021, arXiv:2106.09681).

    Each head attends between its ``dim_head`` feature channels rather than between
    tokens: queries and keys are L2-normalised along the tokens, so the cost is linear
    in the sequence length. Used over all ``T * F`` tokens of a chunk.

    Shapes: ``x [..., D]`` contiguous, sequence along leading axis ``seq_dim``;
    returns ``[..., D]``.
    """

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        inner = heads * dim_head
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Sequential(nn.Linear(dim, inner * 3, bias=False))
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        # Index 0 held the reference's einops Rearrange; the checkpoints name to_out.1.
        self.to_out = nn.Sequential(nn.Identity(), nn.Linear(inner, dim, bias=False))

    def forward(self, x: torch.Tensor, seq_dim: int) -> torch.Tensor:
        h = self.norm(x)
        tokens = h.movedim(seq_dim, -2)
        shape = tokens.shape[:-1]
        qkv = self.to_qkv(tokens.reshape(-1, shape[-1], tokens.shape[-1]))
        # [N, n, 3, H, dh] -> [3, N, H, dh, n]: channels become the attended "sequence".
        q, k, v = qkv.unflatten(-1, (3, self.heads, self.dim_head)).permute(2, 0, 3, 4, 1)
        q = l2_normalize(q) * self.temperature.exp()
        k = l2_normalize(k)
        attn = (q @ k.transpose(-1, -2) * LINEAR_ATTENTION_SCALE).softmax(dim=-1)
        out = (attn @ v).permute(0, 3, 1, 2).flatten(-2)  # [N, n, H * dh]
        out = self.to_out(out).unflatten(0, shape[:-1])
        return out.movedim(-2, seq_dim)


class Transformer(nn.Module):
    """``depth`` residual (attention, feed-forward) pairs, optionally a final RMSNorm.

    Shapes: ``x [..., D]`` contiguous, sequence along leading axis ``seq_dim``;
    returns ``[..., D]``.
    """

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        ff_mult: float = 4,
        norm_output: bool = True,
        linear_attn: bool = False,
        rotary_embed: RotaryEmbedding | None = None,
        pope_embed: nn.Module | None = None,
        shared_bias: tuple[nn.Parameter, nn.Parameter] | None = None,
    ) -> None:
        super().__init__()
        if linear_attn and shared_bias is not None:
            raise ValueError("shared attention biases apply to softmax attention only")
        self.layers = nn.ModuleList()
        for _ in range(depth):
            attn: nn.Module
            if linear_attn:
                attn = LinearAttention(dim, heads, dim_head)
            else:
                attn = Attention(dim, heads, dim_head, rotary_embed, pope_embed, shared_bias)
            self.layers.append(nn.ModuleList([attn, FeedForward(dim, ff_mult)]))
        self.norm = RMSNorm(dim) if norm_output else nn.Identity()

    def forward(self, x: torch.Tensor, seq_dim: int) -> torch.Tensor:
        for attn, ff in self.layers:
            # Both return fresh tensors; adding in place saves a full-size allocation. The
            # sum keeps x's dtype (fp32 under autocast: the layers' bf16 outputs are cast
            # up; in fp32 the cast is a no-op).
            x = attn(x, seq_dim).to(x.dtype).add_(x)
            x = ff(x).to(x.dtype).add_(x)
        return self.norm(x)
