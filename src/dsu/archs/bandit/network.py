"""BandIt v2 (Watcharasupat, Wu, Lerch, "A Generalized Bandsplit Neural Network for
Cinematic Audio Source Separation", 2023): one shared encoder, a mask per stem.

Each audio channel is separated alone. Its complex STFT is cut into overlapping musical
bands (:mod:`dsu.archs.bandit.bands`); each band is normalised and projected to an
embedding; pairs of residual RNNs model the embeddings across time and then across bands;
for every stem, one MLP per band turns the embeddings into that band's complex mask, the
band masks are weighed by each bin's share and summed into one full-band mask, and the
masked spectrogram is inverted.

Module and buffer names follow the reference implementation, so its checkpoints load
strictly (``stft.window``, ``band_split.norm_fc_modules.<band>.combined``,
``tf_model.seqband.<2k>``, ``mask_estim.<stem>.norm_mlp.<band>``,
``mask_estim.<stem>.freq_weights/<band>``).
"""

from __future__ import annotations

import torch
from torch import nn

from dsu.archs.autocast import float32_region
from dsu.archs.bandit.bands import BandSpec, musical_bands
from dsu.archs.bandit.config import BanditConfig


class Spectrogram(nn.Module):
    """Complex STFT: ``[N, T] -> [N, F, frames]`` (``F = n_fft // 2 + 1``), in fp32.

    ``normalized`` divides by the window's energy ``sqrt(sum(window ** 2))``.
    """

    def __init__(self, config: BanditConfig) -> None:
        super().__init__()
        self.n_fft, self.hop = config.n_fft, config.hop_length
        self.center, self.pad_mode, self.normalized = (
            config.center,
            config.pad_mode,
            config.normalized,
        )
        self.register_buffer("window", config.window())

    def scale(self) -> torch.Tensor:
        return self.window.pow(2).sum().sqrt()

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        with float32_region(audio.device):
            spec = torch.stft(
                audio.float(),
                self.n_fft,
                self.hop,
                win_length=self.window.shape[0],
                window=self.window.float(),
                center=self.center,
                pad_mode=self.pad_mode,
                onesided=True,
                return_complex=True,
            )
            return spec / self.scale() if self.normalized else spec


class InverseSpectrogram(Spectrogram):
    """Inverse of :class:`Spectrogram`: ``[N, F, frames] -> [N, length]``, in fp32."""

    def forward(self, spec: torch.Tensor, length: int) -> torch.Tensor:  # type: ignore[override]
        with float32_region(spec.device):
            if self.normalized:
                spec = spec * self.scale()
            return torch.istft(
                spec,
                self.n_fft,
                self.hop,
                win_length=self.window.shape[0],
                window=self.window.float(),
                center=self.center,
                onesided=True,
                length=length,
            )


class BandEmbedding(nn.Module):
    """One band's bins to an embedding: ``[B, frames, C * bins * 2] -> [B, frames, emb]``."""

    def __init__(self, width: int, in_channels: int, emb_dim: int) -> None:
        super().__init__()
        features = in_channels * width * 2
        self.combined = nn.Sequential(nn.LayerNorm(features), nn.Linear(features, emb_dim))

    def forward(self, band: torch.Tensor) -> torch.Tensor:
        return self.combined(band)


class BandSplit(nn.Module):
    """Complex spectrogram ``[B, C, F, frames]`` to band embeddings ``[B, bands, frames, emb]``."""

    def __init__(self, spec: BandSpec, in_channels: int, emb_dim: int) -> None:
        super().__init__()
        self.bands = spec.bands
        self.norm_fc_modules = nn.ModuleList(
            BandEmbedding(width, in_channels, emb_dim) for width in spec.widths
        )

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        batch, _, _, frames = spec.shape
        # [B, frames, C, F, re/im]: each band's features ordered channel, bin, re/im.
        bins = torch.view_as_real(spec.permute(0, 3, 1, 2))
        return torch.stack(
            [
                embed(bins[:, :, :, start:end].reshape(batch, frames, -1))
                for (start, end), embed in zip(self.bands, self.norm_fc_modules, strict=True)
            ],
            dim=1,
        )


