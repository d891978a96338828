"""The typed MDX23C config: the ``audio:``, ``model:`` and ``training:`` sections of an
MSST / UVR ``mdx_c_configs`` YAML file.

``audio:`` and ``model:`` are read strictly: every key public MDX23C configs use is known,
``audio.min_mean_abs`` (a training-data filter) is accepted and ignored, and any other key
raises :class:`~dsu.errors.RegistryError` naming it, so a typo never builds a silently
different network. Of ``training:`` only ``instruments`` and ``target_instrument`` matter
at inference (they give the stems); its other keys, and the other sections
(``inference:``, ``augmentations:``, losses), belong to the caller or to training.

Chunk rule: the network sees ``frames = chunk // hop_length + 1`` STFT frames
(``center=True``) and halves them ``num_scales`` times, so a chunk must be
``hop_length * (frames - 1)`` samples with ``frames`` a multiple of
``scale[0] ** num_scales`` (256 frames -> 261,120 samples for the 8K-FFT models).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dsu.archs.msst_config import reject_unknown_keys, training_instruments
from dsu.errors import RegistryError

NORMS: tuple[str, ...] = ("InstanceNorm", "BatchNorm", "GroupNorm<groups>")
"""``model.norm`` choices (or null for none), as both references spell them."""

ACTIVATIONS: tuple[str, ...] = ("gelu", "relu", "elu<alpha>")
"""``model.act`` choices, as both references spell them."""

DEFAULT_NORM: str | None = None
DEFAULT_ACT = "gelu"
"""UVR's defaults when a config omits ``norm``/``act`` (MSST requires both)."""

DEFAULT_SAMPLE_RATE = 44_100

AUDIO_KEYS: frozenset[str] = frozenset(
    {"n_fft", "hop_length", "dim_f", "dim_t", "num_channels", "sample_rate", "chunk_size"}
)
"""``audio:`` keys inference reads."""
AUDIO_TRAINING_KEYS: frozenset[str] = frozenset({"min_mean_abs"})
"""``audio:`` keys only training reads (accepted and ignored)."""
MODEL_KEYS: frozenset[str] = frozenset(
    {
        "num_subbands",
        "num_scales",
        "scale",
        "num_blocks_per_scale",
        "num_channels",
        "growth",
        "bottleneck_factor",
        "norm",
        "act",
    }
)
"""``model:`` keys, all read."""


@dataclass(frozen=True)
class AudioConfig:
    """STFT front end and chunking.

    Attributes:
        n_fft: STFT size (Hann window of the same length).
        hop_length: STFT hop in samples.
        dim_f: frequency bins kept (the lowest ``dim_f`` of ``n_fft // 2 + 1``).
        dim_t: STFT frames per chunk, ``chunk_size // hop_length + 1`` (the config's
            ``dim_t`` is read only when it has no ``chunk_size``).
        num_channels: audio channels (2 for every public model).
        sample_rate: rate the model runs at, in Hz.
        chunk_size: samples per chunk: ``audio.chunk_size``, else
            ``hop_length * (dim_t - 1)``.
    """

    n_fft: int
    hop_length: int
    dim_f: int
    dim_t: int
    num_channels: int
    sample_rate: int
    chunk_size: int


@dataclass(frozen=True)
class ModelConfig:
    """TFC-TDF U-Net hyperparameters.

    Attributes:
        num_subbands: frequency subbands folded into channels before the U-Net.
        num_scales: encoder (and decoder) levels.
        scale: ``(time, frequency)`` down/up-sampling factor of each level.
        num_blocks_per_scale: TFC-TDF blocks per level.
        num_channels: channels of the first level.
        growth: channels added per level.
        bottleneck_factor: TDF's hidden width is ``frequency_bins // bottleneck_factor``.
        norm: one of :data:`NORMS`, or None for none.
        act: one of :data:`ACTIVATIONS`.
    """

    num_subbands: int
    num_scales: int
    scale: tuple[int, int]
    num_blocks_per_scale: int
    num_channels: int
    growth: int
    bottleneck_factor: int
    norm: str | None = DEFAULT_NORM
    act: str = DEFAULT_ACT


