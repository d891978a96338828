"""What a file's headers promise, and what its stream really holds, read without decoding.

libsndfile silently shortens a WAV or AIFF whose data chunk runs past the end of the file
and reports only the frames present, so a file cut off mid-copy would decode "fine" with
its tail missing. Reading the declared size ourselves lets the decoder tell the user the
file is truncated instead.

MP3 has no length header at all, only an optional Xing/Info (or VBRI) tag in its first
frame; without one, decoders guess the length from the file size and the first frame's
bitrate, and libsndfile stops decoding at that guess. :func:`scan_mp3` walks the frame
headers themselves (four bytes each, nothing decoded), which gives the stream's true
length, whether the tag agrees with it, and whether the last frame is cut off.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# WAVE format tags whose block align is the size of one frame (for compressed tags such
# as ADPCM it is the size of a block of many frames, so the data size says nothing exact).
_WAV_FRAME_ALIGNED_TAGS = {0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE}
# Compressed tags whose fmt extension states the frames per block (wSamplesPerBlock):
# MS ADPCM, IMA ADPCM, GSM 6.10.
_WAV_BLOCK_TAGS = {0x0002, 0x0011, 0x0031}
# Streaming writers that cannot seek back put a placeholder size near 2**32 in the header.
_STREAMING_PLACEHOLDER = 0x7FFF0000
_RF64_SIZE_IN_DS64 = 0xFFFFFFFF
_MAX_CHUNKS = 1024


@dataclass(frozen=True)
class DataChunk:
    """The audio data a WAV or AIFF header declares, and how much of it the file lacks."""

    declared_frames: int  # frames per channel the header promises
    missing_bytes: int = 0  # declared data bytes past the end of the file
    frames_exact: bool = True  # False for block codecs (ADPCM): whole blocks are counted

    def truncated(self, decoded_frames: int) -> bool:
        """True when the file ends before the data its header declares (by even one byte)."""
        return self.missing_bytes > 0 or (
            self.frames_exact and self.declared_frames > decoded_frames
        )


def data_chunk(path: Path) -> DataChunk | None:
    """What a RIFF/RF64 WAVE ``data`` chunk or an AIFF's COMM chunk declares.

    Returns ``None`` for other containers, WAV codecs whose frames per byte are unknown,
    streamed files whose header holds a placeholder size, or headers too odd to read.
    """
    try:
        with open(path, "rb") as f:
            file_size = f.seek(0, 2)
            f.seek(0)
            head = f.read(12)
            if len(head) < 12:
                return None
            if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
                return _wav_data(f, file_size, big_endian=head[:4] == b"RIFX", rf64=False)
            if head[:4] in (b"RF64", b"BW64") and head[8:12] == b"WAVE":
                return _wav_data(f, file_size, big_endian=False, rf64=True)
            if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
                return _aiff_data(f)
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


def _wav_data(f: BinaryIO, file_size: int, big_endian: bool, rf64: bool) -> DataChunk | None:
    order = ">" if big_endian else "<"
    block_align = block_frames = None
    ds64_data_size = None
    for chunk_id, size in _chunks(f, big_endian):
        if chunk_id == b"ds64" and rf64:
            ds64 = f.read(16)
            if len(ds64) < 16:
                return None
            ds64_data_size = struct.unpack("<QQ", ds64)[1]
        elif chunk_id == b"fmt ":
            fmt = f.read(min(size, 20))
            if len(fmt) < 14:
                return None
            tag, block_align = struct.unpack(order + "H10xH", fmt[:14])
            if tag in _WAV_FRAME_ALIGNED_TAGS:
                block_frames = 1
            elif tag in _WAV_BLOCK_TAGS and len(fmt) >= 20:
                block_frames = struct.unpack(order + "H", fmt[18:20])[0]
            if not block_frames or block_align == 0:
                return None
        elif chunk_id == b"data":
            if rf64 and size == _RF64_SIZE_IN_DS64:
                if ds64_data_size is None:
                    return None
                size = ds64_data_size
            elif size == 0 or size >= _STREAMING_PLACEHOLDER:
                return None
            if block_align is None or block_frames is None:
                return None
            present = max(0, min(size, file_size - f.tell()))
            blocks = -(-size // block_align)  # a partial last block still holds frames
            return DataChunk(blocks * block_frames, size - present, frames_exact=block_frames == 1)
    return None


def _aiff_data(f: BinaryIO) -> DataChunk | None:
    # COMM states the frame count and libsndfile reports the frames present, so comparing
    # the two finds a cut-off file without byte bookkeeping.
    for chunk_id, size in _chunks(f, big_endian=True):
        if chunk_id == b"COMM":
            comm = f.read(6)
            if size < 6 or len(comm) < 6:
                return None
            _, frames = struct.unpack(">hI", comm)
            return DataChunk(frames)
    return None


# --- MPEG audio (mp3) ------------------------------------------------------------------

# kbps per bitrate index 1..14: (MPEG-1 layers I, II, III), then MPEG-2/2.5 (I, II+III).
_MPEG1_KBPS = {
    3: (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    2: (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    1: (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
}
_MPEG2_KBPS = {
    3: (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    2: (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    1: (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG1_RATES = (44100, 48000, 32000)
_VERSION_RATE_DIVISOR = {3: 1, 2: 2, 0: 4}  # version bits: MPEG-1, MPEG-2, MPEG-2.5
# Encoders whose tag carries the encoder delay and padding that gapless decoders trim.
_GAPLESS_ENCODERS = (b"LAME", b"Lavf", b"Lavc")
_TRAILING_TAG_MAX = 1 << 20  # how far back from the end an APE tag is looked for


@dataclass(frozen=True)
class _Frame:
    length: int  # bytes, header included
    samples: int  # per channel
    samplerate: int
    signature: int  # version, layer and rate bits: equal for every frame of one stream
    mono: bool
    mpeg1: bool
    crc: bool


@dataclass(frozen=True)
class Mp3Stream:
    """What a scan of an MP3's frame headers found.

    ``frames`` is the stream's length in samples per channel as a gapless decoder outputs
    it: every audio frame, less the encoder delay and padding a LAME tag states (within a
    frame of what any decoder yields). ``tag_length`` is the length in samples the
    Xing/Info or VBRI tag claims, counted the same way (None without a tag). ``declared``
    is the length the headers promise: the tag's, or one frame more than ``frames`` when
    the last frame header runs past the end of the file; ``truncated`` says the stream
    holds less than that.
    """

    samplerate: int
    frames: int
    declared: int
    tag_length: int | None

    @property
    def truncated(self) -> bool:
        """True when the file ends inside a frame or before the frames the tag counts."""
        return self.declared > self.frames


def _parse_frame(buf: mmap.mmap | bytes, pos: int) -> _Frame | None:
    """The MPEG audio frame header at ``pos``, or None if there is none."""
    if pos + 4 > len(buf) or buf[pos] != 0xFF or buf[pos + 1] & 0xE0 != 0xE0:
        return None
    b1, b2, b3 = buf[pos + 1], buf[pos + 2], buf[pos + 3]
    version, layer = (b1 >> 3) & 3, (b1 >> 1) & 3
    bitrate_index, rate_index, padding = b2 >> 4, (b2 >> 2) & 3, (b2 >> 1) & 1
    # Reserved version/layer/rate, and free-format (index 0) or invalid (15) bitrates.
    if version == 1 or layer == 0 or rate_index == 3 or bitrate_index in (0, 15):
        return None
    mpeg1 = version == 3
    kbps = (_MPEG1_KBPS if mpeg1 else _MPEG2_KBPS)[layer][bitrate_index - 1]
    rate = _MPEG1_RATES[rate_index] // _VERSION_RATE_DIVISOR[version]
    if layer == 3:  # layer I: 384 samples, 4-byte slots
        length, samples = (12 * kbps * 1000 // rate + padding) * 4, 384
    elif layer == 2 or mpeg1:  # layer II, or layer III of MPEG-1: 1152 samples
        length, samples = 144 * kbps * 1000 // rate + padding, 1152
    else:  # layer III of MPEG-2/2.5: 576 samples
        length, samples = 72 * kbps * 1000 // rate + padding, 576
    return _Frame(
        length=length,
        samples=samples,
        samplerate=rate,
        signature=(b1 & 0x1E) << 8 | (b2 & 0x0C),
        mono=(b3 >> 6) == 3,
        mpeg1=mpeg1,
        crc=not (b1 & 1),
    )


def _id3v2_size(buf: mmap.mmap | bytes, pos: int) -> int:
    """Bytes of the ID3v2 tag at ``pos`` (0 if there is none)."""
    if buf[pos : pos + 3] != b"ID3" or pos + 10 > len(buf):
        return 0
    size = 0
    for byte in buf[pos + 6 : pos + 10]:
        size = size << 7 | (byte & 0x7F)  # "syncsafe": 7 bits per byte
    footer = 10 if buf[pos + 5] & 0x10 else 0
    return 10 + size + footer


def _audio_end(buf: mmap.mmap | bytes) -> int:
    """End of the frame data: the file size less trailing ID3v1 and APEv2 tags."""
    end = len(buf)
    if end >= 128 and buf[end - 128 : end - 125] == b"TAG":
        end -= 128
    if end >= 32 and buf[end - 32 : end - 24] == b"APETAGEX":
        size = struct.unpack("<I", buf[end - 20 : end - 16])[0]
        has_header = bool(struct.unpack("<I", buf[end - 12 : end - 8])[0] & 0x80000000)
        if size <= min(end, _TRAILING_TAG_MAX):
            end -= size + (32 if has_header else 0)
    return max(end, 0)


def _confirmed(buf: mmap.mmap | bytes, pos: int, end: int) -> _Frame | None:
    """A frame at ``pos`` that the next header confirms (random bytes can look like one)."""
    frame = _parse_frame(buf, pos)
    if frame is None:
        return None
    following = pos + frame.length
    if following == end:
        return frame
    nxt = _parse_frame(buf, following) if following < end else None
    return frame if nxt is not None and nxt.signature == frame.signature else None


def _resync(buf: mmap.mmap | bytes, pos: int, end: int) -> int | None:
    """Offset of the next confirmed frame (or ID3v2 tag) at or after ``pos``."""
    while pos < end:
        if _id3v2_size(buf, pos):
            return pos
        pos = buf.find(b"\xff", pos, end)
        if pos < 0:
            return None
        if _confirmed(buf, pos, end) is not None:
            return pos
        pos += 1
    return None


def _tag(buf: mmap.mmap | bytes, pos: int, frame: _Frame) -> tuple[int | None, int] | None:
    """``(frame count, delay + padding)`` of a Xing/Info or VBRI tag frame at ``pos``.

    None when the frame is an ordinary audio frame. The count excludes the tag frame.
    """
    side_info = (17 if frame.mono else 32) if frame.mpeg1 else (9 if frame.mono else 17)
    at = pos + 4 + (2 if frame.crc else 0) + side_info
    if buf[at : at + 4] in (b"Xing", b"Info"):
        flags = struct.unpack(">I", buf[at + 4 : at + 8])[0]
        cursor = at + 8
        count = None
        if flags & 1:
            count = struct.unpack(">I", buf[cursor : cursor + 4])[0]
            cursor += 4
        cursor += (4 if flags & 2 else 0) + (100 if flags & 4 else 0) + (4 if flags & 8 else 0)
        trim = 0
        if buf[cursor : cursor + 4] in _GAPLESS_ENCODERS:
            # 9-byte version string, then 12 bytes of tag fields before delay/padding.
            packed = int.from_bytes(buf[cursor + 21 : cursor + 24], "big")
            trim = (packed >> 12) + (packed & 0xFFF)
        return count, trim
    vbri = pos + 4 + 32
    if buf[vbri : vbri + 4] == b"VBRI":
        return struct.unpack(">I", buf[vbri + 14 : vbri + 18])[0], 0
    return None


def looks_like_mpeg_audio(path: Path) -> bool:
    """True when the file starts with an ID3v2 tag or an MPEG audio frame header."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:3] == b"ID3" or _parse_frame(head, 0) is not None


