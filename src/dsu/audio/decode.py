"""Decoding: probe a file, stream it in blocks, or read it whole.

Two decoders, tried in order: libsndfile (through ``soundfile``) for wav, flac, ogg, mp3,
aiff and the other formats it knows, and FFmpeg (through PyAV, which bundles it) for
everything libsndfile refuses: m4a/aac/mp4 (including the first stream of a ``.stem.mp4``),
webm, opus and the rest. Every problem a user's file can have ends in
:class:`~dsu.errors.BadAudio` naming the file, or :class:`~dsu.errors.AudioIOError` when
the file cannot be opened at all.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import soundfile as sf

from dsu.audio.headers import declared_frames
from dsu.errors import AudioIOError, BadAudio

_SNDFILE_FORMATS = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "W64": "wav", "AIFF": "aiff"}
# Formats whose decoded length libsndfile knows exactly before decoding (mp3 relies on an
# optional Xing/LAME tag and otherwise estimates from the file size).
_INEXACT_SNDFILE_FORMATS = {"mp3"}


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header.

    ``frames`` is the length in samples per channel. It is exact for every format
    libsndfile decodes except mp3 without a Xing/LAME tag (wav, aiff, flac, ogg: header or
    granule counts). For formats decoded through FFmpeg (m4a, aac, mp4, webm, ...) it is an
    estimate from the container's duration, because counting AAC or Opus samples needs a
    full decode; :class:`AudioReader` still yields every decoded sample, which can differ
    by the codec's priming and padding (about one or two thousand frames for AAC).
    ``frames_exact`` says which case applies.
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


def probe(path: str | Path) -> AudioInfo:
    """Read a file's header; decodes nothing (FFmpeg formats: the container header only).

    Raises AudioIOError when the path cannot be opened (missing, a directory, no
    permission) and BadAudio for empty, undecodable, zero-length or truncated wav/aiff
    files (their header says how long they must be, so truncation shows up front).
    """
    return _probe(Path(path))[0]


class AudioReader:
    """Sequential block decoder; a context manager.

    Iterating yields float32 blocks ``[C, n]`` with ``1 <= n <= block_frames`` at the
    file's own sample rate, values exactly as decoded (no clipping, no normalisation).
    Decoding problems found mid-stream raise BadAudio: a file whose data ends before its
    header says ("truncated: header says N frames, file holds M"), NaN or infinite
    samples, decoder errors ("corrupt audio data: ..."), and a file with no samples.
    """

    def __init__(self, path: str | Path, block_frames: int = 65536) -> None:
        if block_frames <= 0:
            raise ValueError(f"block_frames must be positive, got {block_frames}")
        self.info, decoder = _probe(Path(path))
        self._block_frames = block_frames
        self._source: _SndfileSource | _PyavSource = (
            _SndfileSource(self.info) if decoder == "soundfile" else _PyavSource(self.info)
        )
        self._iterated = False

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._iterated:
            raise RuntimeError("an AudioReader decodes its file once; open a new one")
        self._iterated = True
        return self._checked_blocks()

    def _checked_blocks(self) -> Iterator[np.ndarray]:
        total = 0
        for block in self._source.blocks(self._block_frames):
            finite = np.isfinite(block).all(axis=0)
            if not finite.all():
                first = total + int(np.argmin(finite))
                raise BadAudio(
                    self.info.path, f"contains NaN or infinite samples (first at frame {first})"
                )
            total += block.shape[1]
            yield block
        if total == 0:
            raise BadAudio(self.info.path, "no audio samples (zero length)")

    def close(self) -> None:
        """Release the decoder; safe to call twice."""
        self._source.close()

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a whole file: ``([C, T] float32, samplerate)``, with AudioReader's checks."""
    with AudioReader(path) as reader:
        info = reader.info
        # Exact lengths let the result be filled in place instead of holding every block
        # and a concatenated copy at once.
        out = np.empty((info.channels, info.frames), np.float32) if info.frames_exact else None
        filled = 0
        extra: list[np.ndarray] = []
        for block in reader:
            n = block.shape[1]
            if out is not None and not extra and filled + n <= out.shape[1]:
                out[:, filled : filled + n] = block
                filled += n
            else:
                extra.append(block)
    head = out[:, :filled] if out is not None else np.empty((info.channels, 0), np.float32)
    if not extra:
        return head, info.samplerate
    return np.concatenate([head, *extra], axis=1), info.samplerate


def _probe(path: Path) -> tuple[AudioInfo, str]:
    """The file's AudioInfo and the decoder that opened it (``soundfile`` or ``pyav``)."""
    _check_openable(path)
    try:
        info = sf.info(str(path))
    except RuntimeError:  # soundfile.LibsndfileError: not a format libsndfile knows
        return _pyav_info(path), "pyav"
    return _sndfile_info(path, info), "soundfile"


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


