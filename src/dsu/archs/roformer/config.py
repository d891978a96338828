"""The typed ``model:`` section of an MSST / UVR RoFormer config.

Every key the public BS-RoFormer and Mel-Band RoFormer configs use is known. Keys that
only matter for training, or for a kernel this runtime replaces (:data:`IGNORED_KEYS`:
dropout, checkpointing, the multi-resolution STFT loss, ``flash_attn`` and
``sage_attention`` — attention always runs through
``torch.nn.functional.scaled_dot_product_attention``), are accepted and have no effect.
Any other key raises :class:`~dsu.errors.RegistryError` naming it, so a typo never
builds a silently different network.

Defaults are those of MSST's model classes, the code these configs are written for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from dsu.errors import RegistryError

BS_ROFORMER = "bs_roformer"
MEL_BAND_ROFORMER = "mel_band_roformer"
ARCHS: tuple[str, ...] = (BS_ROFORMER, MEL_BAND_ROFORMER)

DEFAULT_FREQS_PER_BANDS: tuple[int, ...] = (
    (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
)
"""BS-RoFormer's 62 bands over the 1025 bins of a 2048-point STFT (the paper's split)."""

HANN_WINDOW_NAMES: tuple[str, ...] = ("hann", "hann_window", "torch.hann_window")
"""Ways a config may name the only STFT window the public models use (or null)."""

IGNORED_KEYS: frozenset[str] = frozenset(
    {
        "attn_dropout",
        "ff_dropout",
        "flash_attn",
        "sage_attention",
        "use_torch_checkpoint",
        "dim_freqs_in",
        "multi_stft_resolution_loss_weight",
        "multi_stft_resolutions_window_sizes",
        "multi_stft_hop_size",
        "multi_stft_normalized",
        "multi_stft_window_fn",
    }
)
"""Accepted with no effect: training-only, informational, or a replaced kernel's switch."""


@dataclass(frozen=True)
class RoformerConfig:
    """Hyperparameters both RoFormers share.

    Attributes:
        dim: token width.
        depth: (time transformer, frequency transformer) pairs.
        stereo: two input channels (else one).
        num_stems: sources estimated (one mask estimator each).
        time_transformer_depth: layers of each time transformer.
        freq_transformer_depth: layers of each frequency transformer.
        linear_transformer_depth: layers of the linear-attention transformer over all
            ``T * bands`` tokens that precedes each pair; 0 for none.
        dim_head: width of one attention head.
        heads: attention heads.
        stft_n_fft: STFT size.
        stft_hop_length: STFT hop in samples.
        stft_win_length: Hann window length.
        stft_normalized: ``normalized=`` of ``torch.stft`` / ``torch.istft``.
        zero_dc: zero the DC bin of every output spectrum before the iSTFT.
        mask_estimator_depth: depth of each band's mask MLP (its meaning differs per
            family; see :attr:`mask_hidden_layers`).
        mlp_expansion_factor: hidden width of the mask MLPs, in multiples of ``dim``.
        skip_connection: add the outputs of all earlier pairs before each pair.
        use_pope: PoPE positions ("BS PolarFormer") instead of rotary embeddings.
        match_input_audio_length: return exactly as many samples as came in (else
            ``hop * (frames - 1)``, a multiple of the hop).
    """

    dim: int
    depth: int
    stereo: bool = False
    num_stems: int = 1
    time_transformer_depth: int = 2
    freq_transformer_depth: int = 2
    linear_transformer_depth: int = 0
    dim_head: int = 64
    heads: int = 8
    stft_n_fft: int = 2048
    stft_hop_length: int = 512
    stft_win_length: int = 2048
    stft_normalized: bool = False
    zero_dc: bool = True
    mask_estimator_depth: int = 2
    mlp_expansion_factor: int = 4
    skip_connection: bool = False
    use_pope: bool = False
    match_input_audio_length: bool = True

    @property
    def audio_channels(self) -> int:
        return 2 if self.stereo else 1

    @property
    def freq_bins(self) -> int:
        """One-sided STFT bins."""
        return self.stft_n_fft // 2 + 1

    @property
    def mask_hidden_layers(self) -> int:
        """Hidden (linear + tanh) layers of a band's mask MLP."""
        return self.mask_estimator_depth - 1


@dataclass(frozen=True)
class BSRoformerConfig(RoformerConfig):
    """BS-RoFormer: contiguous bands of ``freqs_per_bands`` STFT bins each.

    The output always has the input's length (MSST's BS-RoFormer passes it to the iSTFT).

    Attributes:
        freqs_per_bands: STFT bins per band, lowest first.
        use_shared_bias: every softmax attention layer's input and output projections
            add one bias vector shared by all layers (pymss-core's BS-RoFormer; the "SW"
            and "Logic" checkpoints).
    """

    freqs_per_bands: tuple[int, ...] = DEFAULT_FREQS_PER_BANDS
    use_shared_bias: bool = False


