"""Decoding: probe a file, stream it in blocks, or read it whole.

:mod:`dsu.audio.measure` reads a file's headers, measures its stream and picks the
decoder (libsndfile or FFmpeg); :mod:`dsu.audio.sources` decodes it in blocks. Every
problem a user's file can have ends in :class:`~dsu.errors.BadAudio` naming the file, or
:class:`~dsu.errors.AudioIOError` when the file cannot be opened at all.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np

from dsu.audio.measure import AudioInfo, probe_file
from dsu.audio.sources import PyavSource, SndfileSource
from dsu.errors import BadAudio


def probe(path: str | Path) -> AudioInfo:
    """Read a file's header and measure its stream; decodes nothing.

    Measuring reads frame or packet headers through the whole file (mp3, flac, ogg and
    the FFmpeg formats), which is fast. Raises AudioIOError when the path cannot be opened
    (missing, a directory, no permission) and BadAudio for empty, undecodable, zero-length
    or truncated wav/aiff/mp3 files (their headers say how long they must be, so
    truncation shows up front).
    """
    return probe_file(Path(path))[0]


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
        self.info, decoder = probe_file(Path(path))
        self._block_frames = block_frames
        self._source: SndfileSource | PyavSource = (
            SndfileSource(self.info) if decoder == "soundfile" else PyavSource(self.info)
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


READ_AHEAD = 4
"""Blocks :func:`read_ahead` decodes before they are asked for."""


def read_ahead(
    path: str | Path, block_frames: int = 65536, depth: int = READ_AHEAD
) -> Iterator[np.ndarray]:
    """:class:`AudioReader`'s blocks, decoded on a thread of its own ahead of the caller.

    At most ``depth`` decoded blocks wait, so memory stays bounded whatever the length.
    A decoding failure is raised to the caller, as it is, where its block would have
    come; closing the iterator early (or dropping it) stops the thread and closes the
    file.
    """
    # Each item is a block, or (None, the exception that ended decoding, or None at the end).
    items: queue.Queue[np.ndarray | tuple[None, BaseException | None]] = queue.Queue(depth)
    stopped = threading.Event()

    def offer(item: np.ndarray | tuple[None, BaseException | None]) -> bool:
        """Queue ``item`` unless the caller has stopped listening; False when it has."""
        while not stopped.is_set():
            with contextlib.suppress(queue.Full):
                items.put(item, timeout=0.1)
                return True
        return False

    def decode() -> None:
        try:
            with AudioReader(path, block_frames) as reader:
                for block in reader:
                    if not offer(block):
                        return
        except BaseException as e:  # handed over: the caller raises it
            offer((None, e))
            return
        offer((None, None))

    thread = threading.Thread(target=decode, name=f"dsu-decode {Path(path).name}", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if isinstance(item, tuple):
                if item[1] is not None:
                    raise item[1]
                return
            yield item
    finally:
        stopped.set()
        thread.join()


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
