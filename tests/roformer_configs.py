"""Tiny RoFormer ``model:`` configs and the reference classes to compare them with.

Each config is a plain dict, as a YAML ``model:`` section: the reference class takes it
as keyword arguments, DSU parses it with ``parse_model_config``. The STFT is small
(``n_fft`` 128 or 256) so a forward takes milliseconds.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

with warnings.catch_warnings():
    # rotary_embedding_torch decorates with the deprecated torch.cuda.amp.autocast.
    warnings.simplefilter("ignore", FutureWarning)
    from audio_separator.separator.uvr_lib_v5.roformer import bs_roformer as uvr_bs
    from audio_separator.separator.uvr_lib_v5.roformer import mel_band_roformer as uvr_mel
    from msst.models.bs_roformer import bs_roformer as msst_bs
    from msst.models.bs_roformer import mel_band_roformer as msst_mel
    from pymss_core.modules import bs_roformer as pymss

from dsu.archs.roformer import build

HOP = 32
"""STFT hop of the tiny configs; test inputs are a multiple of it (see :func:`audio`)."""

TINY_BS: dict[str, Any] = {
    "dim": 32,
    "depth": 2,
    "stereo": False,
    "num_stems": 1,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 1,
    "freqs_per_bands": (4, 4, 8, 8, 16, 25),
    "dim_head": 16,
    "heads": 2,
    "stft_n_fft": 128,
    "stft_hop_length": HOP,
    "stft_win_length": 128,
    "mask_estimator_depth": 2,
}
"""A BS-RoFormer over 65 bins in six bands."""

TINY_MEL: dict[str, Any] = {
    "dim": 32,
    "depth": 2,
    "stereo": False,
    "num_stems": 1,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 1,
    "num_bands": 12,
    "dim_head": 16,
    "heads": 2,
    "sample_rate": 44_100,
    "stft_n_fft": 256,
    "stft_hop_length": HOP,
    "stft_win_length": 256,
    "mask_estimator_depth": 1,
}
"""A Mel-Band RoFormer with 12 overlapping bands over 129 bins."""

VIPERX_EP317: dict[str, Any] = {
    "dim": 512,
    "depth": 12,
    "stereo": True,
    "num_stems": 1,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 1,
    "linear_transformer_depth": 0,
    "freqs_per_bands": (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129),
    "dim_head": 64,
    "heads": 8,
    "attn_dropout": 0.1,
    "ff_dropout": 0.1,
    "flash_attn": True,
    "dim_freqs_in": 1025,
    "stft_n_fft": 2048,
    "stft_hop_length": 441,
    "stft_win_length": 2048,
    "stft_normalized": False,
    "mask_estimator_depth": 2,
    "multi_stft_resolution_loss_weight": 1.0,
    "multi_stft_resolutions_window_sizes": (4096, 2048, 1024, 512, 256),
    "multi_stft_hop_size": 147,
    "multi_stft_normalized": False,
}
"""``model:`` of viperx's ``model_bs_roformer_ep_317_sdr_12.9755`` (vocals), as published."""

REFERENCES = {
    ("audio-separator", "bs_roformer"): uvr_bs.BSRoformer,
    ("audio-separator", "mel_band_roformer"): uvr_mel.MelBandRoformer,
    ("msst", "bs_roformer"): msst_bs.BSRoformer,
    ("msst", "mel_band_roformer"): msst_mel.MelBandRoformer,
    ("pymss-core", "bs_roformer"): pymss.BSRoformer,
    ("pymss-core", "mel_band_roformer"): pymss.MelBandRoformer,
}

PYMSS_ONLY_KEYS = ("mlp_hidden_layers",)
"""Reference-only switches a test passes to the reference but not to DSU."""


def reference(package: str, arch: str, config: dict[str, Any]) -> torch.nn.Module:
    """The reference network for ``config``, with its own random weights, in eval mode."""
    return REFERENCES[(package, arch)](**config).eval()


def ours_like(
    package: str, arch: str, config: dict[str, Any]
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(reference, DSU's network with the reference's weights loaded strictly)."""
    ref = reference(package, arch, config)
    ours = build(arch, {k: v for k, v in config.items() if k not in PYMSS_ONLY_KEYS}).eval()
    state = ref.state_dict()
    assert list(ours.state_dict()) == list(state)  # the same keys, in the same order
    ours.load_state_dict(state, strict=True)
    return ref, ours


def audio(channels: int, hops: int = 40, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """``[batch, channels, hops * HOP]`` noise (a multiple of the hop, so every reference
    returns the input's length)."""
    generator = torch.Generator().manual_seed(seed)
    return 0.5 * torch.randn(batch, channels, hops * HOP, generator=generator)
