"""Apollo: band-sequence modelling for music restoration (Li & Luo, 2024).

"Apollo: Band-sequence Modeling for High-Quality Audio Restoration" (Kai Li, Yi Luo,
ICASSP 2025). The network maps a degraded waveform ``[B, C, S]`` to the restored one of
the same shape; every channel is restored on its own (no layer mixes channels):

1. STFT with a periodic Hann window of ``W`` samples and hop ``W / 2`` (``center=True``,
   reflect padding): ``[B·C, F, T]``, ``F = W / 2 + 1``.
2. The bins are cut into 80 contiguous bands (79 of width ``b = W // 160``, the last
   takes the rest). Each band is divided by its energy ``P = sqrt(Σ|X|² + eps)``; its real
   rows, imaginary rows and ``ln P`` are one feature ``[B·C, 2w+1, T]``, which an RMSNorm
   and a 1×1 conv embed to ``N`` channels: ``h [B·C, K=80, N, T]``.
3. ``layer`` band-sequence blocks, each a RoPE transformer across the 80 bands of every
   frame, then three residual depthwise-conv units across the frames of every band.
4. Per band an RMSNorm, a 1×1 conv and a GLU predict the band's output spectrum
   directly (no mask); the bands are concatenated and inverted by the iSTFT.

The output at a sample depends only on the input within ``9 * layer + 1`` hops of it
(attention mixes bands of one frame; each layer's three convolutions see ±3 frames each),
which is what lets the wrapper chunk it exactly (:func:`context_frames`).

State-dict keys and shapes equal the reference's (``look2hear/models/apollo.py`` of
JusperLee/Apollo, copied unchanged into MSST), so the published checkpoints load as they
are, including the RoPE tables ``net.<l>.band_net.{cos,sin}_freq``, which are loaded,
not recomputed.

Precision: the STFT, the band features, every RMSNorm's statistics and the iSTFT run in
float32 whatever the compute precision (autocast); the output is float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsu.archs.apollo.config import HEADS, ApolloConfig
from dsu.archs.autocast import float32_region

ROPE_THETA = 10000.0
ROPE_POSITIONS = 100
"""Rows of the RoPE tables: the band transformer takes at most this many tokens."""
RMS_EPS = 1e-5
BAND_EPS = torch.finfo(torch.float32).eps
"""Added to each band's energy under the square root (2^-23, as the reference)."""
CONV_UNITS = 3
CONV_KERNEL = 7
MLP_RATIO = 4
"""Hidden width of the gated MLP and of each conv unit, in multiples of ``N``."""


def context_frames(layers: int) -> int:
    """Hops of input on each side of a chunk that make its output exact.

    Each layer's three kernel-7 convolutions reach ``9`` frames further and an output
    sample lies in two frames, so ``9 * layer + 1`` hops would do for a chunk that starts
    on the hop grid and ends on it; one more keeps the chunk's own first and last frames
    (reflect-padded by the STFT) out of reach for any chunk length, and for a chunk moved
    forward by under one hop onto the grid.
    """
    return (CONV_KERNEL // 2) * CONV_UNITS * layers + 2


class RMSNorm(nn.Module):
    """Root-mean-square norm over the channels of ``[B, C, T]``, per time step.

    The statistics are computed in float32 and the result cast back to the input's dtype
    before the per-channel gain, as the reference does. No mean subtraction, no bias.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T] -> [B, C, T]``."""
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(1, keepdim=True) + RMS_EPS)
        return normed.to(x.dtype) * self.weight[:, None]


