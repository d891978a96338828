"""Frame counts as declared by WAV and AIFF headers.

libsndfile silently shortens a WAV or AIFF whose data chunk runs past the end of the file
and reports only the frames present, so a file cut off mid-copy would decode "fine" with
its tail missing. Reading the declared size ourselves lets the decoder tell the user the
file is truncated instead.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# WAVE format tags whose block align is the size of one frame (for compressed tags such
# as ADPCM it is the size of a block of many frames, so the data size says nothing exact).
_WAV_FRAME_ALIGNED_TAGS = {0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE}
# Streaming writers that cannot seek back put a placeholder size near 2**32 in the header.
_STREAMING_PLACEHOLDER = 0x7FFF0000
_MAX_CHUNKS = 1024


def declared_frames(path: Path) -> int | None:
    """Frames per channel the header of a RIFF/WAVE or AIFF/AIFC file promises.

    Returns ``None`` for other containers, compressed WAV codecs, streamed files whose
    header holds a placeholder size, or headers too odd to read.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12:
                return None
            if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
                return _wav_frames(f, big_endian=head[:4] == b"RIFX")
            if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
                return _aiff_frames(f)
    except OSError:
        return None
    return None


def _chunks(f: BinaryIO, big_endian: bool) -> Iterator[tuple[bytes, int]]:
    """Yield ``(chunk_id, size)`` per chunk after the 12-byte header, positioned at its data."""
    fmt = ">4sI" if big_endian else "<4sI"
    for _ in range(_MAX_CHUNKS):
        header = f.read(8)
        if len(header) < 8:
            return
        chunk_id, size = struct.unpack(fmt, header)
        offset = f.tell()
        yield chunk_id, size
        # Chunks are padded to an even length in both RIFF and IFF.
        f.seek(offset + size + (size & 1))


def _wav_frames(f: BinaryIO, big_endian: bool) -> int | None:
    block_align = None
    for chunk_id, size in _chunks(f, big_endian):
        if chunk_id == b"fmt ":
            fmt = f.read(min(size, 16))
            if len(fmt) < 14:
                return None
            tag, block_align = struct.unpack((">" if big_endian else "<") + "H10xH", fmt[:14])
            if tag not in _WAV_FRAME_ALIGNED_TAGS or block_align == 0:
                return None
        elif chunk_id == b"data":
            if block_align is None or size == 0 or size >= _STREAMING_PLACEHOLDER:
                return None
            return size // block_align
    return None


def _aiff_frames(f: BinaryIO) -> int | None:
    for chunk_id, size in _chunks(f, big_endian=True):
        if chunk_id == b"COMM":
            comm = f.read(6)
            if size < 6 or len(comm) < 6:
                return None
            _, frames = struct.unpack(">hI", comm)
            return frames
    return None