def _sndfile_info(path: Path, info: Any) -> AudioInfo:
    fmt = _SNDFILE_FORMATS.get(info.format, info.format.lower())
    if info.samplerate <= 0 or info.channels <= 0:
        raise BadAudio(path, "not a decodable audio file (no sample rate or channels)")
    declared = declared_frames(path) if fmt in ("wav", "aiff") else None
    if declared is not None and declared > info.frames:
        raise BadAudio(path, _truncated(declared, info.frames))
    if info.frames == 0:
        raise BadAudio(path, "no audio samples (zero length)")
    return AudioInfo(
        path=path,
        samplerate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        format=fmt,
        frames_exact=fmt not in _INEXACT_SNDFILE_FORMATS,
    )


def _pyav_info(path: Path) -> AudioInfo:
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
    suffix = path.suffix.lower().lstrip(".")
    return AudioInfo(
        path=path,
        samplerate=int(rate),
        channels=int(channels),
        frames=max(int(frames), 0),
        format=suffix if suffix in names else names[0],
        frames_exact=False,
    )


def _truncated(declared: int, holds: int) -> str:
    return f"truncated: header says {declared} frames, file holds {holds}"


class _SndfileSource:
    """Blocks from libsndfile."""

    def __init__(self, info: AudioInfo) -> None:
        self._info = info
        try:
            self._file = sf.SoundFile(str(info.path))
        except RuntimeError as e:
            raise BadAudio(info.path, f"not a decodable audio file ({e})") from e

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        done = 0
        while True:
            # An explicit buffer reads past an estimated frame count (soundfile would stop
            # at it), so formats with inexact headers still yield every sample.
            buffer = np.empty((block_frames, self._info.channels), np.float32)
            try:
                data = self._file.read(out=buffer)
            except RuntimeError as e:
                raise self._failure(done, e) from e
            if len(data) == 0:
                break
            done += len(data)
            yield np.ascontiguousarray(data.T)
        if self._info.frames_exact and done < self._info.frames:
            raise BadAudio(self._info.path, _truncated(self._info.frames, done))

    def _failure(self, done: int, error: RuntimeError) -> BadAudio:
        """Name a libsndfile read error: data ending early, or damage inside the file."""
        if self._info.frames_exact:
            holds = _contiguous_frames(self._info.path)
            if holds is not None and holds < self._info.frames:
                return BadAudio(self._info.path, _truncated(self._info.frames, holds))
        detail = getattr(error, "error_string", "") or str(error)
        return BadAudio(self._info.path, f"corrupt audio data: {detail} (after frame {done})")

    def close(self) -> None:
        self._file.close()


def _contiguous_frames(path: Path) -> int | None:
    """Frames FFmpeg decodes from the start of a damaged file, if the damage is at its end.

    libsndfile stops at the first bad FLAC frame without saying why. Decoding again with
    FFmpeg tells a cut-off file (every frame in sequence, only the last one failing) from
    one damaged in the middle (timestamps missing or jumping), which returns None.
    """
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            count = 0
            failed = False
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    failed = True
                    continue
                for frame in frames:
                    if failed or frame.pts is None or frame.time_base is None:
                        return None
                    if round(frame.pts * frame.time_base * stream.rate) != count:
                        return None
                    count += frame.samples
            return count
    except (av.FFmpegError, IndexError):
        return None


class _PyavSource:
    """Blocks from FFmpeg: first audio stream, converted to planar float32."""

    def __init__(self, info: AudioInfo) -> None:
        import av

        self._info = info
        self._av = av
        try:
            self._container = av.open(str(info.path))
        except av.FFmpegError as e:
            raise BadAudio(info.path, f"not a decodable audio file ({e.strerror or e})") from e
        self._stream = self._container.streams.audio[0]
        # A fixed target layout and rate also absorbs mid-stream parameter changes
        # (ADTS streams may switch), so every block has info.channels rows.
        self._resampler = av.AudioResampler(
            format="fltp", layout=self._stream.layout, rate=info.samplerate
        )

    def _arrays(self) -> Iterator[np.ndarray]:
        try:
            for packet in self._container.demux(self._stream):
                for frame in packet.decode():
                    for out in self._resampler.resample(frame):
                        yield out.to_ndarray()
            for out in self._resampler.resample(None):
                yield out.to_ndarray()
        except self._av.FFmpegError as e:
            raise BadAudio(self._info.path, f"corrupt audio data: {e.strerror or e}") from e

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        pending: list[np.ndarray] = []
        pending_frames = 0
        for array in self._arrays():
            pending.append(array)
            pending_frames += array.shape[1]
            if pending_frames < block_frames:
                continue
            joined = np.concatenate(pending, axis=1)
            start = 0
            while pending_frames - start >= block_frames:
                yield np.ascontiguousarray(joined[:, start : start + block_frames])
                start += block_frames
            pending = [joined[:, start:]] if start < pending_frames else []
            pending_frames -= start
        if pending_frames:
            yield np.ascontiguousarray(np.concatenate(pending, axis=1), dtype=np.float32)

    def close(self) -> None:
        self._container.close()