def rope_tables(head_dim: int, positions: int = ROPE_POSITIONS) -> tuple[torch.Tensor, ...]:
    """The RoPE ``cos`` and ``sin`` tables ``[positions, head_dim]``, each angle repeated
    over its interleaved pair, computed in float32 as the reference builds them."""
    exponent = torch.arange(0, head_dim, 2).float() / head_dim
    inv_freq = 1.0 / ROPE_THETA**exponent
    angles = torch.arange(positions).float()[:, None] * inv_freq[None]
    angles = angles.repeat_interleave(2, dim=1)
    return angles.cos(), angles.sin()


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Interleaved-pair rotary embedding: ``(x0, x1) -> (x0 c - x1 s, x1 c + x0 s)``.

    Args:
        x: ``[..., L, d]``.
        cos, sin: ``[L, d]``.
    """
    pairs = x.unflatten(-1, (-1, 2))
    turned = torch.stack((-pairs[..., 1], pairs[..., 0]), -1).flatten(-2)
    return x * cos + turned * sin


class BandTransformer(nn.Module):
    """Pre-norm RoPE transformer layer over a sequence of band tokens (``band_net``).

    The QKV projection's output channels are ordered (head, {q, k, v}, head_dim). The
    MLP is gated: ``[a, b] = SiLU(W1 · norm(s))``, then ``s + W2 · (SiLU(a) ⊙ b)``, so the
    gate half goes through SiLU twice, as in the reference.
    """

    def __init__(self, dim: int, heads: int = HEADS) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        cos, sin = rope_tables(self.head_dim)
        self.register_buffer("cos_freq", cos)
        self.register_buffer("sin_freq", sin)
        self.input_norm = RMSNorm(dim)
        self.weight = nn.Conv1d(dim, 3 * heads * self.head_dim, 1, bias=False)
        self.output = nn.Conv1d(heads * self.head_dim, dim, 1, bias=False)
        self.MLP = nn.Sequential(
            RMSNorm(dim), nn.Conv1d(dim, 2 * MLP_RATIO * dim, 1, bias=False), nn.SiLU()
        )
        self.MLP_output = nn.Conv1d(MLP_RATIO * dim, dim, 1, bias=False)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """``[B, N, L] -> [B, N, L]``, ``L <= 100`` tokens."""
        batch, _, length = s.shape
        qkv = self.weight(self.input_norm(s))
        qkv = qkv.view(batch, self.heads, 3 * self.head_dim, length).transpose(2, 3)
        q, k, v = qkv.split(self.head_dim, dim=-1)  # each [B, heads, L, d]
        cos, sin = self.cos_freq[:length], self.sin_freq[:length]
        q, k = rotate_pairs(q, cos, sin), rotate_pairs(k, cos, sin)
        attended = F.scaled_dot_product_attention(q, k, v)
        merged = attended.transpose(2, 3).reshape(batch, self.heads * self.head_dim, length)
        s = s + self.output(merged)
        gate, value = self.MLP(s).chunk(2, dim=1)
        return s + self.MLP_output(F.silu(gate) * value)


class ConvUnit(nn.Module):
    """Residual depthwise-conv unit over time: ``x + W2 · SiLU(W1 · norm(dwconv(x)))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(dim, dim, CONV_KERNEL, padding=CONV_KERNEL // 2, groups=dim),
            RMSNorm(dim),
            nn.Conv1d(dim, MLP_RATIO * dim, 1),
            nn.SiLU(),
            nn.Conv1d(MLP_RATIO * dim, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, T] -> [B, N, T]``."""
        return x + self.conv(x)


class SequenceConvs(nn.Module):
    """Three :class:`ConvUnit` in a row (``seq_net``): ±9 frames of context."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ConvUnit(dim) for _ in range(CONV_UNITS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, T] -> [B, N, T]``."""
        for block in self.blocks:
            x = block(x)
        return x


class BandSequenceBlock(nn.Module):
    """Attention across the bands of each frame, then convolutions across the frames of
    each band (weights shared by all bands)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.band_net = BandTransformer(dim)
        self.seq_net = SequenceConvs(dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, K, N, T] -> [B, K, N, T]``."""
        batch, bands, dim, frames = h.shape
        across_bands = h.permute(0, 3, 2, 1).reshape(batch * frames, dim, bands)
        h = self.band_net(across_bands).view(batch, frames, dim, bands).permute(0, 3, 2, 1)
        across_time = h.reshape(batch * bands, dim, frames)
        return self.seq_net(across_time).view(batch, bands, dim, frames)


class Apollo(nn.Module):
    """The Apollo restoration network.

    Args:
        config: window, feature width and depth (:class:`ApolloConfig`).
    """

    def __init__(self, config: ApolloConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.feature_dim
        widths = config.band_widths
        self.BN = nn.ModuleList(
            nn.Sequential(RMSNorm(2 * w + 1), nn.Conv1d(2 * w + 1, dim, 1)) for w in widths
        )
        self.net = nn.ModuleList(BandSequenceBlock(dim) for _ in range(config.layer))
        self.output = nn.ModuleList(
            nn.Sequential(RMSNorm(dim), nn.Conv1d(dim, 4 * w, 1), nn.GLU(dim=1)) for w in widths
        )

    def _window(self, device: torch.device) -> torch.Tensor:
        return torch.hann_window(self.config.window, device=device)

    def embed(self, spec: torch.Tensor) -> torch.Tensor:
        """Energy-normalised band features, embedded: ``[B, F, T]`` complex ->
        ``[B, K, N, T]``."""
        features = []
        for band, (lo, hi) in enumerate(self.config.band_edges):
            part = spec[:, lo:hi]
            with float32_region(spec.device):
                energy = (part.abs().pow(2).sum(1, keepdim=True) + BAND_EPS).sqrt()
                normed = part / energy
                feature = torch.cat([normed.real, normed.imag, energy.log()], 1)
            features.append(self.BN[band](feature))
        return torch.stack(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore a waveform.

        Args:
            x: ``[B, C, S]`` audio, ``S > W / 2`` (the STFT's reflect padding).

        Returns:
            ``[B, C, S]`` float32, the restored signal (not a residual).
        """
        batch, channels, length = x.shape
        window = self._window(x.device)
        with float32_region(x.device):
            spec = torch.stft(
                x.reshape(batch * channels, length).float(),
                n_fft=self.config.window,
                hop_length=self.config.hop,
                window=window,
                center=True,
                return_complex=True,
            )
        h = self.embed(spec)
        for block in self.net:
            h = block(h)
        bands = []
        for band, width in enumerate(self.config.band_widths):
            out = self.output[band](h[:, band]).float()
            bands.append(torch.complex(out[:, :width], out[:, width:]))
        with float32_region(x.device):
            restored = torch.istft(
                torch.cat(bands, 1),
                n_fft=self.config.window,
                hop_length=self.config.hop,
                window=window,
                center=True,
                length=length,
            )
        return restored.view(batch, channels, length)
