"""Files whose length headers lie: decoding trusts the stream, never the header.

Every file is made here: MP3s by DSU's own writer (libsndfile + LAME) or libsndfile's VBR
mode, then edited the way real files go wrong (a Xing tag stripped or zeroed, two files
joined with ``cat``, a copy cut short), and WAV/FLAC/Ogg headers patched byte by byte.
"""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsu import audio
from dsu.audio import AudioReader, probe, read
from dsu.errors import BadAudio
from test_audio import music

SR = 44100
MP3_FRAME = 1152
# LAME's encoder delay (576) plus the mpg123/FFmpeg decoder delay (529): what a decoder
# outputs before the first source sample when no LAME tag says to skip it.
CODEC_DELAY = 576 + 529
_MPEG1_L3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)


def first_frame_length(data: bytes) -> int:
    """Bytes of the MPEG-1 layer III frame at the start of ``data`` (44.1 kHz)."""
    assert data[0] == 0xFF and data[1] & 0xFE == 0xFA, "not an MPEG-1 layer III frame"
    kbps = _MPEG1_L3_KBPS[data[2] >> 4]
    return 144 * kbps * 1000 // SR + ((data[2] >> 1) & 1)


def vbr_mp3(path: Path, x: np.ndarray) -> Path:
    """LAME VBR through libsndfile: the first frame holds a Xing tag."""
    mp3 = {"format": "MP3", "subtype": "MPEG_LAYER_III", "bitrate_mode": "VARIABLE"}
    with sf.SoundFile(str(path), "w", SR, x.shape[0], **mp3) as f:
        f.write(x.T)
    assert path.read_bytes()[36:40] == b"Xing"
    return path


def aligned_correlation(reference: np.ndarray, decoded: np.ndarray, max_lag: int) -> float:
    """Correlation of channel 0 of ``decoded`` with ``reference`` at the best lag in
    [0, max_lag] (codec delay), found by FFT cross-correlation."""
    ref, dec = reference[0].astype(np.float64), decoded[0].astype(np.float64)
    n = len(ref) + len(dec)
    spectrum = np.fft.rfft(dec, n) * np.conj(np.fft.rfft(ref, n))
    lag = int(np.argmax(np.fft.irfft(spectrum, n)[: max_lag + 1]))
    seg = dec[lag : lag + len(ref)]
    return float(np.corrcoef(ref[: len(seg)], seg)[0, 1])


def assert_full_length(path: Path, true_frames: int, slack: int) -> np.ndarray:
    """probe() and read() both report at least ``true_frames``, at most ``slack`` more."""
    info = probe(path)
    assert true_frames <= info.frames <= true_frames + slack, (info.frames, true_frames)
    y, sr = read(path)
    assert sr == SR and y.shape[0] == 2
    assert true_frames <= y.shape[1] <= true_frames + slack, (y.shape[1], true_frames)
    assert abs(y.shape[1] - info.frames) <= MP3_FRAME
    return y


# --- MP3 with a missing or wrong length header ----------------------------------------


def test_vbr_mp3_without_xing_tag_decodes_to_the_end(tmp_path):
    x = music(seconds=6.0, seed=1)
    data = vbr_mp3(tmp_path / "vbr.mp3", x).read_bytes()
    path = tmp_path / "noxing.mp3"
    path.write_bytes(data[first_frame_length(data) :])  # the Xing frame is gone
    y = assert_full_length(path, x.shape[1], MP3_FRAME + CODEC_DELAY)
    assert aligned_correlation(x, y, 2 * CODEC_DELAY) > 0.95
    tail = slice(-SR, -2 * MP3_FRAME)  # the last second is really there, not silence
    assert np.sqrt((y[:, tail] ** 2).mean()) > 0.5 * np.sqrt((x**2).mean())


def test_zeroed_info_frame_mp3_decodes_to_the_end(tmp_path):
    x = music(seconds=12.0, seed=2)
    data = bytearray(vbr_mp3(tmp_path / "vbr.mp3", x).read_bytes())
    n = first_frame_length(data)
    data[:n] = bytes(n)
    path = tmp_path / "zeroed.mp3"
    path.write_bytes(bytes(data))
    y = assert_full_length(path, x.shape[1], MP3_FRAME + CODEC_DELAY)
    assert aligned_correlation(x, y, 2 * CODEC_DELAY) > 0.95


