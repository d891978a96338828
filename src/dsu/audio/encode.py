"""Encoding: block-by-block writers that publish a file only when it is complete.

A writer encodes into ``.<name>.partial-<random>`` beside the target and renames it onto
the target name on :meth:`AudioWriter.commit`, so a crash, an error or a cancel never
leaves a half-written file under the final name (the rename is atomic within a directory;
no fsync, since a stem that vanishes on power loss is simply separated again).

A writer that is dropped without a commit, or a process that ends on an exception or a
signal turned into one, removes its temp file. Only a hard kill (SIGKILL, power loss)
leaves one behind; the writer holds an advisory lock on it for as long as it lives, so
the next writer into that directory can tell an abandoned temp file (lock free) from one
another process is still writing (:func:`remove_stale_partials`).

Encoding runs on the writer's own thread behind a bounded queue (:class:`_Encoder`), so
a separation computes the next chunk while the last one is encoded; libsndfile and
NumPy release the GIL while they work.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import re
import secrets
import shutil
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import soundfile as sf

from dsu.audio.formats import OUTPUT_SUFFIXES, EncoderSettings, encoder_settings, format_for_path
from dsu.errors import AudioIOError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, but an open file cannot be deleted there
    fcntl = None  # type: ignore[assignment]

_WRITE_BLOCK = 65536
ENCODE_QUEUE = 8
"""Blocks of ``_WRITE_BLOCK`` frames a writer holds for its encoder thread (about 12 s
of audio, 4 MB of stereo float32): enough to ride out a slow chunk, bounded whatever
the track's length."""

# DSU's temp names, and the targets they may stand for (stem files come from stems_mp4);
# nothing else is ever taken for a temp file.
_PARTIAL = re.compile(r"\.(?P<target>.+)\.partial-[0-9a-f]{12}")
_PARTIAL_SUFFIXES = OUTPUT_SUFFIXES | {".mp4"}

# libsndfile reports a failed write as "System error." without the cause; with less than
# this free on the target's file system after the failure, the cause is a full disk.
_FULL_BELOW = 1 << 20

# Integer PCM is quantised here rather than by libsndfile, whose float->int conversion
# scales by 2**(bits-1) - 1 while reading scales by 2**(bits-1), so a round trip through
# it drifts by up to one step. Scaling by 2**(bits-1) both ways keeps it within half a step.
_PCM = {"PCM_16": (np.int16, 2**15, 0), "PCM_24": (np.int32, 2**23, 8)}


