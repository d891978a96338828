"""UVR VR band parameters (``modelparams/*.json``) and hash-keyed model data.

A VR model is a checkpoint plus two pieces of data UVR keeps beside it:

- its *band parameters* (``vr_model_param``, e.g. ``4band_v3``): how the track is cut into
  frequency bands, each with its own sample rate, STFT and crop, and how the bands are
  stitched back (:class:`VrParams`). DSU ships UVR's files in ``modelparams/``.
- its *model data*: which stem the mask selects (``primary_stem``) and, for v5.1 models,
  the network widths ``nout``/``nout_lstm`` (:class:`ModelData`). UVR keys it by the MD5 of
  the checkpoint's last 10,000 KiB; DSU ships the table audio-separator ships
  (``model_data.json``) and lets ``models.json`` give the same fields as entry options.

Both are read strictly: an unknown key is an error naming the key and the file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsu.errors import RegistryError, UnsupportedModel

DATA_DIR = Path(__file__).resolve().parent
PARAMS_DIR = DATA_DIR / "modelparams"
MODEL_DATA_FILE = DATA_DIR / "model_data.json"

HASH_BYTES = 10_000 * 1024
"""UVR hashes the last this-many bytes of a checkpoint (all of a smaller one)."""

LOWER_BAND_RESAMPLER = "polyphase"
"""The only ``res_type`` DSU runs for a lower band (what every 3- and 4-band file names)."""

BAND_KEYS: frozenset[str] = frozenset(
    {
        "sr",
        "hl",
        "n_fft",
        "crop_start",
        "crop_stop",
        "lpf_start",
        "lpf_stop",
        "hpf_start",
        "hpf_stop",
        "res_type",
        "convert_channels",
    }
)
PARAM_KEYS: frozenset[str] = frozenset(
    {
        "bins",
        "n_bins",
        "unstable_bins",
        "stable_bins",
        "reduction_bins",
        "band",
        "sr",
        "pre_filter_start",
        "pre_filter_stop",
        "mid_side",
        "mid_side_b",
        "mid_side_b2",
        "stereo_w",
        "stereo_n",
        "reverse",
        "aggr_correction",
    }
)
"""Top-level keys; ``unstable_bins``/``stable_bins``/``reduction_bins`` are training-only."""

CHANNEL_MODES: tuple[str, ...] = ("mid_side_c", "mid_side", "stereo_n")
"""v5.1 per-band ``convert_channels`` values."""

MODEL_DATA_KEYS: frozenset[str] = frozenset(
    {
        "vr_model_param",
        "primary_stem",
        "nout",
        "nout_lstm",
        "is_karaoke",
        "is_bv_model",
        "is_bv_model_rebalanced",
    }
)

NON_ACCOMPANIMENT_STEMS: frozenset[str] = frozenset(
    {
        "Vocals",
        "Other",
        "Bass",
        "Drums",
        "Guitar",
        "Piano",
        "Synthesizer",
        "Strings",
        "Woodwinds",
        "Brass",
        "Wind Inst",
    }
)
"""Primary stems for which UVR inverts the aggression (``1 - aggression``)."""

STEM_PAIRS: dict[str, str] = {
    "Vocals": "Instrumental",
    "Instrumental": "Vocals",
    "lead_only": "backing_only",
    "backing_only": "lead_only",
    "Primary Stem": "Secondary Stem",
}
"""UVR's secondary stem for a primary one; any other primary ``X`` pairs with ``No X``."""


@dataclass(frozen=True)
class Band:
    """One frequency band: its own rate and STFT, and the bins it contributes.

    Attributes:
        sr: sample rate of the band's signal (the top band's is the model's).
        hl: STFT hop; ``hl / sr`` is the same for every band, so frames line up.
        n_fft: STFT size (periodic Hann window).
        crop_start, crop_stop: the band's bins ``[crop_start, crop_stop)`` that go into the
            combined spectrogram, in band order.
        lpf_start, lpf_stop: low-pass ramp applied when the band is turned back into audio
            (every band but the top one).
        hpf_start, hpf_stop: high-pass ramp (every band but the lowest); ``hpf_start <= 0``
            means none.
        res_type: the resampler UVR names for the band's signal.
        convert_channels: v5.1 stereo transform of this band (one of :data:`CHANNEL_MODES`).
    """

    sr: int
    hl: int
    n_fft: int
    crop_start: int
    crop_stop: int
    lpf_start: int | None = None
    lpf_stop: int | None = None
    hpf_start: int = -1
    hpf_stop: int | None = None
    res_type: str = LOWER_BAND_RESAMPLER
    convert_channels: str | None = None