def scan_mp3(path: Path) -> Mp3Stream | None:
    """Walk every frame header of an MPEG audio file; decodes nothing.

    Skips ID3v2 tags anywhere (files joined with ``cat`` carry them in the middle),
    trailing ID3v1/APEv2 tags, and junk between frames (resynchronising on two
    consecutive headers). Returns None when no frame is found or the stream uses
    free-format bitrates, whose frame lengths no header states.
    """
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _scan(buf)
    except (OSError, ValueError):  # ValueError: mmap of an empty file
        return None


def _scan(buf: mmap.mmap | bytes) -> Mp3Stream | None:
    end = _audio_end(buf)
    pos = 0
    while skip := _id3v2_size(buf, pos):
        pos += skip
    start = _resync(buf, pos, end)
    if start is None:
        return None
    first = _parse_frame(buf, start)
    assert first is not None
    tag = _tag(buf, start, first)
    tag_frames, trim = tag if tag is not None else (None, 0)
    pos = start + first.length if tag is not None else start
    samples = cut_samples = 0
    while pos < end:
        frame = _parse_frame(buf, pos)
        if frame is not None and frame.signature == first.signature:
            if pos + frame.length > end:
                cut_samples = frame.samples
                break
            samples += frame.samples
            pos += frame.length
            continue
        skip = _id3v2_size(buf, pos)
        if skip:
            pos += skip
            continue
        found = _resync(buf, pos + 1, end)
        if found is None:
            break  # trailing bytes that are no frame: padding or an unknown tag
        pos = found
    frames = max(samples - trim, 0)
    tag_length = max(tag_frames * first.samples - trim, 0) if tag_frames is not None else None
    return Mp3Stream(
        samplerate=first.samplerate,
        frames=frames,
        declared=max(frames + cut_samples, tag_length or 0),
        tag_length=tag_length,
    )
