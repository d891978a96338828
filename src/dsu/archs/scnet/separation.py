"""SCNet's separation network: dual-path layers between RFFTs along time.

At the bottleneck the spectrum ``[B, C, F, T]`` goes through ``num_dplayer`` dual-path
layers, each modelling the frequency axis (every frame a sequence of bins) and then the
time axis (every bin a sequence of frames), both residual. After every even layer the
time axis is replaced by its orthonormal RFFT (real and imaginary parts stacked as
channels: ``[B, 2C, F, T/2 + 1]``) and after every odd layer transformed back, so half
the layers model the time axis in the frequency domain of the frames. ``T`` is even
(the network pads its input so), which makes the round trip exact.

The dual-path layer is a bidirectional LSTM pair (``scnet``, ``scnet_masked``) or a
rotary transformer pair (``scnet_tran``). Parameter names are the references'.
"""

from __future__ import annotations

import torch
from torch import nn

from dsu.archs.autocast import float32_region
from dsu.archs.roformer.layers import RotaryEmbedding, Transformer
from dsu.archs.scnet.config import TransformerConfig


class FeatureConversion(nn.Module):
    """Orthonormal RFFT along time, or its inverse, in fp32.

    Shapes: forward ``[B, C, F, T] -> [B, 2C, F, T/2 + 1]`` (real parts, then imaginary);
    inverse ``[B, 2C, F, T/2 + 1] -> [B, C, F, T]``. Returned in the input's dtype.
    """

    def __init__(self, inverse: bool) -> None:
        super().__init__()
        self.inverse = inverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with float32_region(x.device):
            if self.inverse:
                real, imag = x.float().chunk(2, dim=1)
                out = torch.fft.irfft(torch.complex(real, imag), dim=3, norm="ortho")
            else:
                spec = torch.fft.rfft(x.float(), dim=3, norm="ortho")
                out = torch.cat([spec.real, spec.imag], 1)
        return out.to(x.dtype)


class DualPathRNN(nn.Module):
    """Bidirectional LSTM along frequency, then along time, each pre-normed and residual.

    Shapes: ``[B, C, F, T] -> [B, C, F, T]``; LSTM hidden size ``C * expand``.
    """

    def __init__(self, channels: int, expand: int) -> None:
        super().__init__()
        hidden = channels * expand
        self.lstm_layers = nn.ModuleList(
            nn.LSTM(channels, hidden, batch_first=True, bidirectional=True) for _ in range(2)
        )
        self.linear_layers = nn.ModuleList(nn.Linear(2 * hidden, channels) for _ in range(2))
        self.norm_layers = nn.ModuleList(nn.GroupNorm(1, channels) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, bins, frames = x.shape
        # Frequency path: every frame is a sequence of bins, [B·T, F, C].
        h = self.norm_layers[0](x).permute(0, 3, 2, 1).reshape(batch * frames, bins, channels)
        h = self.linear_layers[0](self.lstm_layers[0](h)[0])
        x = x + h.view(batch, frames, bins, channels).permute(0, 3, 2, 1)
        # Time path: every bin is a sequence of frames, [B·F, T, C].
        h = self.norm_layers[1](x).permute(0, 2, 3, 1).reshape(batch * bins, frames, channels)
        h = self.linear_layers[1](self.lstm_layers[1](h)[0])
        return x + h.view(batch, bins, frames, channels).permute(0, 3, 1, 2)


class DualPathTransformer(nn.Module):
    """A rotary transformer along frequency, then one along time, pre-normed (GroupNorm)
    and residual; the rotary embeddings are shared by every layer of the network.

    Shapes: ``[B, C, F, T] -> [B, C, F, T]``.
    """

    def __init__(
        self,
        channels: int,
        config: TransformerConfig,
        time_rotary: RotaryEmbedding,
        freq_rotary: RotaryEmbedding,
    ) -> None:
        super().__init__()
        self.norm_layers = nn.ModuleList(nn.GroupNorm(1, channels) for _ in range(2))
        self.time_layer = Transformer(
            dim=channels,
            depth=config.depth,
            heads=config.heads,
            dim_head=config.dim_head,
            rotary_embed=time_rotary,
        )
        self.freq_layer = Transformer(
            dim=channels,
            depth=config.depth,
            heads=config.heads,
            dim_head=config.dim_head,
            rotary_embed=freq_rotary,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Token-major [B, T, F, C]: attend along F (axis 2), then along T (axis 1).
        h = self.norm_layers[0](x).permute(0, 3, 2, 1).contiguous()
        x = x + self.freq_layer(h, seq_dim=2).permute(0, 3, 2, 1)
        h = self.norm_layers[1](x).permute(0, 3, 2, 1).contiguous()
        return x + self.time_layer(h, seq_dim=1).permute(0, 3, 2, 1)


class SeparationNet(nn.Module):
    """``layers`` dual-path layers, alternating with RFFT and inverse RFFT along time.

    Even layers see ``C`` channels, odd ones the ``2C`` of the RFFT domain.

    Shapes: ``[B, C, F, T] -> [B, C, F, T]`` (``T`` even).
    """

    def __init__(
        self,
        channels: int,
        layers: int,
        expand: int,
        transformer: TransformerConfig | None = None,
    ) -> None:
        super().__init__()
        widths = [channels * (2 if i % 2 else 1) for i in range(layers)]
        if transformer is None:
            self.dp_modules = nn.ModuleList(DualPathRNN(width, expand) for width in widths)
        else:
            time_rotary = RotaryEmbedding(transformer.dim_head)
            freq_rotary = RotaryEmbedding(transformer.dim_head)
            self.dp_modules = nn.ModuleList(
                DualPathTransformer(width, transformer, time_rotary, freq_rotary)
                for width in widths
            )
        self.feature_conversion = nn.ModuleList(
            FeatureConversion(inverse=bool(i % 2)) for i in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, conversion in zip(self.dp_modules, self.feature_conversion, strict=True):
            x = conversion(layer(x))
        return x
