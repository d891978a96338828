"""SCNet: Sparse Compression Network for music source separation, and MSST's variants.

"SCNet: Sparse Compression Network for Music Source Separation" (Tong et al., ICASSP
2024, arXiv:2401.13276). The network maps a mixture chunk ``[B, C, T]`` to ``S`` stems
``[B, S, C, T]``:

1. Pad ``T`` to a whole, odd number of hops (an even frame count, see
   :mod:`.separation`); STFT (``center=True``, rectangular window); real and imaginary
   parts of each channel become the ``2C`` input channels: ``[B, 2C, F, N]``.
2. Encoder: SD blocks (:mod:`.layers`) compress the spectrum along frequency, the high
   band the most, and widen the channels ``dims[0] -> dims[-1]``.
3. Separation network: dual-path RNN layers at the bottleneck (:mod:`.separation`).
4. Decoder: fusion with each encoder level's skip and SU layers back to
   ``[B, 2C·S, F, N]``, one complex spectrum per stem and channel; iSTFT, trim the padding.

:class:`SCNetMasked` (MSST's ``scnet_masked``) adds a learnt frequency position embedding
to the input spectrum and predicts a complex mask (tanh-bounded real and imaginary
parts) that multiplies the mixture's spectrum, with a Hann window. :class:`SCNetTran`
(``scnet_tran``) replaces the RNNs by rotary transformers.

State-dict keys and shapes equal the references' (MSST's ``models/scnet/*.py``,
pymss-core's ``modules/scnet``), so the published checkpoints load as they are. STFT,
iSTFT and the separation network's RFFTs run in fp32 under any autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsu.archs.autocast import float32_region
from dsu.archs.scnet.config import ScnetConfig
from dsu.archs.scnet.layers import DecoderLevel, SDBlock
from dsu.archs.scnet.separation import SeparationNet

MASK_HIDDEN = 64
"""Channels of the masked variant's mask head."""