class AudioWriter:
    """Streaming, atomic audio file writer; a context manager.

    Formats: wav (``bit_depth`` 16, 24 or 32 = float), flac (16 or 24), mp3 (CBR
    ``bitrate`` kbps, 320 by default) and ogg (Vorbis). ``format=None`` takes it from the
    extension of ``path``. Parent directories are created, and temp files that killed
    writers left there are removed. Leaving the ``with`` block normally commits; leaving it
    with an exception aborts and removes the temp file, and so does dropping a writer that
    was never committed.

    Raises:
        BadRequest: settings the format does not allow.
        AudioIOError: the file cannot be created or written (a full disk says so).
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
        self._encoder: _Encoder | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AudioIOError(f"{self.path.parent}: cannot create directory: {e}") from e
        remove_stale_partials(self.path.parent)
        self._temp = partial_path(self.path)
        self._file: sf.SoundFile | None = None
        self._lock = _create_locked(self._temp, self.path)
        opened: list[sf.SoundFile] = []
        encoders: list[_Encoder] = []
        try:
            # Runs on abort, and on garbage collection or interpreter exit if not committed.
            self._discard = weakref.finalize(
                self, _discard, self._temp, self._lock, opened, encoders
            )
        except BaseException:
            _discard(self._temp, self._lock, opened, encoders)
            raise
        s = self.settings
        try:
            self._file = sf.SoundFile(
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
            self._discard()
            raise write_error(self.path, e) from e
        opened.append(self._file)
        self._encoder = _Encoder(self._file, self.settings, self.path)
        encoders.append(self._encoder)

    @property
    def clipped(self) -> int:
        """Samples beyond full scale that an integer or lossy format clipped (final once
        the writer is committed)."""
        return self._encoder.clipped if self._encoder is not None else 0

    def write(self, block: np.ndarray) -> None:
        """Append ``[C, n]`` samples (``[n]`` for mono); values beyond [-1, 1] are clipped
        (and counted in :attr:`clipped`) for every format but float wav.

        The samples are copied and encoded on the writer's thread; a failure there is
        raised by the next ``write`` or by :meth:`commit`.
        """
        if self._file is None:
            raise RuntimeError(f"{self.path}: writer already committed or aborted")
        assert self._encoder is not None
        if block.ndim == 1 and self.channels == 1:
            block = block[None]
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise ValueError(f"expected a [{self.channels}, n] block, got {block.shape}")
        # Bounded slices keep libsndfile's Vorbis and LAME encoders on modest buffers and
        # the queue and the int conversion from holding a huge block twice in memory.
        for start in range(0, block.shape[1], _WRITE_BLOCK):
            self._encoder.put(np.array(block[:, start : start + _WRITE_BLOCK]))
        self.frames_written += block.shape[1]

    def commit(self) -> Path:
        """Finish encoding and rename the temp file onto ``path``; returns ``path``."""
        if self._file is None:
            raise RuntimeError(f"{self.path}: writer already committed or aborted")
        assert self._encoder is not None
        file, self._file = self._file, None
        try:
            self._encoder.finish()
        except BaseException:
            self._discard()
            raise
        try:
            file.close()
            os.replace(self._temp, self.path)
        except (RuntimeError, OSError) as e:
            self._discard()
            raise write_error(self.path, e) from e
        self._discard.detach()
        _unlock(self._lock)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; nothing is left on disk. Safe to call twice."""
        self._file = None
        self._discard()

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


def partial_path(path: Path) -> Path:
    """A fresh temp name beside ``path``: ``.<name>.partial-<12 hex digits>``."""
    return path.with_name(f".{path.name}.partial-{secrets.token_hex(6)}")


@contextlib.contextmanager
def partial_file(path: str | Path) -> Iterator[Path]:
    """A locked temp file for a writer that is not an :class:`AudioWriter`.

    Yields the temp path (created empty, beside ``path``); the caller writes it and
    ``os.replace``-s it onto ``path``. On leaving, whatever is still under the temp name is
    deleted and the lock released, so :func:`remove_stale_partials` never takes the file
    for abandoned while the block runs.

    Raises:
        AudioIOError: the temp file cannot be created.
    """
    target = Path(path)
    temp = partial_path(target)
    lock = _create_locked(temp, target)
    try:
        yield temp
    finally:
        _discard(temp, lock, [])


def remove_stale_partials(directory: str | Path) -> list[Path]:
    """Delete the temp files that DSU writers left in ``directory`` and no longer hold.

    Only names of the form :func:`partial_path` makes for an output format's file are
    considered, and of those only the ones whose writer is gone (killed, or from a
    crashed run); a temp file another process is writing stays. Never raises.

    Returns:
        The paths removed.
    """
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _PARTIAL.fullmatch(entry.name)
        if match is None or Path(match["target"]).suffix.lower() not in _PARTIAL_SUFFIXES:
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False) and _remove_if_abandoned(entry.path):
                removed.append(Path(entry.path))
    return removed


def write_error(path: Path, exc: BaseException) -> AudioIOError:
    """The :class:`AudioIOError` for a failed write of ``path``, saying so plainly when the
    disk is full (libsndfile itself only says "System error.")."""
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not full and not isinstance(exc, OSError):
        with contextlib.suppress(OSError):
            full = shutil.disk_usage(path.parent).free < _FULL_BELOW
    if full:
        return AudioIOError(
            f"{path}: no space left on device: free some space on {path.parent} "
            "or write the output elsewhere"
        )
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
    return AudioIOError(f"{path}: cannot write: {reason}")