@dataclass(frozen=True)
class Mdx23cConfig:
    """Everything inference needs from an MDX23C config.

    Attributes:
        audio: the ``audio:`` section.
        model: the ``model:`` section.
        instruments: ``training.instruments`` as written.
        target_instrument: ``training.target_instrument`` (a single-output model), or None.
    """

    audio: AudioConfig
    model: ModelConfig
    instruments: tuple[str, ...]
    target_instrument: str | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        """The network's outputs, in order, as the config names them."""
        return (self.target_instrument,) if self.target_instrument else self.instruments

    @property
    def frames_multiple(self) -> int:
        """Chunk frame counts must be a multiple of this (the U-Net's time reduction)."""
        return self.model.scale[0] ** self.model.num_scales

    def valid_chunk(self, frames: int) -> bool:
        """Whether ``frames`` STFT frames pass through the U-Net."""
        return frames > 0 and frames % self.frames_multiple == 0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Mdx23cConfig:
        """Parse a loaded YAML mapping.

        Args:
            raw: the whole config (``audio``, ``model``, ``training``, ...).

        Raises:
            RegistryError: a section or key is missing, unknown or out of range.
        """
        audio_raw = _section(raw, "audio")
        model_raw = _section(raw, "model")
        training = _section(raw, "training")
        reject_unknown_keys(audio_raw, "audio", AUDIO_KEYS | AUDIO_TRAINING_KEYS, "MDX23C")
        reject_unknown_keys(model_raw, "model", MODEL_KEYS, "MDX23C")

        model = _parse_model(model_raw)
        audio = _parse_audio(audio_raw, model)
        instruments = training_instruments(training)
        target = training.get("target_instrument")
        if target is not None and (not isinstance(target, str) or target not in instruments):
            raise RegistryError(
                f"training.target_instrument {target!r} must be null or one of "
                f"training.instruments {list(instruments)}"
            )
        config = cls(audio, model, instruments, target or None)
        frames = audio.chunk_size // audio.hop_length + 1
        if audio.chunk_size % audio.hop_length or not config.valid_chunk(frames):
            raise RegistryError(
                f"audio.chunk_size {audio.chunk_size} must be hop_length "
                f"({audio.hop_length}) x (frames - 1) with frames a multiple of "
                f"{config.frames_multiple} (e.g. {audio.hop_length * (256 - 1)} for 256 frames)"
            )
        return config


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = raw.get(name) if isinstance(raw, Mapping) else None
    if not isinstance(section, Mapping):
        raise RegistryError(f"an MDX23C config needs a {name!r} section")
    return section


def _int(section: Mapping[str, Any], name: str, key: str, minimum: int = 1) -> int:
    if key not in section:
        raise RegistryError(f"MDX23C config is missing {name}.{key}")
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RegistryError(f"{name}.{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _parse_model(raw: Mapping[str, Any]) -> ModelConfig:
    scale = raw.get("scale")
    if (
        not isinstance(scale, list | tuple)
        or len(scale) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in scale)
    ):
        raise RegistryError(
            f"model.scale must be two positive integers [time, frequency], got {scale!r}"
        )
    norm = raw.get("norm", DEFAULT_NORM)
    if norm is not None and norm_groups(norm) is None and norm not in NORMS[:2]:
        raise RegistryError(f"model.norm {norm!r} is not one of {', '.join(NORMS)} (or null)")
    groups = norm_groups(norm)
    channels, growth = raw.get("num_channels"), raw.get("growth")
    if groups is not None and any(isinstance(v, int) and v % groups for v in (channels, growth)):
        raise RegistryError(
            f"model.norm {norm!r} needs num_channels ({channels}) and growth "
            f"({growth}) to be multiples of {groups}"
        )
    act = raw.get("act", DEFAULT_ACT)
    if not isinstance(act, str) or (act not in ("gelu", "relu") and elu_alpha(act) is None):
        raise RegistryError(f"model.act {act!r} is not one of {', '.join(ACTIVATIONS)}")
    return ModelConfig(
        num_subbands=_int(raw, "model", "num_subbands"),
        num_scales=_int(raw, "model", "num_scales", minimum=0),
        scale=(scale[0], scale[1]),
        num_blocks_per_scale=_int(raw, "model", "num_blocks_per_scale"),
        num_channels=_int(raw, "model", "num_channels"),
        growth=_int(raw, "model", "growth", minimum=0),
        bottleneck_factor=_int(raw, "model", "bottleneck_factor"),
        norm=norm,
        act=act,
    )


def _parse_audio(raw: Mapping[str, Any], model: ModelConfig) -> AudioConfig:
    n_fft = _int(raw, "audio", "n_fft", minimum=2)
    hop = _int(raw, "audio", "hop_length")
    dim_f = _int(raw, "audio", "dim_f")
    if dim_f > n_fft // 2 + 1:
        raise RegistryError(
            f"audio.dim_f {dim_f} exceeds the {n_fft // 2 + 1} bins of n_fft {n_fft}"
        )
    reduction = model.num_subbands * model.scale[1] ** model.num_scales
    if dim_f % reduction:
        raise RegistryError(
            f"audio.dim_f {dim_f} must be a multiple of num_subbands x "
            f"scale[1]^num_scales = {reduction}"
        )
    frames = _int(raw, "audio", "dim_t", minimum=2) if "dim_t" in raw else None
    if "chunk_size" in raw:
        chunk = _int(raw, "audio", "chunk_size")
    elif frames is not None:
        chunk = hop * (frames - 1)
    else:
        raise RegistryError("MDX23C config needs audio.chunk_size or audio.dim_t")
    return AudioConfig(
        n_fft=n_fft,
        hop_length=hop,
        dim_f=dim_f,
        dim_t=chunk // hop + 1,
        num_channels=_int(raw, "audio", "num_channels"),
        sample_rate=(
            _int(raw, "audio", "sample_rate") if "sample_rate" in raw else DEFAULT_SAMPLE_RATE
        ),
        chunk_size=chunk,
    )


def norm_groups(norm: object) -> int | None:
    """The group count of a ``GroupNorm<groups>`` name, else None."""
    if not isinstance(norm, str) or not norm.startswith("GroupNorm"):
        return None
    digits = norm.removeprefix("GroupNorm")
    return int(digits) if digits.isdigit() and int(digits) > 0 else None


def elu_alpha(act: str) -> float | None:
    """The alpha of an ``elu<alpha>`` name (``elu1.0``), else None."""
    if not act.startswith("elu"):
        return None
    try:
        return float(act.removeprefix("elu"))
    except ValueError:
        return None