def test_two_dsu_mp3s_joined_with_cat_decode_both_and_warn(tmp_path, caplog):
    first, second = music(seconds=3.0, seed=3), music(seconds=3.0, seed=4)
    a = audio.write(tmp_path / "a.mp3", first, SR)
    b = audio.write(tmp_path / "b.mp3", second, SR)
    path = tmp_path / "joined.mp3"
    path.write_bytes(a.read_bytes() + b.read_bytes())
    total = first.shape[1] + second.shape[1]
    # The second file's Info frame decodes as one silent frame, and its delay and padding
    # are no longer trimmed: up to two frames and a codec delay more than the sources.
    with caplog.at_level(logging.WARNING, logger="dsu.audio"):
        y = assert_full_length(path, total, 2 * MP3_FRAME + CODEC_DELAY)
    assert aligned_correlation(first, y, 16) > 0.99
    assert aligned_correlation(second, y[:, first.shape[1] :], 2 * MP3_FRAME + CODEC_DELAY) > 0.99
    warnings = [r.getMessage() for r in caplog.records if r.name == "dsu.audio"]
    assert len(warnings) == 1  # probed several times, said once
    assert str(path) in warnings[0] and f"header says {first.shape[1]} frames" in warnings[0]


def test_intact_mp3_keeps_its_exact_length_and_says_nothing(tmp_path, caplog):
    x = music(seconds=2.0, seed=5)
    path = audio.write(tmp_path / "ok.mp3", x, SR)
    with caplog.at_level(logging.WARNING, logger="dsu.audio"):
        assert probe(path).frames == x.shape[1]
        assert read(path)[0].shape == x.shape
    assert not [r for r in caplog.records if r.name == "dsu.audio"]


def test_mp3_probe_counts_frames_behind_an_id3_tag_and_before_an_id3v1_tag(tmp_path):
    x = music(seconds=2.0, seed=6)
    data = vbr_mp3(tmp_path / "vbr.mp3", x).read_bytes()
    body = data[first_frame_length(data) :]
    id3v2 = b"ID3\x04\x00\x00" + bytes([0, 0, 0x01, 0x00]) + bytes(128)  # 128-byte tag
    id3v1 = b"TAG" + b"title".ljust(125, b"\x00")
    path = tmp_path / "tagged.mp3"
    path.write_bytes(id3v2 + body + id3v1)
    assert_full_length(path, x.shape[1], MP3_FRAME + CODEC_DELAY)


# --- truncated files are refused -------------------------------------------------------


def test_truncated_mp3_is_refused_like_a_truncated_wav(tmp_path):
    x = music(seconds=3.0, seed=7)
    data = audio.write(tmp_path / "full.mp3", x, SR).read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 2 + 7])  # mid-frame
    with pytest.raises(BadAudio, match=f"truncated: header says {x.shape[1]} frames, file holds "):
        probe(cut)
    with pytest.raises(BadAudio, match="truncated") as err:
        read(cut)
    assert err.value.code == "bad_audio" and err.value.path == str(cut)
    holds = int(str(err.value).rsplit(" ", 1)[1])
    assert 0.4 * x.shape[1] < holds < 0.6 * x.shape[1]


def test_mp3_cut_on_a_frame_boundary_is_truncated_by_its_info_tag(tmp_path):
    x = music(seconds=3.0, seed=8)
    data = audio.write(tmp_path / "full.mp3", x, SR).read_bytes()
    pos = 0
    for _ in range(60):  # the Info frame and 59 audio frames, whole
        pos += first_frame_length(data[pos:])
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[:pos])
    with pytest.raises(BadAudio, match=f"truncated: header says {x.shape[1]} frames"):
        read(cut)


def wav_with_data_size(path: Path, size: int) -> Path:
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", size)
    path.write_bytes(bytes(data))
    return path


def wav_data_size(path: Path) -> int:
    data = path.read_bytes()
    at = data.find(b"data")
    return struct.unpack("<I", data[at + 4 : at + 8])[0]


@pytest.mark.parametrize(
    ("subtype", "extra_bytes"),
    [("PCM_16", 2), ("PCM_24", 3 * 2 * 500), ("IMA_ADPCM", 4096), ("MS_ADPCM", 100)],
)
def test_wav_whose_header_claims_more_data_than_the_file_holds(tmp_path, subtype, extra_bytes):
    path = tmp_path / "inflated.wav"
    sf.write(str(path), music(seconds=1.0).T, SR, subtype=subtype)
    frames = sf.info(str(path)).frames
    wav_with_data_size(path, wav_data_size(path) + extra_bytes)
    message = "truncated: header says [0-9]+ frames, file holds " + str(frames)
    with pytest.raises(BadAudio, match=message):
        probe(path)
    with pytest.raises(BadAudio, match=message) as err:
        read(path)
    assert err.value.code == "bad_audio" and err.value.path == str(path)


