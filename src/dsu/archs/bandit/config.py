"""The typed BandIt v2 config: the ``kwargs:`` section of an MSST BandIt v2 YAML file.

MSST builds BandIt v2 as ``Bandit(**config.kwargs)`` (the section is ``kwargs:``, not
``model:``), so every key there is a constructor argument. Every argument the public
configs (``config_dnr_bandit_v2_mus64.yaml``) and the constructor know is read; the four
``*_precisions`` (training's mixed-precision plan) are accepted and ignored, and any
other key raises :class:`~dsu.errors.RegistryError` naming it. Values the reference
implementation refuses (another band type, per-channel normalisation, a power
spectrogram) are refused here too, with the reason.

``training.instruments`` gives the stems and must name ``kwargs.stems`` in the same
order: the network returns its stems in ``kwargs.stems`` order and MSST names them by
``training.instruments``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from dsu.archs.msst_config import reject_unknown_keys
from dsu.errors import RegistryError

SECTION = "kwargs"
"""The config section BandIt v2's constructor arguments live in."""

BAND_TYPES: tuple[str, ...] = ("musical",)
RNN_TYPES: tuple[str, ...] = ("LSTM", "GRU", "RNN")
WINDOWS: tuple[str, ...] = (
    "hann_window",
    "hamming_window",
    "blackman_window",
    "bartlett_window",
    "kaiser_window",
)
PAD_MODES: tuple[str, ...] = ("constant", "reflect", "replicate", "circular")

IGNORED_KEYS: frozenset[str] = frozenset(
    {"stft_precisions", "bandsplit_precisions", "tf_model_precisions", "mask_estim_precisions"}
)
"""Constructor arguments only training reads (its mixed-precision plan)."""

SAMPLE_RATE = 44_100
"""``fs`` when a config omits it: the band split is then computed at 44.1 kHz whatever
``audio.sample_rate`` says, as the reference does (the public 48 kHz model too)."""