def make_dirs(directory: str | Path) -> list[Path]:
    """Create ``directory`` and its missing parents.

    Returns:
        The directories this call created, outermost first: what
        :func:`remove_empty_dirs` may take away again when nothing was written there.

    Raises:
        AudioIOError: a directory cannot be created.
    """
    missing = []
    current = Path(directory)
    while not current.exists():
        missing.append(current)
        current = current.parent
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue  # made by someone else meanwhile: theirs, never removed by us
        except OSError as e:
            remove_empty_dirs(created)
            raise AudioIOError(f"{path}: cannot create directory: {e.strerror or e}") from e
        created.append(path)
    return created


def remove_empty_dirs(created: list[Path]) -> None:
    """Remove the directories of :func:`make_dirs`'s list that are empty, innermost first;
    one holding anything (an output, a user's file) stays, and so do its parents."""
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:
            return


def _create_locked(temp: Path, target: Path) -> int:
    """Create ``temp`` (it must not exist) and lock it; the descriptor holds the lock."""
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise write_error(target, e) from e
    if fcntl is not None:
        # Without lock support (some network file systems) cleaners cannot take the lock
        # either, so they leave the file alone.
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class _Encoder:
    """Encodes one writer's blocks into its file on a thread of its own.

    Blocks wait in a queue of at most :data:`ENCODE_QUEUE`, so a producer faster than
    the encoder blocks instead of growing memory. The first failure is kept, raised to
    the producer on its next :meth:`put` or on :meth:`finish`, and later blocks dropped.
    The thread holds the file and the settings, never the writer, so an uncommitted
    writer that is dropped is still collected (and its temp file removed).
    """

    def __init__(self, file: sf.SoundFile, settings: EncoderSettings, path: Path) -> None:
        self.clipped = 0
        self._file, self._settings, self._path = file, settings, path
        self._error: BaseException | None = None
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(ENCODE_QUEUE)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"dsu-encode {path.name}")
        self._thread.daemon = True  # a stuck disk never holds up the interpreter's exit
        self._thread.start()

    def put(self, block: np.ndarray) -> None:
        """Queue ``[C, n]`` samples; raises the encoder's failure, if any."""
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def finish(self) -> None:
        """Encode everything queued and end the thread; raises its failure, if any."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """End the thread without encoding what is queued (abort); safe to call twice."""
        self._stopped.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)  # a full queue is read on, and the flag seen
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while True:
            block = self._queue.get()
            if block is None or self._stopped.is_set():
                return
            if self._error is not None:
                continue  # drained, so a producer blocked on a full queue wakes up
            try:
                self._encode(block)
            except (RuntimeError, OSError) as e:
                self._error = write_error(self._path, e)
            except BaseException as e:  # e.g. MemoryError: the producer sees it as it is
                self._error = e

    def _encode(self, block: np.ndarray) -> None:
        data = block.T
        if not self._settings.is_float:
            self.clipped += int(np.count_nonzero(np.abs(data) > 1.0))
            data = np.clip(data, -1.0, 1.0)
        pcm = _PCM.get(self._settings.subtype)
        if pcm is not None:
            dtype, scale, shift = pcm
            ints = np.clip(np.rint(data * scale), -scale, scale - 1).astype(dtype)
            data = ints << shift if shift else ints
        else:
            data = data.astype(np.float32, copy=False)
        self._file.write(np.ascontiguousarray(data))


def _discard(
    temp: Path, lock: int, files: list[sf.SoundFile], encoders: Sequence[_Encoder] = ()
) -> None:
    """Stop the encoder, close and delete a temp file, then let go of its lock (in that
    order: nothing writes to a closed file, and no cleaner sees the file unlocked while it
    still exists)."""
    for encoder in encoders:
        encoder.stop()
    for file in files:
        # A failing close only matters for a file we keep; this one is deleted below.
        with contextlib.suppress(RuntimeError, OSError):
            file.close()
    with contextlib.suppress(OSError):
        temp.unlink(missing_ok=True)
    _unlock(lock)


def _remove_if_abandoned(path: str) -> bool:
    """Delete ``path`` if no process holds its lock; True when deleted."""
    if fcntl is None:
        os.unlink(path)  # fails for a file another process has open
        return True
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        os.unlink(path)
        return True
    finally:
        os.close(fd)
