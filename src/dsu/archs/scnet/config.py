"""The typed SCNet config: the ``model:`` section of an MSST SCNet YAML file.

MSST builds every SCNet variant as ``Network(**config.model)``, so the ``model:`` keys
are the constructor's arguments: :data:`MODEL_KEYS` for ``scnet`` and ``scnet_masked``,
plus :data:`TRANSFORMER_KEYS` for ``scnet_tran``. A key a config omits takes the
constructor's default (:data:`DEFAULTS`, the small SCNet of the paper). Any other key
raises :class:`~dsu.errors.RegistryError` naming it, so a typo never builds a silently
different network; the keys of MSST's ``scnet_unofficial`` (a different network) are
named as such.

Published sizes (``dims`` / bands / ``conv_depths`` / ``num_dplayer``):

- small: ``[4, 32, 64, 128]``, ``band_SR [0.175, 0.392, 0.433]``, strides and kernels
  ``[1, 4, 16]`` / ``[3, 4, 16]``, ``[3, 2, 1]``, 6;
- large: ``[4, 64, 128, 256]``, ``band_SR [0.225, 0.372, 0.403]``, the small's rest;
- XL IHF (``config_musdb18_scnet_xl_more_wide_v5.yaml``, also the masked XL IHF):
  ``[4, 64, 128, 256]``, ``band_SR [0.23, 0.37, 0.4]``, strides and kernels ``[1, 4, 4]``
  / ``[3, 4, 4]``, ``[3, 3, 3]``, 8.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dsu.errors import RegistryError

SCNET = "scnet"
SCNET_MASKED = "scnet_masked"
SCNET_TRAN = "scnet_tran"
ARCHS: tuple[str, ...] = (SCNET, SCNET_MASKED, SCNET_TRAN)
"""The arch names of the family, as MSST's ``training.model_type`` spells them."""

BANDS: tuple[str, ...] = ("low", "mid", "high")
"""The three frequency bands every SD/SU layer splits the spectrum into."""

DEFAULTS: dict[str, Any] = {
    "sources": ("drums", "bass", "other", "vocals"),
    "audio_channels": 2,
    "dims": (4, 32, 64, 128),
    "nfft": 4096,
    "hop_size": 1024,
    "win_size": 4096,
    "normalized": True,
    "band_SR": (0.175, 0.392, 0.433),
    "band_stride": (1, 4, 16),
    "band_kernel": (3, 4, 16),
    "conv_depths": (3, 2, 1),
    "compress": 4,
    "conv_kernel": 3,
    "num_dplayer": 6,
    "expand": 1,
}
"""The references' constructor defaults, for keys a config leaves out."""

TRANSFORMER_DEFAULTS: dict[str, Any] = {
    "tran_rotary_embedding_dim": 64,
    "tran_depth": 1,
    "tran_heads": 8,
    "tran_dim_head": 64,
    "tran_attn_dropout": 0.0,
    "tran_ff_dropout": 0.0,
    "tran_flash_attn": False,
}
"""``scnet_tran``'s extra constructor defaults (dropouts and the flash switch are
training and kernel choices: accepted, without effect at inference)."""

MODEL_KEYS: frozenset[str] = frozenset(DEFAULTS)
"""``model:`` keys of ``scnet`` and ``scnet_masked``."""
TRANSFORMER_KEYS: frozenset[str] = frozenset(TRANSFORMER_DEFAULTS)
"""The extra ``model:`` keys of ``scnet_tran``."""

UNOFFICIAL_KEYS: frozenset[str] = frozenset(
    {"bandsplit_ratios", "downsample_strides", "n_conv_modules", "n_rnn_layers", "n_sources"}
)
"""Keys only MSST's ``scnet_unofficial`` (another network) uses."""


@dataclass(frozen=True)
class TransformerConfig:
    """The dual-path transformer of ``scnet_tran`` (replacing the RNNs).

    Attributes:
        depth: (attention, feed-forward) pairs per path.
        heads: attention heads.
        dim_head: features per head (also the rotary dimension).
    """

    depth: int
    heads: int
    dim_head: int


@dataclass(frozen=True)
class ScnetConfig:
    """Everything that shapes an SCNet network.

    Attributes:
        sources: the stems the network outputs, in order.
        audio_channels: audio channels (2 for every public model).
        dims: channels of the spectrum (``2 * audio_channels``) and of each encoder level.
        nfft: STFT size.
        hop_size: STFT hop in samples.
        win_size: STFT window length (rectangular for ``scnet``/``scnet_tran``, Hann for
            ``scnet_masked``, as the references).
        normalized: the STFT is scaled by ``win_size ** -0.5`` (``torch.stft``'s flag).
        band_ratios: ``band_SR``, the share of the frequency bins in the low, mid and high
            band (the high band takes the rest).
        band_strides: frequency downsampling of each band per level.
        band_kernels: frequency kernel of each band's down/up-sampling conv.
        conv_depths: convolution-module layers per band.
        compress: channel compression of a convolution module's hidden layer.
        conv_kernel: (odd) time kernel of the convolution modules.
        num_dplayer: dual-path layers (even: each pair returns from the time-frequency
            domain of the RFFT).
        expand: hidden size of a dual-path LSTM, as a multiple of its input.
        transformer: ``scnet_tran``'s transformer, else None (LSTMs).
    """

    sources: tuple[str, ...]
    audio_channels: int
    dims: tuple[int, ...]
    nfft: int
    hop_size: int
    win_size: int
    normalized: bool
    band_ratios: tuple[float, float, float]
    band_strides: tuple[int, int, int]
    band_kernels: tuple[int, int, int]
    conv_depths: tuple[int, int, int]
    compress: float
    conv_kernel: int
    num_dplayer: int
    expand: int
    transformer: TransformerConfig | None = None

    @property
    def bins(self) -> int:
        """Frequency bins of the STFT."""
        return self.nfft // 2 + 1


