"""An MDX-Net model's parameters, found as UVR finds them: by the hash of its file.

UVR keys each ``.onnx`` model's numbers by :func:`dsu.registry.scan.uvr_hash` (the MD5 of
the file's last 10 000 KiB) in a table it downloads; DSU ships that table's MDX-Net
entries as ``model_data.json`` beside this module. An entry (UVR's key names)::

    {"compensate": 1.035, "mdx_dim_f_set": 3072, "mdx_dim_t_set": 8,
     "mdx_n_fft_scale_set": 6144, "primary_stem": "Instrumental", "is_karaoke": false}

``mdx_dim_f_set`` is the frequency bins the network sees, ``mdx_dim_t_set`` the log2 of
the STFT frames of one chunk, ``mdx_n_fft_scale_set`` the FFT size; the hop is UVR's fixed
1024. ``compensate`` scales the primary stem before it is subtracted from the mixture to
give the secondary stem. This module imports nothing heavy, so the registry scan may use it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from dsu.errors import RegistryError

SAMPLERATE = 44100
"""Every UVR MDX-Net model runs at 44.1 kHz."""
HOP_LENGTH = 1024
"""UVR's STFT hop for every MDX-Net model."""
CHANNELS = 2
DEFAULT_OVERLAP = 0.25
"""audio-separator's default MDX overlap."""
FROZEN_BINS = 3
"""UVR zeroes the lowest STFT bins of the input spectrogram before the network."""

REQUIRED_KEYS = ("compensate", "mdx_dim_f_set", "mdx_dim_t_set", "mdx_n_fft_scale_set")
OPTIONAL_KEYS = ("primary_stem", "is_karaoke")
MODEL_DATA_FILE = "model_data.json"

_PAIRS = {"vocals": "instrumental", "instrumental": "vocals"}
_NEGATION = "no_"


def stem_name(uvr_stem: str) -> str:
    """DSU's name for a UVR stem name: lower case, words joined by ``_`` (``No Crowd`` ->
    ``no_crowd``)."""
    return re.sub(r"\s+", "_", uvr_stem.strip().lower())


def stem_names(primary_stem: str) -> list[str]:
    """``[primary, secondary]`` for a UVR ``primary_stem``, as UVR pairs them: vocals with
    instrumental, any other ``X`` with ``no_X`` (and ``no_X`` with ``X``)."""
    primary = stem_name(primary_stem)
    if primary in _PAIRS:
        return [primary, _PAIRS[primary]]
    if primary.startswith(_NEGATION):
        return [primary, primary[len(_NEGATION) :]]
    return [primary, _NEGATION + primary]


@dataclass(frozen=True)
class MdxParams:
    """The numbers one MDX-Net ``.onnx`` model runs with.

    Attributes:
        dim_f: frequency bins the network takes (the lowest of the STFT's ``n_fft/2+1``).
        dim_t: STFT frames of one chunk the network was exported for.
        n_fft: FFT size (Hann window of the same length).
        compensate: gain on the primary stem when it is subtracted from the mixture.
        primary_stem: the stem the network estimates, UVR's name (``Vocals``).
        is_karaoke: a karaoke model (its primary stem is the lead vocal).
        hop_length: STFT hop in samples.
    """

    dim_f: int
    dim_t: int
    n_fft: int
    compensate: float
    primary_stem: str = "Vocals"
    is_karaoke: bool = False
    hop_length: int = HOP_LENGTH

    @property
    def stems(self) -> list[str]:
        """``[primary, secondary]`` in DSU's names."""
        return stem_names(self.primary_stem)

    @property
    def trim(self) -> int:
        """Samples UVR pads before the track and trims from each chunk's ends."""
        return self.n_fft // 2

    @property
    def chunk(self) -> int:
        """Samples of one chunk of ``dim_t`` frames: ``hop * (dim_t - 1)``."""
        return self.hop_length * (self.dim_t - 1)

    @classmethod
    def from_model_data(cls, raw: object, source: str) -> MdxParams:
        """Check and convert one UVR model-data entry.

        Args:
            raw: the entry (UVR's key names, see the module docstring).
            source: where it comes from, for messages (a file, ``models.json``).

        Raises:
            RegistryError: naming ``source`` and the key, when a key is unknown, missing
                or out of range.
        """
        if not isinstance(raw, Mapping):
            raise RegistryError(f"{source}: MDX-Net model data must be an object of UVR's keys")
        unknown = [key for key in raw if key not in REQUIRED_KEYS + OPTIONAL_KEYS]
        if unknown:
            raise RegistryError(
                f"{source}: unknown MDX-Net model data key {unknown[0]!r}; the keys are "
                f"{', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)} (an entry with 'config_yaml' "
                "is an MDX23C/RoFormer model, not arch 'mdx')"
            )
        missing = [key for key in REQUIRED_KEYS if key not in raw]
        if missing:
            raise RegistryError(f"{source}: MDX-Net model data lacks {missing[0]!r}")
        dim_f = _integer(raw, "mdx_dim_f_set", source, 1, 1 << 16)
        log_t = _integer(raw, "mdx_dim_t_set", source, 1, 16)
        n_fft = _integer(raw, "mdx_n_fft_scale_set", source, 2, 1 << 16)
        if dim_f > n_fft // 2 + 1:
            raise RegistryError(
                f"{source}: mdx_dim_f_set {dim_f} exceeds the {n_fft // 2 + 1} bins of an "
                f"FFT of mdx_n_fft_scale_set {n_fft}"
            )
        compensate = raw["compensate"]
        if isinstance(compensate, bool) or not isinstance(compensate, (int, float)):
            raise RegistryError(f"{source}: compensate must be a number, got {compensate!r}")
        primary = raw.get("primary_stem", "Vocals")
        if not isinstance(primary, str) or not primary.strip():
            raise RegistryError(f"{source}: primary_stem must be a stem name, got {primary!r}")
        karaoke = raw.get("is_karaoke", False)
        if not isinstance(karaoke, bool):
            raise RegistryError(f"{source}: is_karaoke must be true or false, got {karaoke!r}")
        params = cls(dim_f, 2**log_t, n_fft, float(compensate), primary, karaoke)
        if params.chunk <= 2 * params.trim:
            raise RegistryError(
                f"{source}: mdx_dim_t_set {log_t} gives chunks of {params.chunk} samples, "
                f"no longer than the 2 * {params.trim} UVR trims from them"
            )
        return params


def _integer(raw: Mapping[str, Any], key: str, source: str, low: int, high: int) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RegistryError(
            f"{source}: {key} must be an integer from {low} to {high}, got {value!r}"
        )
    return value


@functools.lru_cache(maxsize=1)
def shipped_model_data() -> dict[str, dict[str, Any]]:
    """UVR's MDX-Net model data shipped with DSU: hash -> entry (UVR's key names)."""
    text = (resources.files(__package__) / MODEL_DATA_FILE).read_text(encoding="utf-8")
    return json.loads(text)["models"]
