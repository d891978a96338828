"""The typed Apollo config: four numbers, from an MSST YAML or read off a checkpoint.

The network is ``Apollo(sr, win, feature_dim, layer)``: ``win`` milliseconds at ``sr`` Hz
give the STFT window ``W = int(sr * win // 1000)`` (882 for 44.1 kHz, 20 ms), which alone
fixes the band layout. No checkpoint stores these numbers, so:

- an MSST-layout model (``.ckpt`` + ``.yaml`` with ``training.model_type: apollo``) reads
  them from the YAML's ``model:`` section, strictly: ``sr``, ``win``, ``feature_dim``,
  ``layer`` and nothing else; its ``audio:`` section gives the rate DSU runs it at;
- the official ``pytorch_model.bin`` has none, and they are read off the state dict's
  shapes (:func:`infer_from_state`), with ``sr`` and ``win`` from the entry's options
  (default 44100 Hz and 20 ms, the only values any public checkpoint uses).

Any unknown key in ``model:`` or ``audio:`` raises :class:`~dsu.errors.RegistryError`
naming it and the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from dsu.errors import RegistryError

BANDS = 80
"""Every Apollo cuts its spectrum into 80 bands."""
BAND_DIVISOR = 160
"""The base band width is ``W // 160`` bins."""
HEADS = 8
DEFAULT_SAMPLE_RATE = 44_100
DEFAULT_WIN_MS = 20

MODEL_KEYS: frozenset[str] = frozenset({"sr", "win", "feature_dim", "layer"})
"""``model:`` keys, all required."""
AUDIO_KEYS: frozenset[str] = frozenset({"chunk_size", "num_channels", "sample_rate"})
"""``audio:`` keys inference reads (``chunk_size`` is MSST's; DSU chooses its own)."""
AUDIO_TRAINING_KEYS: frozenset[str] = frozenset({"min_mean_abs"})
"""``audio:`` keys only training reads (accepted and ignored)."""

_LAYER_KEY = re.compile(r"net\.(\d+)\.")


