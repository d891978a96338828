"""Probing: what a file holds and which decoder reads it, without decoding it.

libsndfile (through ``soundfile``) reads wav, aiff, flac, ogg and the other formats it
knows; FFmpeg (through PyAV, which bundles it) reads mp3 and everything libsndfile
refuses: m4a/aac/mp4 (including the first stream of a ``.stem.mp4``), webm, opus and the
rest.

libsndfile stops decoding at the length it read up front, so a header that understates
the stream would silently cut the audio short. The stream is therefore measured without
decoding (mp3: its frame headers; flac and ogg: FFmpeg's demuxer) and trusted over any
header: where it holds more than the header says, FFmpeg, which decodes to the end of the
stream, does the decoding and a one-line warning on stderr (logger ``dsu.audio``) says
so; where it holds less, the file is truncated.
"""

from __future__ import annotations

import logging
import stat
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import soundfile as sf

from dsu.audio.headers import data_chunk, looks_like_mpeg_audio, scan_mp3
from dsu.errors import AudioIOError, BadAudio

_SNDFILE_FORMATS = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "W64": "wav", "AIFF": "aiff"}
# Formats whose length libsndfile takes from a header or a granule position, which the
# stream itself may exceed (a lying STREAMINFO, a chained Ogg file).
_STREAM_CHECKED_FORMATS = {"flac", "ogg"}
# libsndfile's frame count for a FLAC whose STREAMINFO leaves the length unknown (0).
_SF_UNKNOWN_FRAMES = 2**63 - 1

_log = logging.getLogger("dsu.audio")
# Files already warned about, so the several probes of one separation warn once.
_WARNED: OrderedDict[tuple[str, int, int], None] = OrderedDict()
_WARNED_MAX = 256


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its headers and measured on its stream.

    ``frames`` is the length in samples per channel the stream holds, whatever a header
    claims. It is exact for wav, aiff, flac and single-chain ogg. For mp3 it is counted
    from the frame headers, less the encoder delay and padding a LAME tag states (within a
    frame of what decodes). For the other formats decoded through FFmpeg (m4a, aac, mp4,
    webm, ...) it is the sum of the demuxed packets' durations, because counting AAC or
    Opus samples exactly needs a full decode; :class:`AudioReader` still yields every
    decoded sample, which can differ by the codec's priming and padding (about one or two
    thousand frames for AAC). ``frames_exact`` says which case applies.
    """

    path: Path
    samplerate: int
    channels: int
    frames: int
    format: str  # short container/codec name: wav, flac, ogg, mp3, aiff, m4a, aac, mp4, webm, ...
    frames_exact: bool = True

    @property
    def duration(self) -> float:
        """Length in seconds (an estimate when ``frames_exact`` is false)."""
        return self.frames / self.samplerate


def probe_file(path: Path) -> tuple[AudioInfo, str]:
    """The file's AudioInfo and the decoder to use (``soundfile`` or ``pyav``).

    Raises:
        AudioIOError: the path cannot be opened.
        BadAudio: the file is empty, undecodable, of zero length or truncated.
    """
    _check_openable(path)
    # libsndfile decodes only as many mp3 samples as the Xing tag, or failing that a guess
    # from the file size, says; FFmpeg decodes every frame. Asking libsndfile first would
    # only add its decoder's complaints about such files to stderr.
    if looks_like_mpeg_audio(path):
        try:
            probed = _pyav_info(path, measure=False)
        except BadAudio:
            probed = None
        if probed is not None and probed.format == "mp3":
            return _mp3_info(probed), "pyav"
    try:
        info = sf.info(str(path))
    except RuntimeError:  # soundfile.LibsndfileError: not a format libsndfile knows
        probed = _pyav_info(path)
        return (_mp3_info(probed) if probed.format == "mp3" else probed), "pyav"
    fmt = _SNDFILE_FORMATS.get(info.format, info.format.lower())
    if fmt == "mp3":
        return _mp3_info(_pyav_info(path, measure=False)), "pyav"
    sndfile = _sndfile_info(path, info, fmt)
    if fmt in _STREAM_CHECKED_FORMATS:
        return _stream_checked(sndfile)
    return sndfile, "soundfile"


def _check_openable(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AudioIOError(f"{path}: no such file") from None
    except OSError as e:
        raise AudioIOError(f"{path}: cannot open: {e.strerror or e}") from e
    if stat.S_ISDIR(st.st_mode):
        raise AudioIOError(f"{path}: is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        raise AudioIOError(f"{path}: not a regular file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise AudioIOError(f"{path}: cannot open: {e.strerror or e}") from e
    if st.st_size == 0:
        raise BadAudio(path, "empty file (0 bytes)")


def _sndfile_info(path: Path, info: Any, fmt: str) -> AudioInfo:
    if info.samplerate <= 0 or info.channels <= 0:
        raise BadAudio(path, "not a decodable audio file (no sample rate or channels)")
    chunk = data_chunk(path) if fmt in ("wav", "aiff") else None
    if chunk is not None and chunk.truncated(info.frames):
        raise BadAudio(path, truncated(chunk.declared_frames, info.frames))
    if info.frames == 0:
        raise BadAudio(path, "no audio samples (zero length)")
    return AudioInfo(
        path=path,
        samplerate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        format=fmt,
    )


def _stream_checked(info: AudioInfo) -> tuple[AudioInfo, str]:
    """Keep libsndfile unless the stream holds more than the length it read up front."""
    measured = _demuxed_frames(info.path)
    if measured is None:
        if info.frames == _SF_UNKNOWN_FRAMES:
            raise BadAudio(info.path, "not a decodable audio file (length unknown, unreadable)")
        return info, "soundfile"
    frames, longest_packet = measured
    unknown = info.frames == _SF_UNKNOWN_FRAMES
    # Ogg packet durations also count the codec's pre-roll, at most one packet more than
    # what decodes; FLAC's are exact.
    slack = longest_packet if info.format == "ogg" else 0
    if not unknown and frames <= info.frames + slack:
        return info, "soundfile"
    if not unknown:
        _warn_longer(info.path, info.frames, frames)
    return replace(info, frames=frames, frames_exact=info.format == "flac"), "pyav"


def _mp3_info(info: AudioInfo) -> AudioInfo:
    """``info`` with the length counted from the mp3's frame headers."""
    scan = scan_mp3(info.path)
    if scan is None:  # free-format bitrate: no frame header states a length
        measured = _demuxed_frames(info.path)
        return replace(info, frames=measured[0]) if measured is not None else info
    if scan.truncated:
        raise BadAudio(info.path, truncated(scan.declared, scan.frames))
    if scan.tag_length is not None and scan.tag_length < scan.frames:
        _warn_longer(info.path, scan.tag_length, scan.frames)
    if scan.frames == 0:
        raise BadAudio(info.path, "no audio samples (zero length)")
    return replace(info, frames=scan.frames, format="mp3", frames_exact=False)


