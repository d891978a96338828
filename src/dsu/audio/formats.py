"""Output formats: names, file extensions, and the encoder settings each one allows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dsu.errors import BadRequest

OUTPUT_FORMATS: tuple[str, ...] = ("wav", "flac", "mp3", "ogg")

_EXTENSIONS = {"wav": "wav", "flac": "flac", "mp3": "mp3", "ogg": "ogg"}
_FROM_SUFFIX = {".wav": "wav", ".wave": "wav", ".flac": "flac", ".mp3": "mp3", ".ogg": "ogg"}

OUTPUT_SUFFIXES: frozenset[str] = frozenset(_FROM_SUFFIX)
"""File name suffixes (lower case, with the dot) of the formats DSU writes through here."""

# bit depth -> libsndfile subtype, per lossless format; the first entry is the default.
_SUBTYPES = {
    "wav": {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"},
    "flac": {16: "PCM_16", 24: "PCM_24"},
}

# MPEG audio: the sample rates LAME encodes, and the CBR bitrates (kbps) of each MPEG
# version. libsndfile maps its compression level linearly onto [min, max] of the version.
MP3_SAMPLERATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_MPEG1_KBPS = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2_KBPS = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)

# The mp3 bitrate (kbps) used when none is asked for at 32 kHz and above (320): the
# highest MPEG-1 allows. Lower rates get the highest of their version (default_mp3_bitrate).
DEFAULT_MP3_BITRATE = _MPEG1_KBPS[-1]


@dataclass(frozen=True)
class EncoderSettings:
    """What libsndfile needs to open one output file."""

    format: str  # one of OUTPUT_FORMATS
    sf_format: str  # libsndfile major format
    subtype: str  # libsndfile subtype
    compression_level: float | None = None  # mp3 only: selects the CBR bitrate
    bitrate: int | None = None  # mp3 only, kbps

    @property
    def is_float(self) -> bool:
        """True when samples are stored as float (no clipping, no quantisation)."""
        return self.subtype == "FLOAT"


def extension_for(format: str) -> str:
    """File extension (without the dot) for an output format: ``extension_for("wav") == "wav"``."""
    return _EXTENSIONS[normalize_format(format)]


def normalize_format(format: str) -> str:
    """Lower-case, validated output format name; BadRequest for anything unknown."""
    name = format.strip().lower().lstrip(".")
    if name not in OUTPUT_FORMATS:
        raise BadRequest(
            f"unknown output format {format!r}: choose one of {', '.join(OUTPUT_FORMATS)}"
        )
    return name


def format_for_path(path: Path) -> str:
    """The output format a file name asks for through its extension."""
    name = _FROM_SUFFIX.get(path.suffix.lower())
    if name is None:
        raise BadRequest(
            f"cannot tell the output format of {path} from its extension: "
            f"use one of {', '.join('.' + e for e in _EXTENSIONS.values())} or pass a format"
        )
    return name


def mp3_bitrates(samplerate: int) -> tuple[int, ...]:
    """CBR bitrates (kbps) the MPEG version for this sample rate allows, ascending."""
    if samplerate >= 32000:
        return _MPEG1_KBPS
    if samplerate >= 16000:
        return _MPEG2_KBPS
    # MPEG-2.5: libsndfile caps the range at 64 kbps.
    return tuple(b for b in _MPEG2_KBPS if b <= 64)


def default_mp3_bitrate(samplerate: int) -> int:
    """The mp3 bitrate (kbps) used when none is given: the highest ``samplerate`` allows,
    :data:`DEFAULT_MP3_BITRATE` at 32 kHz and above."""
    return mp3_bitrates(samplerate)[-1]


def bit_depths(format: str) -> tuple[int, ...]:
    """Bit depths an output format offers, the default first; () for lossy formats."""
    return tuple(_SUBTYPES.get(normalize_format(format), ()))


def all_mp3_bitrates() -> tuple[int, ...]:
    """Every CBR bitrate (kbps) mp3 offers at some sample rate, ascending."""
    return tuple(sorted(set(_MPEG1_KBPS) | set(_MPEG2_KBPS)))


def check_output(format: str, bit_depth: int | None = None, bitrate: int | None = None) -> str:
    """Validate the part of an output request that does not depend on the audio.

    Front ends call this once before any input is read, so a bad format, bit depth or
    bitrate is one usage error rather than one failure per input; :func:`encoder_settings`
    adds the checks that need the sample rate and channel count.

    Returns:
        The normalised format name.

    Raises:
        BadRequest: unknown format, a bit depth the format lacks, or a bitrate mp3 never
            offers (``bit_depth`` and ``bitrate`` are ignored by formats without them).
    """
    name = normalize_format(format)
    depths = bit_depths(name)
    if depths and bit_depth is not None and (_not_int(bit_depth) or bit_depth not in depths):
        raise BadRequest(
            f"{name} supports bit depths {', '.join(map(str, depths))}, not {bit_depth}"
        )
    bitrates = all_mp3_bitrates()
    if name == "mp3" and bitrate is not None and (_not_int(bitrate) or bitrate not in bitrates):
        raise BadRequest(
            f"mp3 has no {bitrate} kbps bitrate: choose one of "
            f"{', '.join(map(str, bitrates))} kbps (at 32 kHz and above: "
            f"{_MPEG1_KBPS[0]} to {_MPEG1_KBPS[-1]})"
        )
    return name


def ignored_settings(format: str, bit_depth: int | None, bitrate: int | None) -> list[str]:
    """The settings given (``"bit_depth"``, ``"bitrate"``) that ``format`` has no use for."""
    name = normalize_format(format)
    ignored = ["bit_depth"] if bit_depth is not None and not bit_depths(name) else []
    return ignored + (["bitrate"] if bitrate is not None and name != "mp3" else [])


def _not_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


def encoder_settings(
    format: str,
    samplerate: int,
    channels: int,
    bit_depth: int | None = None,
    bitrate: int | None = None,
) -> EncoderSettings:
    """Validate an output request and translate it into libsndfile settings.

    ``bit_depth`` applies to wav (16, 24, 32 = float) and flac (16, 24) and ``bitrate`` to
    mp3 (kbps, default the highest the sample rate allows: 320 at 32 kHz and above); like
    demucs's ``--int24``/``--mp3-bitrate``, each is ignored by formats it does not apply to.
    """
    name = check_output(format, bit_depth, bitrate)
    if samplerate <= 0:
        raise BadRequest(f"sample rate must be positive, got {samplerate}")
    if channels <= 0:
        raise BadRequest(f"channel count must be positive, got {channels}")
    if name in _SUBTYPES:
        depth = bit_depths(name)[0] if bit_depth is None else bit_depth
        return EncoderSettings(name, name.upper(), _SUBTYPES[name][depth])
    if name == "ogg":
        return EncoderSettings(name, "OGG", "VORBIS")
    return _mp3_settings(samplerate, channels, bitrate)


def _mp3_settings(samplerate: int, channels: int, bitrate: int | None) -> EncoderSettings:
    if samplerate not in MP3_SAMPLERATES:
        raise BadRequest(
            f"mp3 cannot store {samplerate} Hz (it supports "
            f"{', '.join(map(str, MP3_SAMPLERATES))} Hz): choose wav, flac or ogg"
        )
    if channels > 2:
        raise BadRequest(f"mp3 stores mono or stereo, not {channels} channels")
    allowed = mp3_bitrates(samplerate)
    kbps = default_mp3_bitrate(samplerate) if bitrate is None else bitrate
    if kbps not in allowed:
        raise BadRequest(
            f"mp3 at {samplerate} Hz supports bitrates {', '.join(map(str, allowed))} kbps, "
            f"not {bitrate}"
        )
    low, high = allowed[0], allowed[-1]
    # libsndfile picks int(high - level * (high - low)); aim half a kbps above the target so
    # the truncation lands on it exactly.
    level = max(0.0, (high - kbps - 0.5) / (high - low))
    return EncoderSettings("mp3", "MP3", "MPEG_LAYER_III", compression_level=level, bitrate=kbps)