def test_rf64_whose_ds64_claims_more_data_than_the_file_holds(tmp_path):
    path = tmp_path / "big.wav"
    sf.write(str(path), music(seconds=0.5).T, SR, subtype="PCM_16", format="RF64")
    data = bytearray(path.read_bytes())
    at = data.find(b"ds64")
    real = struct.unpack("<Q", data[at + 16 : at + 24])[0]
    data[at + 16 : at + 24] = struct.pack("<Q", real + 4 * 1000)
    path.write_bytes(bytes(data))
    with pytest.raises(BadAudio, match=f"truncated: header says {real // 4 + 1000} frames"):
        read(path)


def test_streamed_wav_placeholder_size_still_reads_every_frame(tmp_path):
    x = music(seconds=0.5)
    path = wav_with_data_size(sf_write_wav(tmp_path / "pipe.wav", x), 0xFFFFFFFF)
    assert read(path)[0].shape == x.shape


def sf_write_wav(path: Path, x: np.ndarray) -> Path:
    sf.write(str(path), x.T, SR, subtype="PCM_16")
    return path


# --- FLAC and Ogg: the stream, not STREAMINFO or the first chain ----------------------


def flac_with_total_samples(path: Path, total: int) -> Path:
    """Patch STREAMINFO's 36-bit total-samples field (bytes 8..42 of the file)."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO comes first
    field = int.from_bytes(data[8 + 10 : 8 + 18], "big")
    field = (field & ~((1 << 36) - 1)) | total
    data[8 + 10 : 8 + 18] = field.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("total", [20000, 0], ids=["understated", "unknown"])
def test_flac_whose_streaminfo_understates_the_length_decodes_every_frame(tmp_path, caplog, total):
    x = music(seconds=1.0, seed=9)
    path = tmp_path / "short_header.flac"
    sf.write(str(path), x.T, SR, subtype="PCM_16")
    flac_with_total_samples(path, total)
    with caplog.at_level(logging.WARNING, logger="dsu.audio"):
        info = probe(path)
        y, _ = read(path)
        with AudioReader(path, block_frames=5000) as reader:
            streamed = np.concatenate(list(reader), axis=1)
    assert info.frames == x.shape[1] and info.frames_exact
    assert np.abs(y - x).max() <= 2.0**-16  # lossless: within half a 16-bit step
    np.testing.assert_array_equal(streamed, y)
    warned = [r.getMessage() for r in caplog.records if r.name == "dsu.audio"]
    # STREAMINFO 0 means "unknown", which is no lie; an understated count is warned once.
    assert [f"header says {total} frames" in w for w in warned] == ([True] if total else [])


def test_chained_ogg_decodes_every_chain(tmp_path):
    first, second = music(seconds=1.0, seed=10), music(seconds=1.0, seed=11)
    a = tmp_path / "a.ogg"
    b = tmp_path / "b.ogg"
    sf.write(str(a), first.T, SR, format="OGG", subtype="VORBIS")
    sf.write(str(b), second.T, SR, format="OGG", subtype="VORBIS")
    path = tmp_path / "chained.ogg"
    path.write_bytes(a.read_bytes() + b.read_bytes())
    total = first.shape[1] + second.shape[1]
    assert total <= probe(path).frames <= total + 2048
    y, _ = read(path)
    assert total <= y.shape[1] <= total + 2048
    assert aligned_correlation(second, y[:, first.shape[1] :], 2048) > 0.98


# --- end to end: the Python API and the CLI --------------------------------------------


def lying_mp3(tmp_path: Path, seconds: float) -> tuple[Path, int]:
    """A VBR mp3 whose Xing frame is zeroed; returns it and the source length."""
    x = music(seconds=seconds, seed=12)
    data = bytearray(vbr_mp3(tmp_path / "vbr.mp3", x).read_bytes())
    n = first_frame_length(data)
    data[:n] = bytes(n)
    path = tmp_path / "lying.mp3"
    path.write_bytes(bytes(data))
    return path, x.shape[1]


def test_api_separates_the_whole_stream_of_a_lying_mp3(tmp_path):
    from dsu.api import Separator

    path, frames = lying_mp3(tmp_path, 6.0)
    decoded = read(path)[0].shape[1]
    assert frames <= decoded
    result = Separator("center", device="cpu").separate(path)
    assert result.stems is not None
    assert {stem.shape[-1] for stem in result.stems.values()} == {decoded}


def test_cli_separate_writes_full_length_stems_for_a_lying_mp3(tmp_path):
    path, frames = lying_mp3(tmp_path, 6.0)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "dsu", "separate", str(path), "-m", "center", "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    stems = sorted((out / "lying").glob("*.wav"))
    assert stems, done.stderr
    for stem in stems:
        info = sf.info(str(stem))
        assert frames <= info.frames <= frames + MP3_FRAME + CODEC_DELAY, stem.name
