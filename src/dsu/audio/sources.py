"""Block sources for :class:`~dsu.audio.decode.AudioReader`: libsndfile and FFmpeg, each
yielding float32 ``[C, n]`` blocks of a probed file and naming what goes wrong mid-stream
(truncation, damage) as :class:`~dsu.errors.BadAudio`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from dsu.audio.measure import AudioInfo, truncated
from dsu.errors import BadAudio


class SndfileSource:
    """float32 ``[C, n]`` blocks from libsndfile."""

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
            raise BadAudio(self._info.path, truncated(self._info.frames, done))

    def _failure(self, done: int, error: RuntimeError) -> BadAudio:
        """Name a libsndfile read error: data ending early, or damage inside the file."""
        if self._info.frames_exact:
            holds = _contiguous_frames(self._info.path)
            if holds is not None and holds < self._info.frames:
                return BadAudio(self._info.path, truncated(self._info.frames, holds))
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


class PyavSource:
    """float32 ``[C, n]`` blocks from FFmpeg: the first audio stream, converted to planar
    float32 at the probed rate and channels."""

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
        decoded = 0
        try:
            for packet in self._container.demux(self._stream):
                for frame in packet.decode():
                    if self._info.frames_exact:
                        self._check_position(frame, decoded)
                    decoded += frame.samples
                    for out in self._resampler.resample(frame):
                        yield out.to_ndarray()
            for out in self._resampler.resample(None):
                yield out.to_ndarray()
        except self._av.FFmpegError as e:
            raise BadAudio(self._info.path, f"corrupt audio data: {e.strerror or e}") from e
        if self._info.frames_exact and decoded < self._info.frames:
            raise BadAudio(self._info.path, truncated(self._info.frames, decoded))

    def _check_position(self, frame: Any, decoded: int) -> None:
        """Lossless streams must be gapless: FFmpeg skips a damaged FLAC frame silently."""
        if frame.pts is None or frame.time_base is None:
            return
        position = round(frame.pts * frame.time_base * self._info.samplerate)
        if position != decoded:
            raise BadAudio(
                self._info.path, f"corrupt audio data: frames missing (after frame {decoded})"
            )

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
