"""Native Instruments stem files (``.stem.mp4``): read all five streams, write new ones.

The format (NI's "Stem File Specification", also what stempeg/MP4Box produce): one
MP4 with five AAC tracks in a fixed order, mixture, drums, bass, other, vocals. Only
the mixture track is enabled, so an ordinary player plays the mixture; a stem-aware
player (Traktor) reads ``moov/udta/stem``, a box whose whole payload is UTF-8 JSON::

    {"version": 1,
     "mastering_dsp": {"compressor": {...}, "limiter": {...}},
     "stems": [{"name": "drums", "color": "#009E73"}, ... four entries ...]}

FFmpeg (through PyAV) muxes the five tracks and enables only the first one of each
type; it cannot write a custom box, so :func:`write_stem_mp4` appends the ``stem`` box
to the ``moov`` it wrote (FFmpeg puts ``moov`` after ``mdat``, so no chunk offset
moves). Like every DSU writer, it encodes into ``.<name>.partial-<random>`` and renames
onto the final name only when the file is complete.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from dsu.audio.encode import partial_file, write_error
from dsu.errors import AudioIOError, BadAudio, BadRequest

NI_STEMS: tuple[str, ...] = ("drums", "bass", "other", "vocals")
STREAM_ORDER: tuple[str, ...] = ("mixture", *NI_STEMS)

# The colours NI's stem creator and stempeg use by default (Okabe-Ito palette).
NI_COLORS = {"drums": "#009E73", "bass": "#D55E00", "other": "#CC79A7", "vocals": "#56B4E9"}

# Traktor applies this mastering chain to the summed stems when enabled. Separated stems
# already come from a mastered mixture, so both processors are written disabled; the
# values are NI's defaults and only matter if a user switches them on.
MASTERING_DSP: dict[str, Any] = {
    "compressor": {
        "enabled": False,
        "ratio": 3,
        "output_gain": 0.5,
        "release": 0.3,
        "attack": 0.003,
        "input_gain": 0.5,
        "threshold": 0,
        "hp_cutoff": 300,
        "dry_wet": 50,
    },
    "limiter": {"enabled": False, "release": 0.05, "threshold": 0, "ceiling": -0.35},
}

AAC_SAMPLERATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000)
_AAC_FRAME = 1024


def write_stem_mp4(
    path: str | Path,
    mixture: np.ndarray,
    stems: dict[str, np.ndarray],
    samplerate: int,
    bitrate_kbps: int = 256,
) -> Path:
    """Write an NI stem file: the mixture and four stems as AAC tracks with stem metadata.

    Args:
        path: target file (``.stem.mp4`` by convention); parent directories are created.
        mixture: ``[C, T]`` float, C = 1 or 2 (mono is written as stereo, as Traktor wants).
        stems: ``{"drums", "bass", "other", "vocals"} -> [C, T]`` arrays; extra keys are
            ignored, missing ones raise BadRequest.
        samplerate: rate of every array, one AAC supports (44100 and 48000 in practice).
        bitrate_kbps: AAC bitrate of each of the five tracks.

    Returns:
        ``path``, written atomically.
    """
    import av

    path = Path(path)
    missing = [name for name in NI_STEMS if name not in stems]
    if missing:
        raise BadRequest(
            f"a stem file needs the stems {', '.join(NI_STEMS)}; missing {', '.join(missing)}"
        )
    if samplerate not in AAC_SAMPLERATES:
        raise BadRequest(
            f"AAC cannot store {samplerate} Hz; resample to 44100 or 48000 Hz for a stem file"
        )
    tracks = [_stereo(mixture, "mixture")] + [_stereo(stems[name], name) for name in NI_STEMS]
    length = tracks[0].shape[1]
    if any(t.shape[1] != length for t in tracks):
        raise BadRequest(f"stem file tracks differ in length: {[t.shape[1] for t in tracks]}")

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AudioIOError(f"{path.parent}: cannot create directory: {e}") from e
    # A locked temp file: another run's stale-partial cleaner leaves it alone.
    with partial_file(path) as temp:
        try:
            _encode(temp, tracks, samplerate, bitrate_kbps)
            _append_stem_box(temp, _metadata(NI_STEMS))
            os.replace(temp, path)
        except av.FFmpegError as e:
            raise AudioIOError(f"{path}: cannot encode AAC: {e}") from e
        except OSError as e:
            raise write_error(path, e) from e
    return path


def read_stem_mp4(path: str | Path) -> tuple[dict[str, np.ndarray], int]:
    """Decode every stream of an NI stem file.

    Streams are named by position, the NI order ``mixture, drums, bass, other, vocals``
    (the display names in the metadata, e.g. "Vox", are for DJs and not used here).

    Args:
        path: a ``.stem.mp4`` with five audio streams.

    Returns:
        ``({"mixture": [C, T], "drums": ..., "bass": ..., "other": ..., "vocals": ...}, sr)``
        float32, all cut to the shortest stream (they are equal in a well-formed file).
        A stream is also cut to the duration its track declares: the edit list that
        hides the AAC encoder's priming and padding, which FFmpeg applies only at the start.
    """
    import av

    path = Path(path)
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise BadAudio(path, f"not a decodable MP4 ({e.strerror or e})") from e
    with container:
        streams = list(container.streams.audio)
        if len(streams) != len(STREAM_ORDER):
            raise BadAudio(
                path,
                f"{len(streams)} audio streams; a stem file has {len(STREAM_ORDER)} "
                f"({', '.join(STREAM_ORDER)})",
            )
        rates = {s.rate for s in streams}
        if len(rates) != 1:
            raise BadAudio(path, f"streams have different sample rates: {sorted(rates)}")
        samplerate = rates.pop()
        position = {s.index: i for i, s in enumerate(streams)}
        declared = [
            round(s.duration * s.time_base * samplerate) if s.duration and s.time_base else None
            for s in streams
        ]
        blocks: list[list[np.ndarray]] = [[] for _ in streams]
        try:
            for packet in container.demux(streams):
                slot = position[packet.stream.index]
                for frame in packet.decode():
                    blocks[slot].append(frame.to_ndarray().astype(np.float32, copy=False))
        except av.FFmpegError as e:
            raise BadAudio(path, f"corrupt audio data: {e.strerror or e}") from e
    if any(not b for b in blocks):
        raise BadAudio(path, "a stream holds no audio")
    arrays = [np.concatenate(b, axis=1)[:, :n] for b, n in zip(blocks, declared, strict=True)]
    length = min(a.shape[1] for a in arrays)
    return {name: a[:, :length] for name, a in zip(STREAM_ORDER, arrays, strict=True)}, samplerate


def read_stem_metadata(path: str | Path) -> dict[str, Any] | None:
    """The JSON of the ``moov/udta/stem`` box, or None when the file has none."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            moov = _find_box(f, 0, path.stat().st_size, b"moov")
            if moov is None:
                return None
            udta = _find_box(f, moov[0] + moov[1], moov[0] + moov[2], b"udta")
            if udta is None:
                return None
            stem = _find_box(f, udta[0] + udta[1], udta[0] + udta[2], b"stem")
            if stem is None:
                return None
            f.seek(stem[0] + stem[1])
            payload = f.read(stem[2] - stem[1])
    except OSError as e:
        raise AudioIOError(f"{path}: cannot read: {e}") from e
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadAudio(path, f"stem metadata is not JSON: {e}") from e