@dataclass(frozen=True)
class BanditConfig:
    """BandIt v2 hyperparameters, with the reference constructor's defaults.

    Attributes:
        in_channels: channels the network sees at once; the reference runs every audio
            channel alone, so this is 1.
        stems: output stems, in order.
        band_type: the band split (only ``"musical"``: :mod:`dsu.archs.bandit.bands`).
        n_bands: bands of the split.
        require_no_overlap: accepted for the reference's signature; its check never fires.
        require_no_gap: refuse a split that leaves bins uncovered.
        normalize_channel_independently: must be False (the reference has no other mode).
        treat_channel_as_feature: must be True (likewise).
        n_sqm_modules: time/band RNN pairs.
        emb_dim: band embedding width.
        rnn_dim: RNN hidden width (per direction).
        bidirectional: bidirectional RNNs.
        rnn_type: one of :data:`RNN_TYPES`.
        mlp_dim: mask estimator hidden width.
        hidden_activation: a ``torch.nn`` activation class name, e.g. ``Tanh``.
        hidden_activation_kwargs: its constructor arguments.
        complex_mask: complex (True) or real masks.
        use_freq_weights: weigh overlapping bands' masks by each bin's share.
        n_fft, win_length, hop_length: STFT sizes (``win_length`` None is ``n_fft``).
        window_fn: one of :data:`WINDOWS`; ``wkwargs`` its arguments.
        power: must be None (a complex spectrogram).
        center, normalized, pad_mode, onesided: the STFT's options; ``normalized``
            scales by the window's energy, ``pad_mode`` pads the centred frames.
        fs: rate the band split is computed for (:data:`SAMPLE_RATE` when omitted).
    """

    in_channels: int
    stems: tuple[str, ...]
    band_type: str = "musical"
    n_bands: int = 64
    require_no_overlap: bool = False
    require_no_gap: bool = True
    normalize_channel_independently: bool = False
    treat_channel_as_feature: bool = True
    n_sqm_modules: int = 12
    emb_dim: int = 128
    rnn_dim: int = 256
    bidirectional: bool = True
    rnn_type: str = "LSTM"
    mlp_dim: int = 512
    hidden_activation: str = "Tanh"
    hidden_activation_kwargs: Mapping[str, Any] | None = None
    complex_mask: bool = True
    use_freq_weights: bool = True
    n_fft: int = 2048
    win_length: int | None = 2048
    hop_length: int = 512
    window_fn: str = "hann_window"
    wkwargs: Mapping[str, Any] | None = None
    power: int | None = None
    center: bool = True
    normalized: bool = True
    pad_mode: str = "constant"
    onesided: bool = True
    fs: int = SAMPLE_RATE

    @property
    def window_length(self) -> int:
        return self.win_length or self.n_fft

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> BanditConfig:
        """Parse the ``kwargs:`` section of a loaded config (the whole config).

        Raises:
            RegistryError: the section, a key or a value is missing, unknown or refused.
        """
        section = raw.get(SECTION) if isinstance(raw, Mapping) else None
        if not isinstance(section, Mapping):
            raise RegistryError(f"a BandIt v2 config needs a {SECTION!r} section")
        known = {f.name for f in fields(cls)}
        reject_unknown_keys(section, SECTION, known | IGNORED_KEYS, "BandIt v2")
        values = {k: v for k, v in section.items() if k in known}
        for key in ("in_channels", "stems"):
            if key not in values:
                raise RegistryError(f"BandIt v2 config is missing {SECTION}.{key}")
        stems = values["stems"]
        if (
            not isinstance(stems, list | tuple)
            or not stems
            or not all(isinstance(s, str) and s for s in stems)
            or len(set(stems)) != len(stems)
        ):
            raise RegistryError(f"{SECTION}.stems must be a list of distinct names, got {stems!r}")
        values["stems"] = tuple(stems)
        config = cls(**values)
        config._check()
        training = raw.get("training")
        instruments = training.get("instruments") if isinstance(training, Mapping) else None
        if instruments is not None and list(instruments) != list(config.stems):
            raise RegistryError(
                f"training.instruments {list(instruments)} must be {SECTION}.stems "
                f"{list(config.stems)}, in that order (the network's outputs are named by it)"
            )
        return config

    def _check(self) -> None:
        for name in (
            "in_channels",
            "n_bands",
            "n_sqm_modules",
            "emb_dim",
            "rnn_dim",
            "mlp_dim",
            "n_fft",
            "hop_length",
            "fs",
        ):
            _positive(name, getattr(self, name))
        if self.win_length is not None:
            _positive("win_length", self.win_length)
            if self.win_length > self.n_fft:
                raise RegistryError(
                    f"{SECTION}.win_length {self.win_length} exceeds n_fft {self.n_fft}"
                )
        for name in (
            "require_no_overlap",
            "require_no_gap",
            "bidirectional",
            "complex_mask",
            "use_freq_weights",
            "center",
            "normalized",
            "onesided",
        ):
            if not isinstance(getattr(self, name), bool):
                raise RegistryError(
                    f"{SECTION}.{name} must be true or false, got {getattr(self, name)!r}"
                )
        _choice("band_type", self.band_type, BAND_TYPES)
        _choice("rnn_type", self.rnn_type, RNN_TYPES)
        _choice("window_fn", self.window_fn, WINDOWS)
        _choice("pad_mode", self.pad_mode, PAD_MODES)
        if self.in_channels != 1:
            raise RegistryError(
                f"{SECTION}.in_channels must be 1: BandIt v2 separates each audio channel "
                f"alone, got {self.in_channels}"
            )
        if self.normalize_channel_independently or not self.treat_channel_as_feature:
            raise RegistryError(
                f"BandIt v2 implements only {SECTION}.normalize_channel_independently: false "
                "with treat_channel_as_feature: true"
            )
        if self.power is not None:
            raise RegistryError(
                f"{SECTION}.power must be null (BandIt masks a complex spectrogram), "
                f"got {self.power!r}"
            )
        if not self.onesided:
            raise RegistryError(f"BandIt v2 needs {SECTION}.onesided: true")
        activation = getattr(nn.modules.activation, str(self.hidden_activation), None)
        if not (isinstance(activation, type) and issubclass(activation, nn.Module)):
            raise RegistryError(
                f"{SECTION}.hidden_activation {self.hidden_activation!r} is not a torch.nn "
                "activation class (e.g. Tanh, ReLU, GELU)"
            )
        for name in ("hidden_activation_kwargs", "wkwargs"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise RegistryError(f"{SECTION}.{name} must be a mapping or null, got {value!r}")

    def activation(self) -> nn.Module:
        """A fresh hidden activation module."""
        cls = getattr(nn.modules.activation, self.hidden_activation)
        return cls(**dict(self.hidden_activation_kwargs or {}))

    def window(self) -> torch.Tensor:
        """The STFT window, ``[window_length]`` float32."""
        make = getattr(torch, self.window_fn)
        return make(self.window_length, **dict(self.wkwargs or {}))


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RegistryError(f"{SECTION}.{name} must be a positive integer, got {value!r}")


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RegistryError(f"{SECTION}.{name} {value!r} is not one of {', '.join(choices)}")