@dataclass(frozen=True)
class VrParams:
    """A whole band-parameter file.

    Attributes:
        name: the file's stem (``4band_v3``).
        bins: rows of the combined spectrogram minus one (the network sees ``bins`` rows).
        sr: the model's sample rate (the top band's).
        pre_filter_start, pre_filter_stop: low-pass ramp on the combined spectrogram.
        bands: lowest band first.
        mid_side, mid_side_b2, reverse: v5 stereo transforms of the whole signal.
        aggr_correction: ``{"left": x, "right": y}`` added to the aggression per channel.
    """

    name: str
    bins: int
    sr: int
    pre_filter_start: int
    pre_filter_stop: int
    bands: tuple[Band, ...]
    mid_side: bool = False
    mid_side_b2: bool = False
    reverse: bool = False
    aggr_correction: tuple[float, float] | None = None

    @property
    def top(self) -> Band:
        return self.bands[-1]

    @property
    def high_end_bins(self) -> int:
        """Rows UVR's high-end process copies from the input's top band."""
        return (self.top.n_fft // 2 - self.top.crop_stop) + (
            self.pre_filter_stop - self.pre_filter_start
        )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], name: str, source: str) -> VrParams:
        """Parse a loaded band-parameter JSON object.

        Raises:
            RegistryError: a key is unknown or missing, or a value is out of range.
        """
        _check_keys(raw, PARAM_KEYS, source, "")
        bands_raw = raw.get("band")
        if not isinstance(bands_raw, Mapping) or not bands_raw:
            raise RegistryError(f"{source}: a VR band-parameter file needs a 'band' object")
        order = sorted(bands_raw, key=lambda k: int(k))
        if [int(k) for k in order] != list(range(1, len(order) + 1)):
            raise RegistryError(f"{source}: bands must be numbered 1..N, got {order}")
        bands = tuple(_band(bands_raw[k], f"band.{k}", source) for k in order)
        bins = raw.get("n_bins", raw.get("bins"))
        if not isinstance(bins, int) or bins < 2:
            raise RegistryError(f"{source}: 'bins' must be an integer >= 2, got {bins!r}")
        if sum(b.crop_stop - b.crop_start for b in bands) > bins:
            raise RegistryError(f"{source}: the bands' crops add up to more than {bins} bins")
        if raw.get("sr", bands[-1].sr) != bands[-1].sr:
            raise RegistryError(f"{source}: 'sr' must equal the top band's rate")
        for low, high in itertools.pairwise(bands):
            if low.hl * high.sr != high.hl * low.sr:
                raise RegistryError(
                    f"{source}: every band needs the same hop in seconds (hl / sr); "
                    f"{low.hl}/{low.sr} differs from {high.hl}/{high.sr}"
                )
        correction = raw.get("aggr_correction")
        return cls(
            name=name,
            bins=bins,
            sr=bands[-1].sr,
            pre_filter_start=int(raw.get("pre_filter_start", -1)),
            pre_filter_stop=int(raw.get("pre_filter_stop", -1)),
            bands=bands,
            mid_side=bool(raw.get("mid_side", False)),
            mid_side_b2=bool(raw.get("mid_side_b2", False)),
            reverse=bool(raw.get("reverse", False)),
            aggr_correction=(
                (float(correction["left"]), float(correction["right"])) if correction else None
            ),
        )


def _check_keys(raw: Mapping[str, Any], known: frozenset[str], source: str, where: str) -> None:
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise RegistryError(
            f"{source}: unknown VR parameter key(s) {', '.join(where + k for k in unknown)}; "
            f"known: {', '.join(sorted(known))}. Fix or remove them."
        )