def parse_model_config(arch: str, model: Mapping[str, Any]) -> ScnetConfig:
    """Parse and check the ``model:`` section of an ``arch`` config.

    Raises:
        RegistryError: an unknown, ill-typed or out-of-range key (named).
    """
    if arch not in ARCHS:
        raise RegistryError(f"{arch!r} is not an SCNet arch ({', '.join(ARCHS)})")
    if not isinstance(model, Mapping):
        raise RegistryError("an SCNet config needs a 'model' section")
    known = MODEL_KEYS | TRANSFORMER_KEYS if arch == SCNET_TRAN else MODEL_KEYS
    unknown = sorted(str(key) for key in model if key not in known)
    if unknown:
        hint = (
            " These are keys of MSST's scnet_unofficial, a different network DSU does not run."
            if UNOFFICIAL_KEYS & set(unknown)
            else " Fix or remove them."
        )
        raise RegistryError(
            f"unknown {arch} key(s) {', '.join(f'model.{k}' for k in unknown)}; "
            f"known model keys: {', '.join(sorted(known))}.{hint}"
        )
    raw = {**DEFAULTS, **(TRANSFORMER_DEFAULTS if arch == SCNET_TRAN else {}), **model}

    sources = raw["sources"]
    if (
        not isinstance(sources, list | tuple)
        or not sources
        or not all(isinstance(name, str) and name for name in sources)
    ):
        raise RegistryError(f"model.sources must be a list of stem names, got {sources!r}")
    channels = _int(raw, "audio_channels")
    dims = _ints(raw, "dims")
    if len(dims) < 2 or dims[0] != 2 * channels:
        raise RegistryError(
            f"model.dims {list(dims)} must list at least two channel counts, the first "
            f"2 x audio_channels = {2 * channels} (real and imaginary part of each channel)"
        )
    nfft = _int(raw, "nfft", minimum=2)
    win = _int(raw, "win_size")
    if win > nfft:
        raise RegistryError(f"model.win_size {win} exceeds model.nfft {nfft}")
    ratios = _band_ratios(raw["band_SR"])
    strides, kernels = _ints(raw, "band_stride", 3), _ints(raw, "band_kernel", 3)
    compress = raw["compress"]
    if isinstance(compress, bool) or not isinstance(compress, int | float) or compress <= 0:
        raise RegistryError(f"model.compress must be a positive number, got {compress!r}")
    kernel = _int(raw, "conv_kernel")
    if kernel % 2 == 0:
        raise RegistryError(f"model.conv_kernel must be odd, got {kernel}")
    layers = _int(raw, "num_dplayer", minimum=0)
    if layers % 2:
        raise RegistryError(
            f"model.num_dplayer must be even (each pair of dual-path layers enters and "
            f"leaves the RFFT domain), got {layers}"
        )
    if not isinstance(raw["normalized"], bool):
        raise RegistryError(f"model.normalized must be true or false, got {raw['normalized']!r}")
    return ScnetConfig(
        sources=tuple(sources),
        audio_channels=channels,
        dims=dims,
        nfft=nfft,
        hop_size=_int(raw, "hop_size"),
        win_size=win,
        normalized=raw["normalized"],
        band_ratios=ratios,
        band_strides=(strides[0], strides[1], strides[2]),
        band_kernels=(kernels[0], kernels[1], kernels[2]),
        conv_depths=_depths(raw),
        compress=compress,
        conv_kernel=kernel,
        num_dplayer=layers,
        expand=_int(raw, "expand"),
        transformer=_transformer(raw) if arch == SCNET_TRAN else None,
    )


def _int(raw: Mapping[str, Any], key: str, minimum: int = 1) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RegistryError(f"model.{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _ints(raw: Mapping[str, Any], key: str, length: int | None = None) -> tuple[int, ...]:
    value = raw[key]
    if (
        not isinstance(value, list | tuple)
        or (length is not None and len(value) != length)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        count = f"{length} " if length else ""
        raise RegistryError(f"model.{key} must be {count}positive integers, got {value!r}")
    return tuple(value)


def _band_ratios(value: object) -> tuple[float, float, float]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != len(BANDS)
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not all(math.isfinite(v) and v > 0 for v in value)
        or value[0] + value[1] >= 1
    ):
        raise RegistryError(
            f"model.band_SR must be three positive shares of the spectrum (low, mid, high) "
            f"with low + mid < 1, got {value!r}"
        )
    return (float(value[0]), float(value[1]), float(value[2]))


def _depths(raw: Mapping[str, Any]) -> tuple[int, int, int]:
    value = raw["conv_depths"]
    if not isinstance(value, list | tuple) or len(value) != len(BANDS):
        raise RegistryError(
            f"model.conv_depths must give one depth per band (low, mid, high), got {value!r}"
        )
    # The references take abs() of a depth; a negative one is a typo here.
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise RegistryError(f"model.conv_depths must be integers >= 0, got {value!r}")
    return (value[0], value[1], value[2])


def _transformer(raw: Mapping[str, Any]) -> TransformerConfig:
    dim_head = _int(raw, "tran_dim_head")
    rotary = _int(raw, "tran_rotary_embedding_dim")
    if rotary != dim_head:
        raise RegistryError(
            f"model.tran_rotary_embedding_dim {rotary} must equal model.tran_dim_head "
            f"{dim_head}: DSU rotates every feature of a head (as every public config does)"
        )
    return TransformerConfig(
        depth=_int(raw, "tran_depth"), heads=_int(raw, "tran_heads"), dim_head=dim_head
    )