class SCNet(nn.Module):
    """SCNet (MSST's ``scnet``): ``[B, C, T]`` mixture -> ``[B, S, C, T]`` stems.

    Args:
        config: the parsed ``model:`` section (:func:`~.config.parse_model_config`).
    """

    def __init__(self, config: ScnetConfig) -> None:
        super().__init__()
        self.config = config
        dims = config.dims
        stems = len(config.sources)
        self.encoder = nn.ModuleList(
            SDBlock(dims[i], dims[i + 1], config) for i in range(len(dims) - 1)
        )
        # Deepest level first; the last level outputs one spectrum per stem.
        self.decoder = nn.ModuleList(
            DecoderLevel(dims[i + 1], dims[i] * (stems if i == 0 else 1), config)
            for i in reversed(range(len(dims) - 1))
        )
        self.separation_net = SeparationNet(
            dims[-1], config.num_dplayer, config.expand, config.transformer
        )

    def window(self, device: torch.device) -> torch.Tensor:
        """The STFT window: rectangular, as the references (which pass none)."""
        return torch.ones(self.config.win_size, device=device)

    def padding(self, length: int) -> int:
        """Samples appended to a ``length``-sample input: up to a whole, odd number of
        hops, so that the centred STFT has an even number of frames."""
        hop = self.config.hop_size
        pad = hop - length % hop
        if (length + pad) // hop % 2 == 0:
            pad += hop
        return pad

    def stft(self, audio: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` audio -> ``[B, 2C, F, N]`` spectrum (channel ``2c + re/im``), fp32."""
        batch, chans, length = audio.shape
        config = self.config
        with float32_region(audio.device):
            spec = torch.stft(
                audio.float().reshape(batch * chans, length),
                config.nfft,
                config.hop_size,
                config.win_size,
                window=self.window(audio.device),
                center=True,
                normalized=config.normalized,
                return_complex=True,
            )
        spec = torch.view_as_real(spec).permute(0, 3, 1, 2)  # [B·C, 2, F, N]
        return spec.reshape(batch, 2 * chans, *spec.shape[2:])

    def istft(self, spec: torch.Tensor) -> torch.Tensor:
        """``[B, 2C·S, F, N]`` spectra -> ``[B, S, C, T']`` fp32 audio (stem-major)."""
        batch, _, bins, frames = spec.shape
        config = self.config
        pairs = spec.float().reshape(-1, 2, bins, frames).permute(0, 2, 3, 1).contiguous()
        with float32_region(spec.device):
            audio = torch.istft(
                torch.view_as_complex(pairs),
                config.nfft,
                config.hop_size,
                config.win_size,
                window=self.window(spec.device),
                center=True,
                normalized=config.normalized,
            )
        return audio.reshape(batch, len(config.sources), config.audio_channels, -1)

    def backbone(self, spec: torch.Tensor) -> torch.Tensor:
        """Encoder, separation network and decoder: ``[B, 2C, F, N] -> [B, 2C·S, F, N]``."""
        skips = []
        x = spec
        for block in self.encoder:
            x, skip, lengths, widths = block(x)
            skips.append((skip, lengths, widths))
        x = self.separation_net(x)
        for level in self.decoder:
            x = level(x, *skips.pop())
        return x

    def check_input(self, mix: torch.Tensor) -> None:
        channels = self.config.audio_channels
        if mix.dim() != 3 or mix.shape[1] != channels:
            raise ValueError(f"expected [B, {channels}, T] audio, got {list(mix.shape)}")

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """Separate ``[B, C, T]`` (any ``T``) into ``[B, S, C, T]``."""
        self.check_input(mix)
        length = mix.shape[-1]
        spec = self.stft(F.pad(mix, (0, self.padding(length))))
        out = self.backbone(spec.to(self.weight_dtype))
        return self.istft(out)[..., :length]

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of the weights (the spectrum enters the encoder in it)."""
        return self.encoder[0].globalconv.weight.dtype


class SCNetTran(SCNet):
    """SCNet with dual-path rotary transformers (MSST's ``scnet_tran``).

    ``first_conv`` is a 1×1 conv the reference defines but never applies; it is kept so
    that its checkpoints, which carry the tensor, load strictly.
    """

    def __init__(self, config: ScnetConfig) -> None:
        if config.transformer is None:
            raise ValueError("SCNetTran needs a config with a transformer section")
        super().__init__(config)
        self.first_conv = nn.Conv2d(config.dims[0], config.dims[0], 1, 1, 0, bias=False)


class SCNetMasked(SCNet):
    """SCNet predicting a complex mask on the mixture's spectrum (MSST's ``scnet_masked``).

    Differences from :class:`SCNet`: a Hann window; ``pos_embed_f`` (``[1, 2C, F, 1]``,
    learnt) added to the input spectrum; the decoder output goes through ``mask_layer``
    (3×3 conv → GELU → 1×1 conv → tanh) and multiplies, as complex numbers, the mixture's
    spectrum of each channel for each stem.
    """

    def __init__(self, config: ScnetConfig) -> None:
        super().__init__(config)
        channels = config.dims[0] * len(config.sources)
        self.pos_embed_f = nn.Parameter(torch.zeros(1, config.dims[0], config.bins, 1))
        self.mask_layer = nn.Sequential(
            nn.Conv2d(channels, MASK_HIDDEN, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(MASK_HIDDEN, channels, 1),
            nn.Tanh(),
        )

    def window(self, device: torch.device) -> torch.Tensor:
        return torch.hann_window(self.config.win_size, device=device)

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """Separate ``[B, C, T]`` (any ``T``) into ``[B, S, C, T]``."""
        self.check_input(mix)
        length = mix.shape[-1]
        spec = self.stft(F.pad(mix, (0, self.padding(length))))
        dtype = self.weight_dtype
        mask = self.mask_layer(self.backbone((spec + self.pos_embed_f.float()).to(dtype)))
        stems = len(self.config.sources)
        masked = self._complex_product(spec.repeat(1, stems, 1, 1), mask.float())
        return self.istft(masked)[..., :length]

    @staticmethod
    def _complex_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Channel pairs ``(2k, 2k + 1)`` of ``a`` and ``b`` ``[B, 2K, F, N]`` as complex
        numbers ``re + i·im``, multiplied; returned in the same layout."""
        a_re, a_im = a[:, 0::2], a[:, 1::2]
        b_re, b_im = b[:, 0::2], b[:, 1::2]
        out = torch.stack([a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re], 2)
        return out.flatten(1, 2)