def _warn_longer(path: Path, declared: int, holds: int) -> None:
    """Say once per file (and version of it) that its header understates the stream."""
    try:
        st = path.stat()
    except OSError:
        return
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _WARNED:
        return
    _WARNED[key] = None
    if len(_WARNED) > _WARNED_MAX:
        _WARNED.popitem(last=False)
    _log.warning(
        "warning: %s: header says %d frames, the stream holds %d; decoding the whole stream",
        path,
        declared,
        holds,
    )


def _demuxed_frames(path: Path) -> tuple[int, int] | None:
    """``(frames, longest packet)`` of the first audio stream, from packet headers only.

    The length is the larger of the summed packet durations and the end of the last
    packet (one survives a damaged packet without a duration, the other timestamps that
    restart in a chained Ogg file). None when FFmpeg cannot read the packets.
    """
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            total = end = longest = 0
            for packet in container.demux(stream):
                if packet.size == 0:  # the end-of-stream marker
                    continue
                duration = packet.duration or 0
                total += duration
                longest = max(longest, duration)
                if packet.pts is not None:
                    end = max(end, packet.pts + duration)
            if stream.time_base is None or not stream.rate:
                return None
            scale = stream.time_base * stream.rate
            return round(max(total, end) * scale), round(longest * scale)
    except av.FFmpegError:
        return None


def _pyav_info(path: Path, measure: bool = True) -> AudioInfo:
    """Stream parameters from FFmpeg; the length by demuxing every packet if ``measure``."""
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise BadAudio(path, f"not a decodable audio file ({e.strerror or e})") from e
    with container:
        if not container.streams.audio:
            raise BadAudio(path, "not a decodable audio file (no audio stream)")
        stream = container.streams.audio[0]
        rate, channels = stream.rate or 0, stream.channels or 0
        if rate <= 0 or channels <= 0:
            raise BadAudio(path, "not a decodable audio file (no sample rate or channels)")
        if stream.duration is not None and stream.time_base is not None:
            frames = round(stream.duration * stream.time_base * rate)
        elif container.duration is not None:
            frames = round(container.duration * rate / av.time_base)
        else:
            frames = 0
        names = container.format.name.split(",")
    # The container's duration is a header (or, for ADTS, a guess from the bitrate); the
    # packets say what is there.
    measured = _demuxed_frames(path) if measure else None
    if measured is not None and measured[0] > 0:
        frames = measured[0]
    suffix = path.suffix.lower().lstrip(".")
    return AudioInfo(
        path=path,
        samplerate=int(rate),
        channels=int(channels),
        frames=max(int(frames), 0),
        format=suffix if suffix in names else names[0],
        frames_exact=False,
    )


def truncated(declared: int, holds: int) -> str:
    """The message of a file whose data ends before its header says."""
    return f"truncated: header says {declared} frames, file holds {holds}"
