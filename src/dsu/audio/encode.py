"""Encoding: block-by-block writers that publish a file only when it is complete.

A writer encodes into ``.<name>.partial-<random>`` beside the target and renames it onto
the target name on :meth:`AudioWriter.commit`, so a crash, an error or a cancel never
leaves a half-written file under the final name (the rename is atomic within a directory;
no fsync, since a stem that vanishes on power loss is simply separated again).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from types import TracebackType

import numpy as np
import soundfile as sf

from dsu.audio.formats import EncoderSettings, encoder_settings, format_for_path
from dsu.errors import AudioIOError

_WRITE_BLOCK = 65536

# Integer PCM is quantised here rather than by libsndfile, whose float->int conversion
# scales by 2**(bits-1) - 1 while reading scales by 2**(bits-1), so a round trip through
# it drifts by up to one step. Scaling by 2**(bits-1) both ways keeps it within half a step.
_PCM = {"PCM_16": (np.int16, 2**15, 0), "PCM_24": (np.int32, 2**23, 8)}


class AudioWriter:
    """Streaming, atomic audio file writer; a context manager.

    Formats: wav (``bit_depth`` 16, 24 or 32 = float), flac (16 or 24), mp3 (CBR
    ``bitrate`` kbps, 320 by default) and ogg (Vorbis). ``format=None`` takes it from the
    extension of ``path``. Parent directories are created. Leaving the ``with`` block
    normally commits; leaving it with an exception aborts and removes the temp file.
    """

    def __init__(
        self,
        path: str | Path,
        samplerate: int,
        channels: int,
        format: str | None = None,
        bit_depth: int | None = None,
        bitrate: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.settings: EncoderSettings = encoder_settings(
            format if format is not None else format_for_path(self.path),
            samplerate,
            channels,
            bit_depth=bit_depth,
            bitrate=bitrate,
        )
        self.samplerate, self.channels = samplerate, channels
        self.frames_written = 0
        self.clipped = 0  # samples beyond full scale that an integer or lossy format clipped
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AudioIOError(f"{self.path.parent}: cannot create directory: {e}") from e
        self._temp = self.path.with_name(f".{self.path.name}.partial-{secrets.token_hex(6)}")
        s = self.settings
        try:
            self._file: sf.SoundFile | None = sf.SoundFile(
                str(self._temp),
                "w",
                samplerate=samplerate,
                channels=channels,
                subtype=s.subtype,
                format=s.sf_format,
                compression_level=s.compression_level,
                bitrate_mode="CONSTANT" if s.bitrate is not None else None,
            )
        except (RuntimeError, OSError) as e:
            self._temp.unlink(missing_ok=True)
            raise AudioIOError(f"{self.path}: cannot write: {e}") from e

    def write(self, block: np.ndarray) -> None:
        """Append ``[C, n]`` samples (``[n]`` for mono); values beyond [-1, 1] are clipped
        (and counted in :attr:`clipped`) for every format but float wav."""
        if self._file is None:
            raise RuntimeError(f"{self.path}: writer already committed or aborted")
        if block.ndim == 1 and self.channels == 1:
            block = block[None]
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected a [{self.channels}, n] block, got {block.shape}")
        # Bounded slices keep libsndfile's Vorbis and LAME encoders on modest buffers and
        # the int conversion below from doubling a huge block in memory.
        for start in range(0, block.shape[1], _WRITE_BLOCK):
            self._write_frames(block[:, start : start + _WRITE_BLOCK])

    def _write_frames(self, block: np.ndarray) -> None:
        assert self._file is not None
        data = block.T
        if not self.settings.is_float:
            self.clipped += int(np.count_nonzero(np.abs(data) > 1.0))
            data = np.clip(data, -1.0, 1.0)
        pcm = _PCM.get(self.settings.subtype)
        if pcm is not None:
            dtype, scale, shift = pcm
            ints = np.clip(np.rint(data * scale), -scale, scale - 1).astype(dtype)
            data = ints << shift if shift else ints
        else:
            data = data.astype(np.float32, copy=False)
        try:
            self._file.write(np.ascontiguousarray(data))
        except (RuntimeError, OSError) as e:
            raise AudioIOError(f"{self.path}: cannot write: {e}") from e
        self.frames_written += block.shape[1]

    def commit(self) -> Path:
        """Finish encoding and rename the temp file onto ``path``; returns ``path``."""
        if self._file is None:
            raise RuntimeError(f"{self.path}: writer already committed or aborted")
        file, self._file = self._file, None
        try:
            file.close()
            os.replace(self._temp, self.path)
        except (RuntimeError, OSError) as e:
            self._temp.unlink(missing_ok=True)
            raise AudioIOError(f"{self.path}: cannot write: {e}") from e
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; nothing is left on disk. Safe to call twice."""
        file, self._file = self._file, None
        if file is not None:
            # A failing close only matters for a file we keep; this one is deleted below.
            with contextlib.suppress(RuntimeError, OSError):
                file.close()
        self._temp.unlink(missing_ok=True)

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif self._file is not None:
            self.commit()


def write(
    path: str | Path,
    x: np.ndarray,
    samplerate: int,
    format: str | None = None,
    bit_depth: int | None = None,
    bitrate: int | None = None,
) -> Path:
    """Write a whole ``[C, T]`` signal (``[T]`` for mono) atomically; returns ``path``."""
    channels = 1 if x.ndim == 1 else x.shape[0]
    with AudioWriter(path, samplerate, channels, format, bit_depth, bitrate) as writer:
        writer.write(x)
    return writer.path