@dataclass(frozen=True)
class MelBandRoformerConfig(RoformerConfig):
    """Mel-Band RoFormer: ``num_bands`` overlapping bands of a mel filterbank.

    Attributes:
        num_bands: mel bands.
        sample_rate: rate the filterbank is laid out for, in Hz.
        fmin: lowest filterbank frequency, in Hz.
        fmax: highest filterbank frequency, in Hz; None for ``sample_rate / 2``.
    """

    mask_estimator_depth: int = 1
    match_input_audio_length: bool = False
    num_bands: int = 60
    sample_rate: int = 44_100
    fmin: float = 0.0
    fmax: float | None = None

    @property
    def mask_hidden_layers(self) -> int:
        # MSST's Mel-Band MLP has ``depth`` hidden layers (BS-RoFormer's has depth - 1);
        # the published checkpoints are laid out that way.
        return self.mask_estimator_depth


CONFIG_CLASSES: dict[str, type[RoformerConfig]] = {
    BS_ROFORMER: BSRoformerConfig,
    MEL_BAND_ROFORMER: MelBandRoformerConfig,
}

_POSITIVE = {
    "dim",
    "depth",
    "num_stems",
    "dim_head",
    "heads",
    "stft_n_fft",
    "stft_hop_length",
    "stft_win_length",
    "mlp_expansion_factor",
    "num_bands",
    "sample_rate",
}
_NON_NEGATIVE = {
    "time_transformer_depth",
    "freq_transformer_depth",
    "linear_transformer_depth",
    "mask_estimator_depth",
}


def model_keys(arch: str) -> frozenset[str]:
    """The ``model:`` keys an arch accepts (used and ignored)."""
    known = {f.name for f in fields(CONFIG_CLASSES[arch])}
    return frozenset(known | IGNORED_KEYS | {"stft_window_fn"})


def parse_model_config(arch: str, model: Mapping[str, Any]) -> RoformerConfig:
    """Read a ``model:`` section into the arch's typed config.

    Args:
        arch: :data:`BS_ROFORMER` or :data:`MEL_BAND_ROFORMER`.
        model: the section as YAML loaded it.

    Raises:
        RegistryError: a key is unknown, missing or has a value of the wrong type or
            range; the message names the key (the caller adds the file name).
    """
    if arch not in CONFIG_CLASSES:
        raise RegistryError(f"{arch!r} is not a RoFormer arch (expected one of {list(ARCHS)})")
    if not isinstance(model, Mapping):
        raise RegistryError("the config's 'model' section must be a mapping of keys")
    known = model_keys(arch)
    unknown = sorted(str(key) for key in model if key not in known)
    if unknown:
        raise RegistryError(
            f"unknown {arch} key(s) {', '.join(f'model.{k}' for k in unknown)}; "
            f"known keys: {', '.join(sorted(known))}. Fix or remove them."
        )
    window = model.get("stft_window_fn")
    if window is not None and window not in HANN_WINDOW_NAMES:
        raise RegistryError(
            f"model.stft_window_fn {window!r} is not supported: only the Hann window "
            f"(null or one of {', '.join(HANN_WINDOW_NAMES)})"
        )
    cls = CONFIG_CLASSES[arch]
    values: dict[str, Any] = {}
    for spec in fields(cls):
        if spec.name in model:
            values[spec.name] = _checked(spec.name, spec.type, model[spec.name])
        elif spec.name in ("dim", "depth"):
            raise RegistryError(f"{arch} config is missing model.{spec.name}")
    config = cls(**values)
    _check_bands(config)
    if (
        isinstance(config, BSRoformerConfig)
        and config.use_shared_bias
        and config.linear_transformer_depth
    ):
        raise RegistryError(
            "model.use_shared_bias applies to softmax attention only; it does not combine "
            "with model.linear_transformer_depth"
        )
    return config


def _checked(key: str, kind: object, value: Any) -> Any:
    kind = str(kind)
    if kind == "bool":
        if not isinstance(value, bool):
            raise RegistryError(f"model.{key} must be true or false, got {value!r}")
        return value
    if kind == "int":
        minimum = 1 if key in _POSITIVE else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise RegistryError(f"model.{key} must be an integer >= {minimum}, got {value!r}")
        return value
    if kind == "tuple[int, ...]":
        if (
            not isinstance(value, list | tuple)
            or len(value) < 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            raise RegistryError(
                f"model.{key} must be a list of at least two positive integers, got {value!r}"
            )
        return tuple(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        if value is None and kind == "float | None":
            return None
        raise RegistryError(f"model.{key} must be a number, got {value!r}")
    return float(value)


def _check_bands(config: RoformerConfig) -> None:
    if isinstance(config, BSRoformerConfig) and sum(config.freqs_per_bands) != config.freq_bins:
        raise RegistryError(
            f"model.freqs_per_bands sums to {sum(config.freqs_per_bands)} bins but "
            f"stft_n_fft {config.stft_n_fft} gives {config.freq_bins}; they must match"
        )
    if isinstance(config, MelBandRoformerConfig):
        nyquist = config.sample_rate / 2
        fmax = nyquist if config.fmax is None else config.fmax
        if not 0 <= config.fmin < fmax <= nyquist:
            raise RegistryError(
                f"model.fmin ({config.fmin}) and model.fmax ({config.fmax}) must satisfy "
                f"0 <= fmin < fmax <= sample_rate / 2 ({nyquist})"
            )