def _stereo(x: np.ndarray, name: str) -> np.ndarray:
    """``[C, T]`` (C = 1 or 2) -> contiguous float32 ``[2, T]``."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[0] not in (1, 2):
        raise BadRequest(f"stem file track {name!r}: expected [1 or 2, T] audio, got {arr.shape}")
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 2, axis=0)
    return np.ascontiguousarray(arr)


def _metadata(names: tuple[str, ...]) -> dict[str, Any]:
    return {
        "version": 1,
        "mastering_dsp": MASTERING_DSP,
        "stems": [{"name": name, "color": NI_COLORS[name]} for name in names],
    }


def _encode(path: Path, tracks: list[np.ndarray], samplerate: int, bitrate_kbps: int) -> None:
    """Mux ``tracks`` (each ``[2, T]``) as AAC streams, in order, into an MP4 at ``path``."""
    import av

    with av.open(str(path), "w", format="mp4", options={"brand": "M4A "}) as container:
        streams = []
        for _ in tracks:
            stream = container.add_stream("aac", rate=samplerate, layout="stereo")
            stream.bit_rate = bitrate_kbps * 1000
            streams.append(stream)
        length = tracks[0].shape[1]
        # AAC frames are 1024 samples; feeding the five streams frame by frame keeps the
        # muxer's interleaving buffers small.
        for start in range(0, length, _AAC_FRAME):
            for stream, track in zip(streams, tracks, strict=True):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(track[:, start : start + _AAC_FRAME]),
                    format="fltp",
                    layout="stereo",
                )
                frame.sample_rate = samplerate
                frame.pts = start
                container.mux(stream.encode(frame))
        for stream in streams:
            container.mux(stream.encode(None))


def _box_header(f: Any, offset: int, end: int) -> tuple[bytes, int, int]:
    """(type, header size, box size) of the box at ``offset``."""
    f.seek(offset)
    head = f.read(8)
    if len(head) < 8:
        raise OSError(f"truncated MP4 box at byte {offset}")
    size, kind = struct.unpack(">I4s", head)
    header = 8
    if size == 1:
        size = struct.unpack(">Q", f.read(8))[0]
        header = 16
    elif size == 0:
        size = end - offset
    if size < header or offset + size > end:
        raise OSError(f"malformed MP4 box {kind!r} at byte {offset}")
    return kind, header, size


def _find_box(f: Any, start: int, end: int, kind: bytes) -> tuple[int, int, int] | None:
    """(offset, header size, size) of the first ``kind`` box among siblings in [start, end)."""
    offset = start
    while offset + 8 <= end:
        found, header, size = _box_header(f, offset, end)
        if found == kind:
            return offset, header, size
        offset += size
    return None


def _append_stem_box(path: Path, metadata: dict[str, Any]) -> None:
    """Add ``moov/udta/stem`` to an MP4 whose ``moov`` is its last top-level box."""
    payload = json.dumps(metadata, separators=(", ", ": ")).encode("utf-8")
    stem_box = struct.pack(">I4s", 8 + len(payload), b"stem") + payload
    with path.open("r+b") as f:
        file_size = path.stat().st_size
        moov = _find_box(f, 0, file_size, b"moov")
        if moov is None or moov[0] + moov[2] != file_size or moov[1] != 8:
            raise OSError("the muxer did not put a plain moov box at the end of the file")
        moov_at, _, moov_size = moov
        f.seek(moov_at)
        body = bytearray(f.read(moov_size))
        udta = _find_box(f, moov_at + 8, moov_at + moov_size, b"udta")
        if udta is None:
            body += struct.pack(">I4s", 8 + len(stem_box), b"udta") + stem_box
        else:
            udta_at = udta[0] - moov_at
            udta_end = udta_at + udta[2]
            if udta[1] != 8:
                raise OSError("64-bit udta box")
            body[udta_end:udta_end] = stem_box
            struct.pack_into(">I", body, udta_at, udta[2] + len(stem_box))
        struct.pack_into(">I", body, 0, len(body))
        f.seek(moov_at)
        f.write(body)