@dataclass(frozen=True)
class ApolloConfig:
    """Apollo's constructor arguments and the STFT and band layout they imply.

    Attributes:
        sr: sample rate the window length is computed for, in Hz.
        win: window length in milliseconds.
        feature_dim: channels ``N`` of every band embedding (a multiple of 16: eight
            heads with an even head size).
        layer: band-sequence blocks.
    """

    sr: int = DEFAULT_SAMPLE_RATE
    win: int = DEFAULT_WIN_MS
    feature_dim: int = 256
    layer: int = 6

    def __post_init__(self) -> None:
        if self.window < BAND_DIVISOR:
            raise ValueError(f"an STFT window of {self.window} samples is too short for 80 bands")
        if self.feature_dim % (2 * HEADS):
            raise ValueError(f"feature_dim must be a multiple of {2 * HEADS}")

    @property
    def window(self) -> int:
        """STFT size and window length ``W`` in samples."""
        return int(self.sr * self.win // 1000)

    @property
    def hop(self) -> int:
        """STFT hop, ``W // 2``."""
        return self.window // 2

    @property
    def bins(self) -> int:
        """One-sided frequency bins, ``W // 2 + 1``."""
        return self.window // 2 + 1

    @property
    def band_widths(self) -> tuple[int, ...]:
        """Bins of each band: 79 of ``W // 160``, then the rest."""
        base = int(self.window / BAND_DIVISOR)
        return (base,) * (BANDS - 1) + (self.bins - (BANDS - 1) * base,)

    @property
    def band_edges(self) -> tuple[tuple[int, int], ...]:
        """``(first bin, end bin)`` of each band."""
        edges, lo = [], 0
        for width in self.band_widths:
            edges.append((lo, lo + width))
            lo += width
        return tuple(edges)


@dataclass(frozen=True)
class MsstApollo:
    """What an MSST Apollo YAML says.

    Attributes:
        model: the network's arguments.
        samplerate: ``audio.sample_rate`` (else ``model.sr``): the rate inputs are
            resampled to.
        channels: ``audio.num_channels`` (default 2).
        target: ``training.target_instrument``, the name of the one output, or None.
    """

    model: ApolloConfig
    samplerate: int
    channels: int
    target: str | None


def from_msst(raw: Mapping[str, Any], source: str = "config") -> MsstApollo:
    """Parse an MSST config (``model:`` and ``audio:`` strictly, ``training:`` for the
    output's name).

    Raises:
        RegistryError: naming ``source``, for a missing, unknown or out-of-range key.
    """
    model_raw = _section(raw, "model", source)
    audio_raw = _section(raw, "audio", source)
    _check_keys(model_raw, "model", MODEL_KEYS, source)
    _check_keys(audio_raw, "audio", AUDIO_KEYS | AUDIO_TRAINING_KEYS, source)
    values = {key: _int(model_raw, "model", key, source) for key in sorted(MODEL_KEYS)}
    try:
        model = ApolloConfig(**values)
    except ValueError as exc:
        raise RegistryError(f"{source}: model: {exc}") from None
    samplerate = (
        _int(audio_raw, "audio", "sample_rate", source) if "sample_rate" in audio_raw else model.sr
    )
    channels = (
        _int(audio_raw, "audio", "num_channels", source) if "num_channels" in audio_raw else 2
    )
    training = raw.get("training")
    target = training.get("target_instrument") if isinstance(training, Mapping) else None
    if target is not None and not (isinstance(target, str) and target):
        raise RegistryError(f"{source}: training.target_instrument must be a stem name or null")
    return MsstApollo(model, samplerate, channels, target)


def infer_from_state(
    state: Mapping[str, torch.Tensor],
    source: str,
    *,
    sr: int = DEFAULT_SAMPLE_RATE,
    win: int = DEFAULT_WIN_MS,
) -> ApolloConfig:
    """The arguments of the network a state dict was saved from.

    ``feature_dim`` is the embeddings' width, ``layer`` one more than the highest
    ``net.<l>`` index, and the window ``W = 2 (F - 1)`` with ``F`` the bins the 80 band
    embeddings cover; ``sr`` and ``win`` must give that ``W``.

    Raises:
        RegistryError: naming ``source``, when the state dict is not an Apollo's or its
            window does not follow from ``sr`` and ``win``.
    """
    first, last = state.get("BN.0.0.weight"), state.get(f"BN.{BANDS - 1}.0.weight")
    embed = state.get("BN.0.1.weight")
    layers = [int(m.group(1)) for key in state if (m := _LAYER_KEY.match(key))]
    if first is None or last is None or embed is None or not layers:
        raise RegistryError(
            f"{source}: not an Apollo checkpoint (no BN.0.1.weight, BN.{BANDS - 1}.0.weight "
            "or net.<l>.* tensors); check that the file is the Apollo model you meant"
        )
    base, rest = (first.shape[0] - 1) // 2, (last.shape[0] - 1) // 2
    window = 2 * ((BANDS - 1) * base + rest - 1)
    try:
        config = ApolloConfig(sr=sr, win=win, feature_dim=embed.shape[0], layer=max(layers) + 1)
    except ValueError as exc:
        raise RegistryError(f"{source}: {exc}") from None
    if config.window != window:
        raise RegistryError(
            f"{source}: the checkpoint's bands span a {window}-sample STFT window, but "
            f"sr={sr} Hz and win={win} ms give {config.window}; set the model's options "
            '"sr" and "win" in models.json to the values it was trained with'
        )
    return config


def _section(raw: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    section = raw.get(name) if isinstance(raw, Mapping) else None
    if not isinstance(section, Mapping):
        raise RegistryError(f"{source}: an Apollo config needs a {name!r} section")
    return section


def _check_keys(section: Mapping[str, Any], name: str, known: frozenset[str], source: str) -> None:
    unknown = sorted(str(key) for key in section if key not in known)
    if unknown:
        raise RegistryError(
            f"{source}: unknown Apollo key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
            f"known {name} keys: {', '.join(sorted(known))}. Fix or remove them."
        )


def _int(section: Mapping[str, Any], name: str, key: str, source: str) -> int:
    if key not in section:
        raise RegistryError(f"{source}: Apollo config is missing {name}.{key}")
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RegistryError(f"{source}: {name}.{key} must be a positive integer, got {value!r}")
    return value
