"""The band-split RoFormer both families are: spectrum -> band tokens -> axial
transformers -> per-band complex masks -> masked spectrum -> audio.

A family only says which STFT bins form each band (:class:`BandRoformer` takes the
list): BS-RoFormer's bands are contiguous and disjoint, Mel-Band RoFormer's overlap
(their masks are averaged where they do).

Einstein names in shapes: ``B`` batch, ``C`` audio channels, ``L`` samples, ``F`` STFT
bins, ``T`` STFT frames, ``N`` stems, ``D`` token width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dsu.archs.autocast import float32_region
from dsu.archs.roformer.bands import BandSplit, MaskEstimator
from dsu.archs.roformer.config import RoformerConfig
from dsu.archs.roformer.layers import RMSNorm, RotaryEmbedding, Transformer
from dsu.archs.roformer.pope import PoPE


class BandRoformer(nn.Module):
    """Band-split RoFormer over given bands (see the module docstring).

    Subclasses choose the bands; :attr:`mask_estimator_cls` may be replaced by one with
    :class:`~dsu.archs.roformer.bands.MaskEstimator`'s constructor and shapes.

    Args:
        config: the hyperparameters.
        bands: for each band, the STFT bins (ascending) it covers; every bin must be in
            at least one band.
        norm_output: end every transformer with an RMSNorm (Mel-Band RoFormer).
        final_norm: RMSNorm the tokens before the mask estimators (BS-RoFormer).
        shared_bias: give every softmax attention layer's projections one pair of
            biases, shared by all layers.
    """

    mask_estimator_cls: type[nn.Module] = MaskEstimator

    def __init__(
        self,
        config: RoformerConfig,
        bands: Sequence[Sequence[int]],
        *,
        norm_output: bool,
        final_norm: bool,
        shared_bias: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        c = config
        channels = c.audio_channels
        self.audio_channels = channels
        self.num_stems = c.num_stems

        shared = dict(dim=c.dim, heads=c.heads, dim_head=c.dim_head, norm_output=norm_output)
        biases: dict[str, tuple[nn.Parameter, nn.Parameter]] = {}
        if shared_bias:
            # The published checkpoints name the pair after the graph nodes they came from,
            # and list it first.
            self.linear_62_bias_0 = nn.Parameter(torch.zeros(3 * c.heads * c.dim_head))
            self.linear_64_bias_0 = nn.Parameter(torch.zeros(c.dim))
            biases["shared_bias"] = (self.linear_62_bias_0, self.linear_64_bias_0)
        positions: tuple[nn.Module, nn.Module]
        if c.use_pope:
            positions = (PoPE(c.dim_head, heads=c.heads), PoPE(c.dim_head, heads=c.heads))
            position_key = "pope_embed"
        else:
            positions = (RotaryEmbedding(c.dim_head), RotaryEmbedding(c.dim_head))
            position_key = "rotary_embed"
        self.layers = nn.ModuleList()
        for _ in range(c.depth):
            pair = nn.ModuleList()
            if c.linear_transformer_depth:
                pair.append(
                    Transformer(depth=c.linear_transformer_depth, linear_attn=True, **shared)
                )
            for depth, position in zip(
                (c.time_transformer_depth, c.freq_transformer_depth), positions, strict=True
            ):
                pair.append(
                    Transformer(depth=depth, **{position_key: position}, **shared, **biases)
                )
            self.layers.append(pair)
        self.final_norm = RMSNorm(c.dim) if final_norm else nn.Identity()

        # A band's features: its bins x channels x (real, imaginary), bin-major.
        dims_in = [2 * channels * len(bins) for bins in bands]
        self.band_split = BandSplit(c.dim, dims_in)
        self.mask_estimators = nn.ModuleList(
            self.mask_estimator_cls(c.dim, dims_in, c.mask_hidden_layers, c.mlp_expansion_factor)
            for _ in range(c.num_stems)
        )

        # Where each band feature sits in the flat spectrum [F * C * 2], in the band
        # split's computation order; None when that is the spectrum's own order. Built on
        # the CPU whatever the default device: it is the config's bookkeeping, checked here
        # even for a network built on ``meta``.
        index = torch.tensor(
            [
                (bin_ * channels + channel) * 2 + part
                for band in self.band_split.groups.order
                for bin_ in bands[band]
                for channel in range(channels)
                for part in range(2)
            ],
            device="cpu",
        )
        width = c.freq_bins * channels * 2
        coverage = torch.bincount(index, minlength=width)
        if bool((coverage == 0).any()):
            raise ValueError("every STFT bin must belong to at least one band")
        in_order = torch.arange(width, device="cpu")
        natural = index.numel() == width and bool((index == in_order).all())
        self.register_buffer("feature_index", None if natural else index, persistent=False)
        overlapping = bool((coverage > 1).any())
        self.register_buffer(
            "coverage", coverage.float() if overlapping else None, persistent=False
        )

    def forward(self, raw_audio: torch.Tensor) -> torch.Tensor:
        """Separate.

        Args:
            raw_audio: ``[B, C, L]`` float audio.

        Returns:
            ``[B, N, C, L']`` stems, or ``[B, C, L']`` when the model has one stem (as the
            reference implementations return it). ``L' = L`` when
            ``match_input_audio_length``, else ``hop * (L // hop)``.
        """
        batch, channels, length = raw_audio.shape
        if channels != self.audio_channels:
            raise ValueError(f"the model takes {self.audio_channels} channel(s), got {channels}")
        spec = self._stft(raw_audio)  # [B, C, F, T] complex
        frames = spec.shape[-1]

        # [B, T, F * C * 2]: every frame's spectrum flattened bin-major.
        features = torch.view_as_real(spec).permute(0, 3, 2, 1, 4).reshape(batch, frames, -1)
        if self.feature_index is not None:
            features = features.index_select(-1, self.feature_index)
        # The residual stream stays in the weights' dtype under autocast too: its sums
        # over 2 x depth layers are where a 16-bit mantissa loses the most.
        dtype = self.band_split.to_features[0][1].weight.dtype
        x = self.band_split(features.to(dtype)).to(dtype)

        x = self._transform(x)  # [B, T, bands, D]

        masks = torch.stack([estimate(x) for estimate in self.mask_estimators], dim=1)
        audio = self._apply_masks(spec, masks, length)
        return audio[:, 0] if self.num_stems == 1 else audio

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        """The axial transformer stack: ``[B, T, bands, D] -> [B, T, bands, D]``."""
        earlier: list[torch.Tensor] = []
        for pair in self.layers:
            if len(pair) == 3:
                linear = pair[0]
                x = linear(x.flatten(1, 2), seq_dim=1).view_as(x)
            if self.config.skip_connection:
                for out in earlier:
                    x = x + out
            time_transformer, freq_transformer = pair[-2], pair[-1]
            x = time_transformer(x, seq_dim=1)
            x = freq_transformer(x, seq_dim=2)
            if self.config.skip_connection:
                earlier.append(x)
        return self.final_norm(x)

    def _window(self, device: torch.device) -> torch.Tensor:
        return torch.hann_window(self.config.stft_win_length, device=device)

    def _stft(self, audio: torch.Tensor) -> torch.Tensor:
        """``[B, C, L]`` -> ``[B, C, F, T]`` complex64, in fp32 whatever autocast says."""
        c = self.config
        with float32_region(audio.device):
            spec = torch.stft(
                audio.float().flatten(0, 1),
                n_fft=c.stft_n_fft,
                hop_length=c.stft_hop_length,
                win_length=c.stft_win_length,
                window=self._window(audio.device),
                normalized=c.stft_normalized,
                return_complex=True,
            )
        return spec.unflatten(0, audio.shape[:2])

    def _apply_masks(self, spec: torch.Tensor, masks: torch.Tensor, length: int) -> torch.Tensor:
        """Complex-multiply the spectrum by each stem's mask and invert it.

        Args:
            spec: ``[B, C, F, T]`` complex mixture spectrum.
            masks: ``[B, N, T, band features]`` real/imaginary mask values in the band
                split's computation order.
            length: input samples.

        Returns:
            ``[B, N, C, L']`` audio.
        """
        c = self.config
        batch, channels, bins, frames = spec.shape
        stems = masks.shape[1]
        with float32_region(spec.device):
            masks = masks.float()
            if self.feature_index is not None:
                flat = masks.new_zeros(batch, stems, frames, bins * channels * 2)
                masks = flat.index_add_(-1, self.feature_index, masks)
            if self.coverage is not None:
                # Overlapping bands: each bin gets the mean of its bands' masks.
                masks = masks / self.coverage
            masks = masks.view(batch, stems, frames, bins, channels, 2).permute(0, 1, 4, 3, 2, 5)
            out = spec.unsqueeze(1) * torch.view_as_complex(masks)  # [B, N, C, F, T]
            out = out.reshape(batch * stems * channels, bins, frames)
            if c.zero_dc:
                out[:, 0] = 0
            audio = torch.istft(
                out,
                n_fft=c.stft_n_fft,
                hop_length=c.stft_hop_length,
                win_length=c.stft_win_length,
                window=self._window(spec.device),
                normalized=c.stft_normalized,
                length=length if c.match_input_audio_length else None,
            )
        return audio.view(batch, stems, channels, -1)
