"""The ``model:`` sections of published SCNet XL configs, for the parity tests and the
SCNet bench (which puts ``tests/`` on its path)."""

from __future__ import annotations

from typing import Any

XL: dict[str, Any] = {
    "sources": ["drums", "bass", "other", "vocals"],
    "audio_channels": 2,
    "dims": [4, 64, 128, 256],
    "nfft": 4096,
    "hop_size": 1024,
    "win_size": 4096,
    "normalized": True,
    "band_SR": [0.23, 0.37, 0.4],
    "band_stride": [1, 4, 16],
    "band_kernel": [3, 4, 16],
    "conv_depths": [3, 2, 1],
    "compress": 4,
    "conv_kernel": 3,
    "num_dplayer": 8,
    "expand": 1,
}
"""SCNet XL (MSST release v1.0.13)."""

XL_IHF: dict[str, Any] = {
    **XL,
    "band_stride": [1, 4, 4],
    "band_kernel": [3, 4, 4],
    "conv_depths": [3, 3, 3],
}
"""SCNet XL IHF (``config_musdb18_scnet_xl_more_wide_v5.yaml``, MSST release v1.0.15)."""