def _band(raw: Any, where: str, source: str) -> Band:
    if not isinstance(raw, Mapping):
        raise RegistryError(f"{source}: {where} must be an object")
    _check_keys(raw, BAND_KEYS, source, where + ".")
    for key in ("sr", "hl", "n_fft", "crop_start", "crop_stop"):
        if not isinstance(raw.get(key), int):
            raise RegistryError(f"{source}: {where}.{key} must be an integer")
    mode = raw.get("convert_channels")
    if mode is not None and mode not in CHANNEL_MODES:
        raise RegistryError(
            f"{source}: {where}.convert_channels {mode!r} is not one of {', '.join(CHANNEL_MODES)}"
        )
    if not 0 <= raw["crop_start"] < raw["crop_stop"] <= raw["n_fft"] // 2 + 1:
        raise RegistryError(f"{source}: {where} crop must lie within the band's bins")
    return Band(
        sr=raw["sr"],
        hl=raw["hl"],
        n_fft=raw["n_fft"],
        crop_start=raw["crop_start"],
        crop_stop=raw["crop_stop"],
        lpf_start=raw.get("lpf_start"),
        lpf_stop=raw.get("lpf_stop"),
        hpf_start=raw.get("hpf_start", -1),
        hpf_stop=raw.get("hpf_stop"),
        res_type=raw.get("res_type", LOWER_BAND_RESAMPLER),
        convert_channels=mode,
    )


def shipped_params() -> list[str]:
    """Names of the band-parameter files DSU ships."""
    return sorted(p.stem for p in PARAMS_DIR.glob("*.json"))


def load_params(name_or_path: str | Path) -> VrParams:
    """A shipped band-parameter file by name (``4band_v3``) or any file by path.

    Raises:
        RegistryError: no such file, or it does not parse.
    """
    text = str(name_or_path)
    path = Path(text) if text.endswith(".json") else PARAMS_DIR / f"{text}.json"
    if not path.is_file():
        raise RegistryError(
            f"VR band parameters {text!r} not found; give one of {', '.join(shipped_params())} "
            "or the path of a band-parameter JSON file"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{path}: cannot read VR band parameters: {exc}") from None
    params = VrParams.from_dict(raw, path.stem, str(path))
    if params.reverse:
        raise UnsupportedModel(
            f"{path}: 'reverse' models run on the time-reversed track, which DSU's streaming "
            "engine cannot do; use another model"
        )
    return params


@dataclass(frozen=True)
class ModelData:
    """What UVR's model data says about one checkpoint.

    Attributes:
        vr_model_param: the band-parameter file's name.
        primary_stem: the stem the network's mask selects (``Instrumental``, ``Vocals``,
            ``No Echo``...); the rest of the mixture is the secondary stem.
        nout, nout_lstm: v5.1 (CascadedNet) widths; None for a v5 model.
        is_karaoke, is_bv_model: UVR's flags (informational here).
    """

    vr_model_param: str
    primary_stem: str
    nout: int | None = None
    nout_lstm: int | None = None
    is_karaoke: bool = False
    is_bv_model: bool = False

    @property
    def secondary_stem(self) -> str:
        """UVR's pairing: vocals with instrumental, ``No X`` with ``X``, else ``X`` with
        ``No X``."""
        if self.primary_stem in STEM_PAIRS:
            return STEM_PAIRS[self.primary_stem]
        if self.primary_stem.startswith("No "):
            return self.primary_stem[3:]
        return f"No {self.primary_stem}"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str) -> ModelData:
        """Parse one record (``models.json`` options may carry other keys: pass only these)."""
        _check_keys(raw, MODEL_DATA_KEYS, source, "")
        param, primary = raw.get("vr_model_param"), raw.get("primary_stem")
        if not isinstance(param, str) or not isinstance(primary, str):
            raise RegistryError(
                f"{source}: VR model data needs 'vr_model_param' and 'primary_stem' strings"
            )
        nout, nout_lstm = raw.get("nout"), raw.get("nout_lstm")
        return cls(
            vr_model_param=param,
            primary_stem=primary,
            nout=int(nout) if nout is not None else None,
            nout_lstm=int(nout_lstm) if nout_lstm is not None else None,
            is_karaoke=bool(raw.get("is_karaoke", False)),
            is_bv_model=bool(raw.get("is_bv_model", False)),
        )


def uvr_hash(path: Path) -> str:
    """UVR's model-data key of a checkpoint: MD5 of its last :data:`HASH_BYTES` bytes."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - HASH_BYTES))
        return hashlib.md5(f.read()).hexdigest()


def shipped_model_data() -> dict[str, dict[str, Any]]:
    """The hash-keyed table DSU ships."""
    return json.loads(MODEL_DATA_FILE.read_text(encoding="utf-8"))
