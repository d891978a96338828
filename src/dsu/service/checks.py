"""Checks of a separation request against the model and the audio, before it runs.

The output rules come from the encoder's own table (:mod:`dsu.audio.formats`), so the
service refuses exactly what the encoder would refuse, only sooner: at submission when
the audio is at hand (sync uploads), else as soon as the worker has downloaded it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dsu.audio import formats
from dsu.errors import BadRequest, DSUError

if TYPE_CHECKING:
    from dsu.audio import AudioInfo

# Every bitrate (kbps) some mp3 sample rate allows; which ones a file may use depends on
# its rate (:func:`check_encoding`).
MP3_BITRATES = formats.all_mp3_bitrates()


class TooLong(DSUError):
    """The decoded audio is longer than the server accepts."""

    code = "audio_too_long"


def check_duration(path: Path, max_duration: float) -> AudioInfo:
    """Probe ``path`` (header only, no full decode); raise TooLong past ``max_duration``.

    Raises BadAudio when the header cannot be read.
    """
    from dsu import audio

    info = audio.probe(path)
    if info.duration > max_duration:
        raise TooLong(
            f"the audio is {info.duration:.0f} s long; this server accepts at most "
            f"{max_duration:.0f} s"
        )
    return info


def check_output(output_format: str, bitrate: int | None) -> None:
    """Refuse an output no audio could be written in (before the audio's rate is known)."""
    try:
        formats.check_output(output_format, bitrate=bitrate)
    except BadRequest as exc:
        raise BadRequest(f"mp3_bitrate: {exc.message}") from None


def check_encoding(output_format: str, bitrate: int | None, samplerate: int, channels: int) -> None:
    """Refuse an output the encoder cannot write for audio of ``samplerate``/``channels``.

    Stems keep the input's rate; more than two input channels are mixed to the model's.
    """
    try:
        formats.encoder_settings(output_format, samplerate, min(channels, 2), bitrate=bitrate)
    except BadRequest as exc:
        raise BadRequest(f"output_format {output_format}: {exc.message}") from None


def check_two_stems(model: str, stems: tuple[str, ...], two_stems: str | None) -> None:
    """Refuse ``two_stems`` when the model does not produce that stem."""
    if two_stems is not None and two_stems not in stems:
        raise BadRequest(
            f"two_stems: model {model!r} has no stem {two_stems!r}; its stems are "
            f"{', '.join(stems)}"
        )