class ResidualRNN(nn.Module):
    """LayerNorm, an RNN along the third axis, a projection, plus the input:
    ``[B, N, L, emb] -> [B, N, L, emb]`` (the RNN runs over ``L`` for each of ``N``)."""

    def __init__(self, emb_dim: int, rnn_dim: int, bidirectional: bool, rnn_type: str) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(emb_dim)
        self.rnn = getattr(nn, rnn_type)(
            input_size=emb_dim,
            hidden_size=rnn_dim,
            num_layers=1,
            batch_first=True,
            bidirectional=bidirectional,
        )
        self.fc = nn.Linear(rnn_dim * (2 if bidirectional else 1), emb_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch, outer, inner, emb = z.shape
        h = self.rnn(self.norm(z).reshape(batch * outer, inner, emb))[0]
        return self.fc(h.reshape(batch, outer, inner, -1)) + z


class Transpose(nn.Module):
    """Swap the band and time axes: ``[B, N, L, emb] -> [B, L, N, emb]``."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.transpose(1, 2)


class SequenceBandModel(nn.Module):
    """``n_sqm_modules`` pairs of residual RNNs, over time then over bands:
    ``[B, bands, frames, emb] -> [B, bands, frames, emb]``."""

    def __init__(self, config: BanditConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(2 * config.n_sqm_modules):
            layers += [
                ResidualRNN(config.emb_dim, config.rnn_dim, config.bidirectional, config.rnn_type),
                Transpose(),
            ]
        self.seqband = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.seqband(z)


class BandMask(nn.Module):
    """One band's mask from its embeddings: ``[B, frames, emb] -> [B, C, bins, frames]``
    (complex with ``complex_mask``): LayerNorm, a hidden layer, a GLU output layer."""

    def __init__(self, width: int, config: BanditConfig) -> None:
        super().__init__()
        self.width, self.channels = width, config.in_channels
        self.parts = 2 if config.complex_mask else 1
        self.norm = nn.LayerNorm(config.emb_dim)
        self.hidden = nn.Sequential(nn.Linear(config.emb_dim, config.mlp_dim), config.activation())
        self.output = nn.Sequential(
            nn.Linear(config.mlp_dim, width * self.channels * self.parts * 2), nn.GLU(dim=-1)
        )
        # The reference also registers the three layers as one Sequential, so its
        # checkpoints store every tensor under both names; ``combined`` shares them.
        self.combined = nn.Sequential(self.norm, self.hidden, self.output)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        batch, frames, _ = q.shape
        # The mask is assembled in fp32 (a half-precision complex tensor is not portable).
        mask = self.combined(q).float().reshape(batch, frames, self.channels, self.width, -1)
        mask = torch.view_as_complex(mask.contiguous()) if self.parts == 2 else mask[..., 0]
        return mask.permute(0, 2, 3, 1)


class MaskEstimator(nn.Module):
    """One stem's full-band mask: ``[B, bands, frames, emb] -> [B, C, F, frames]`` complex,
    the sum of the band masks, each weighed by its bins' shares (``use_freq_weights``)."""

    def __init__(self, spec: BandSpec, n_freq: int, config: BanditConfig) -> None:
        super().__init__()
        self.bands, self.n_freq, self.channels = spec.bands, n_freq, config.in_channels
        self.norm_mlp = nn.ModuleList(BandMask(width, config) for width in spec.widths)
        self.use_freq_weights = config.use_freq_weights
        if self.use_freq_weights:
            for i, weight in enumerate(spec.weights):
                self.register_buffer(f"freq_weights/{i}", weight.clone())

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        batch, _, frames, _ = q.shape
        mask = torch.zeros(
            batch, self.channels, self.n_freq, frames, dtype=torch.complex64, device=q.device
        )
        for i, ((start, end), band) in enumerate(zip(self.bands, self.norm_mlp, strict=True)):
            part = band(q[:, i])
            if self.use_freq_weights:
                part = part * self.get_buffer(f"freq_weights/{i}")[:, None]
            mask[:, :, start:end] += part
        return mask


class Bandit(nn.Module):
    """BandIt v2: ``[B, C, T] -> [B, S, C, T]`` for the config's ``S`` stems.

    Each of the ``C`` channels is separated on its own (``in_channels`` is 1).
    """

    def __init__(self, config: BanditConfig) -> None:
        super().__init__()
        self.stems = config.stems
        spec = musical_bands(config.n_fft, config.fs, config.n_bands)
        self.stft = Spectrogram(config)
        self.istft = InverseSpectrogram(config)
        self.band_split = BandSplit(spec, config.in_channels, config.emb_dim)
        self.tf_model = SequenceBandModel(config)
        self.mask_estim = nn.ModuleDict(
            {stem: MaskEstimator(spec, config.n_fft // 2 + 1, config) for stem in config.stems}
        )

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        batch, channels, length = mix.shape
        x = self.stft(mix.reshape(batch * channels, length))[:, None]  # [BC, 1, F, frames]
        q = self.tf_model(self.band_split(x))  # [BC, bands, frames, emb]
        stems = [
            self.istft((x * estimator(q))[:, 0], length) for estimator in self.mask_estim.values()
        ]
        return (
            torch.stack(stems, dim=1).reshape(batch, channels, len(stems), length).transpose(1, 2)
        )
