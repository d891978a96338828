"""dsu.audio: decoding, encoding, and every way an input file can be bad.

Inputs are made on the fly in tmp_path, mostly with soundfile and PyAV directly so the
decoder is checked against files it did not write itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from dsu import audio
from dsu.audio import AudioReader, AudioWriter, conform_channels, probe, read
from dsu.errors import AudioIOError, BadAudio, BadRequest
from helpers import sdr

SR = 44100


def music(sr: int = SR, seconds: float = 1.0, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A deterministic tonal test signal with a little noise: [channels, T] float32, peak < 0.7."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(sr * seconds)) / sr
    rows = []
    for _ in range(channels):
        freqs = rng.uniform(100, min(4000, sr / 2.5), 8)
        amps = rng.uniform(0.02, 0.08, 8)
        phases = rng.uniform(0, 2 * np.pi, 8)
        tones = (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0)
        rows.append(tones + 0.01 * rng.standard_normal(len(t)))
    return np.asarray(rows, np.float32)


def sf_write(path: Path, x: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), x.T, sr, subtype=subtype)
    return path


def encode_with_pyav(path: Path, x: np.ndarray, sr: int, container_format: str) -> Path:
    """AAC-encode [2, T] with FFmpeg's own encoder (no libsndfile involved)."""
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream("aac", rate=sr, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout="stereo")
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def best_lag_correlation(reference: np.ndarray, decoded: np.ndarray, max_lag: int) -> float:
    """Highest correlation of decoded[lag:] with reference over lags 0..max_lag (codec delay)."""
    best = -1.0
    n = reference.shape[1]
    for lag in range(max_lag + 1):
        seg = decoded[0, lag : lag + n]
        if seg.shape[0] < n // 2:
            break
        m = seg.shape[0]
        best = max(best, float(np.corrcoef(reference[0, :m], seg)[0, 1]))
    return best


# --- round trips ---------------------------------------------------------------------

LOSSLESS = [("wav", 16), ("wav", 24), ("flac", 16), ("flac", 24)]


@pytest.mark.parametrize(("fmt", "bits"), LOSSLESS)
def test_lossless_round_trip_within_half_a_quantisation_step(tmp_path, fmt, bits):
    x = music(seconds=0.5)
    path = audio.write(tmp_path / f"x.{fmt}", x, SR, bit_depth=bits)
    info = probe(path)
    assert (info.format, info.samplerate, info.channels, info.frames) == (fmt, SR, 2, x.shape[1])
    assert sf.info(str(path)).subtype == f"PCM_{bits}"
    y, sr = read(path)
    assert sr == SR and y.dtype == np.float32 and y.shape == x.shape
    step = 2.0 ** -(bits - 1)
    assert np.abs(y - x).max() <= step / 2 + 1e-9


def test_float_wav_round_trip_is_exact_and_unclipped(tmp_path):
    x = music(seconds=0.5)
    x[0, 100] = 1.75  # float wav keeps out-of-range values
    path = audio.write(tmp_path / "x.wav", x, SR, bit_depth=32)
    assert sf.info(str(path)).subtype == "FLOAT"
    y, _ = read(path)
    np.testing.assert_array_equal(y, x)


def test_integer_formats_clip_instead_of_wrapping(tmp_path):
    x = np.array([[1.5, -1.5, 0.25]], np.float32)
    with audio.AudioWriter(tmp_path / "clip.wav", SR, 1) as writer:
        writer.write(x)
    assert writer.clipped == 2
    y, _ = read(writer.path)
    np.testing.assert_allclose(y[0], [32767 / 32768, -1.0, 0.25])


@pytest.mark.parametrize(
    ("fmt", "bitrate", "min_snr"),
    [("mp3", None, 25.0), ("mp3", 128, 12.0), ("ogg", None, 15.0)],
)
def test_lossy_round_trip_keeps_length_and_quality(tmp_path, fmt, bitrate, min_snr):
    x = music(seconds=1.0)
    path = audio.write(tmp_path / f"x.{fmt}", x, SR, bitrate=bitrate)
    y, sr = read(path)
    assert sr == SR and y.shape == x.shape  # gapless: the LAME tag / Ogg granules trim delay
    assert sdr(x, y) > min_snr
    assert probe(path).format == fmt


def test_mp3_is_cbr_at_the_requested_bitrate(tmp_path):
    x = music(seconds=1.0)
    for kbps in (None, 192):
        path = audio.write(tmp_path / f"b{kbps}.mp3", x, SR, bitrate=kbps)
        with av.open(str(path)) as container:
            assert container.streams.audio[0].bit_rate == (kbps or 320) * 1000
    # CBR: the audio payload size follows from the bitrate alone (header/tag bytes aside).
    size_kbps = os.path.getsize(tmp_path / "bNone.mp3") * 8 / 1000 / 1.0
    assert 315 < size_kbps < 345


def test_mp3_bitrate_selection_raises_on_impossible_requests(tmp_path):
    with pytest.raises(BadRequest, match="bitrate"):
        AudioWriter(tmp_path / "x.mp3", SR, 2, bitrate=100)
    with pytest.raises(BadRequest, match="96000 Hz"):
        AudioWriter(tmp_path / "x.mp3", 96000, 2)
    with pytest.raises(BadRequest, match="mono or stereo"):
        AudioWriter(tmp_path / "x.mp3", SR, 6)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("container_format", "suffix"), [("mp4", "m4a"), ("adts", "aac")])
def test_aac_made_by_ffmpeg_decodes_through_pyav(tmp_path, container_format, suffix):
    x = music(seconds=1.0)
    path = encode_with_pyav(tmp_path / f"x.{suffix}", x, SR, container_format)
    with pytest.raises(RuntimeError):  # libsndfile cannot, so this exercises the PyAV path
        sf.info(str(path))
    info = probe(path)
    assert (info.format, info.samplerate, info.channels, info.frames_exact) == (
        suffix,
        SR,
        2,
        False,
    )
    y, sr = read(path)
    assert sr == SR and y.shape[0] == 2 and y.dtype == np.float32
    # AAC adds priming and padding (whole 1024-frame packets): never drops content.
    assert x.shape[1] <= y.shape[1] <= x.shape[1] + 3 * 1024
    assert abs(y.shape[1] - info.frames) <= 3 * 1024
    assert best_lag_correlation(x, y, max_lag=2 * 1024 + 64) > 0.98


def test_write_takes_the_format_from_the_extension_and_rejects_unknown_ones(tmp_path):
    path = audio.write(tmp_path / "x.flac", music(seconds=0.1), SR)
    assert sf.info(str(path)).format == "FLAC"
    with pytest.raises(BadRequest, match="extension"):
        audio.write(tmp_path / "x.xyz", music(seconds=0.1), SR)
    with pytest.raises(BadRequest, match="unknown output format"):
        audio.write(tmp_path / "x.wav", music(seconds=0.1), SR, format="aiff")
    with pytest.raises(BadRequest, match="bit depths"):
        audio.write(tmp_path / "x.flac", music(seconds=0.1), SR, bit_depth=32)
    assert [p.name for p in tmp_path.iterdir()] == ["x.flac"]


def test_output_formats_and_extensions():
    assert audio.OUTPUT_FORMATS == ("wav", "flac", "mp3", "ogg")
    assert [audio.extension_for(f) for f in audio.OUTPUT_FORMATS] == ["wav", "flac", "mp3", "ogg"]
    assert audio.extension_for("WAV") == "wav"
    with pytest.raises(BadRequest):
        audio.extension_for("wma")


# --- streaming decode ------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["wav", "flac"])
def test_reader_yields_exactly_info_frames_and_matches_read(tmp_path, suffix):
    x = music(seconds=0.7, channels=2)
    path = sf_write(tmp_path / f"x.{suffix}", x, subtype="PCM_24")
    with AudioReader(path, block_frames=1000) as reader:
        blocks = list(reader)
        frames = reader.info.frames
    assert frames == x.shape[1]
    assert sum(b.shape[1] for b in blocks) == frames
    assert all(1 <= b.shape[1] <= 1000 and b.shape[0] == 2 for b in blocks)
    assert all(b.dtype == np.float32 and b.flags.c_contiguous for b in blocks)
    whole, _ = read(path)
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), whole)


def test_reader_blocks_from_pyav_are_bounded_and_complete(tmp_path):
    path = encode_with_pyav(tmp_path / "x.m4a", music(seconds=1.0), SR, "mp4")
    with AudioReader(path, block_frames=5000) as reader:
        blocks = list(reader)
    assert all(b.shape == (2, 5000) for b in blocks[:-1]) and 1 <= blocks[-1].shape[1] <= 5000
    whole, _ = read(path)
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), whole)


def test_reader_iterates_once(tmp_path):
    path = sf_write(tmp_path / "x.wav", music(seconds=0.1))
    with AudioReader(path) as reader:
        list(reader)
        with pytest.raises(RuntimeError):
            iter(reader)


def test_float_wav_values_come_back_as_stored(tmp_path):
    x = music(seconds=0.2)
    x[1, 5] = -3.0
    y, _ = read(sf_write(tmp_path / "loud.wav", x, subtype="FLOAT"))
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize(("sr", "subtype"), [(8000, "PCM_16"), (192000, "PCM_24")])
def test_extreme_sample_rates_decode(tmp_path, sr, subtype):
    x = music(sr=sr, seconds=0.25)
    path = sf_write(tmp_path / f"r{sr}.wav", x, sr=sr, subtype=subtype)
    assert probe(path).samplerate == sr
    y, got = read(path)
    assert got == sr and y.shape == x.shape


@pytest.mark.parametrize("suffix", ["wav", "flac"])
def test_one_sample_file_decodes_to_one_frame(tmp_path, suffix):
    x = np.array([[0.25], [-0.5]], np.float32)
    path = sf_write(tmp_path / f"one.{suffix}", x)
    assert probe(path).frames == 1
    y, _ = read(path)
    np.testing.assert_allclose(y, x, atol=2**-16)


def test_eight_channel_file_needs_downmix(tmp_path):
    x = music(seconds=0.2, channels=8)
    path = sf_write(tmp_path / "surround.wav", x, subtype="FLOAT")
    y, _ = read(path)
    assert y.shape == (8, x.shape[1])
    with pytest.raises(BadAudio) as err:
        conform_channels(y, 2, downmix=False, path=path)
    assert err.value.path == str(path)
    assert "has 8 channels" in str(err.value) and "--downmix" in str(err.value)
    stereo = conform_channels(y, 2, downmix=True, path=path)
    np.testing.assert_allclose(stereo[0], x[0::2].mean(0), atol=1e-7)
    np.testing.assert_allclose(stereo[1], x[1::2].mean(0), atol=1e-7)


# --- bad inputs ------------------------------------------------------------------------


def assert_bad_audio(path: Path, match: str) -> BadAudio:
    """probe() or decoding must raise BadAudio naming the file, with `match` in it."""
    with pytest.raises(BadAudio, match=match) as err:
        read(path)
    assert err.value.path == str(path) and str(path) in str(err.value)
    assert err.value.code == "bad_audio"
    return err.value


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(BadAudio, match="empty file"):
        probe(path)
    assert_bad_audio(path, "empty file")


@pytest.mark.parametrize("suffix", ["wav", "mp3", "flac", "m4a", "ogg"])
def test_garbage_bytes(tmp_path, suffix):
    path = tmp_path / f"garbage.{suffix}"
    path.write_bytes(np.random.default_rng(7).bytes(20000))
    with pytest.raises(BadAudio, match="not a decodable audio file"):
        probe(path)
    assert_bad_audio(path, "not a decodable audio file")


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are not the samples you are looking for\n" * 50)
    assert_bad_audio(path, "not a decodable audio file")


def test_truncated_wav(tmp_path):
    path = sf_write(tmp_path / "cut.wav", music(seconds=1.0))
    data = path.read_bytes()
    path.write_bytes(data[: 44 + 4 * 10000 + 2])  # header + 10000.5 stereo 16-bit frames
    message = f"truncated: header says {SR} frames, file holds 10000"
    with pytest.raises(BadAudio, match=message):
        probe(path)
    assert_bad_audio(path, message)


def test_truncated_flac(tmp_path):
    path = sf_write(tmp_path / "cut.flac", music(seconds=1.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    assert probe(path).frames == SR  # STREAMINFO still promises the full length
    error = assert_bad_audio(path, f"truncated: header says {SR} frames, file holds ")
    holds = int(str(error).rsplit(" ", 1)[1])
    assert 0 < holds < SR
    received = 0
    with AudioReader(path) as reader, pytest.raises(BadAudio, match="truncated"):
        for block in reader:
            received += block.shape[1]
    assert received <= holds


def test_flac_damaged_in_the_middle_is_corrupt_not_truncated(tmp_path):
    path = sf_write(tmp_path / "damaged.flac", music(seconds=1.0))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(b ^ 0x55 for b in data[middle : middle + 200])
    path.write_bytes(bytes(data))
    assert_bad_audio(path, "corrupt audio data")


def test_zero_length_wav(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(str(path), np.zeros((0, 2), np.float32), SR)
    with pytest.raises(BadAudio, match=r"no audio samples \(zero length\)"):
        probe(path)
    assert_bad_audio(path, "zero length")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_wav(tmp_path, bad):
    x = music(seconds=1.5)
    x[1, 50000] = bad
    path = sf_write(tmp_path / "nonfinite.wav", x, subtype="FLOAT")
    assert_bad_audio(path, "contains NaN or infinite samples")
    # Streaming: the clean blocks before the bad one arrive first, then the error.
    received = 0
    with (
        AudioReader(path, block_frames=10000) as reader,
        pytest.raises(BadAudio, match="frame 50000"),
    ):
        for block in reader:
            received += block.shape[1]
    assert received == 50000


def test_missing_path_is_an_io_error(tmp_path):
    path = tmp_path / "nowhere" / "song.wav"
    with pytest.raises(AudioIOError, match="no such file") as err:
        probe(path)
    assert str(path) in str(err.value) and err.value.code == "io_error"
    with pytest.raises(AudioIOError):
        read(path)


def test_directory_is_an_io_error(tmp_path):
    with pytest.raises(AudioIOError, match="is a directory") as err:
        AudioReader(tmp_path)
    assert str(tmp_path) in str(err.value)


# --- atomic writes ---------------------------------------------------------------------


def test_writer_publishes_only_on_commit(tmp_path):
    target = tmp_path / "out" / "deep" / "vocals.wav"
    writer = AudioWriter(target, SR, 2)
    writer.write(music(seconds=0.1))
    assert not target.exists()
    partials = list(target.parent.iterdir())
    assert len(partials) == 1 and partials[0].name.startswith(".vocals.wav.partial-")
    assert writer.commit() == target
    assert [p.name for p in target.parent.iterdir()] == ["vocals.wav"]
    assert probe(target).frames == round(0.1 * SR)


def test_exception_mid_write_leaves_nothing(tmp_path):
    target = tmp_path / "drums.flac"
    with pytest.raises(KeyboardInterrupt), AudioWriter(target, SR, 2) as writer:
        writer.write(music(seconds=0.2))
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_bad_block_aborts_and_keeps_the_previous_file(tmp_path):
    target = tmp_path / "bass.wav"
    sf_write(target, np.zeros((2, 10), np.float32))
    before = target.read_bytes()
    with pytest.raises(ValueError, match="block"), AudioWriter(target, SR, 2) as writer:
        writer.write(music(seconds=0.1))
        writer.write(np.zeros((3, 10), np.float32))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["bass.wav"]


def test_abort_removes_the_temp_file_and_context_exit_commits(tmp_path):
    writer = AudioWriter(tmp_path / "a.mp3", SR, 2)
    writer.write(music(seconds=0.1))
    writer.abort()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with AudioWriter(tmp_path / "b.ogg", SR, 1) as writer:
        writer.write(music(seconds=0.3, channels=1)[0])
    assert [p.name for p in tmp_path.iterdir()] == ["b.ogg"]
    assert probe(tmp_path / "b.ogg").channels == 1


def test_streaming_writes_equal_one_shot_write(tmp_path):
    x = music(seconds=1.0)
    with AudioWriter(tmp_path / "blocks.flac", SR, 2) as writer:
        for start in range(0, x.shape[1], 7000):
            writer.write(x[:, start : start + 7000])
    audio.write(tmp_path / "whole.flac", x, SR)
    np.testing.assert_array_equal(
        read(tmp_path / "blocks.flac")[0], read(tmp_path / "whole.flac")[0]
    )


# --- the real material in ../shared ----------------------------------------------------


@pytest.mark.shared
def test_real_musdb_mixture(mu_dir):
    path = mu_dir / "mixture.wav"
    info = probe(path)
    assert (info.samplerate, info.channels, info.frames, info.format) == (SR, 2, 308700, "wav")
    assert info.duration == pytest.approx(7.0)
    x, sr = read(path)
    assert sr == SR and x.shape == (2, 308700)
    assert float(np.sqrt((x**2).mean())) > 0.01 and float(np.abs(x).max()) <= 1.0


@pytest.mark.shared
def test_real_stem_mp4_first_stream(shared_dir):
    paths = sorted((shared_dir / "audio" / "stems").glob("*.stem.mp4"))
    assert len(paths) == 2
    for path in paths:
        info = probe(path)
        assert (info.format, info.samplerate, info.channels) == ("mp4", SR, 2)
        x, _ = read(path)
        assert x.shape[0] == 2 and abs(x.shape[1] - info.frames) <= 2048
        assert 6.0 < x.shape[1] / SR < 7.5
        assert float(np.sqrt((x**2).mean())) > 0.01
        # Stream 0 is the mixture: it must equal what FFmpeg decodes for that stream itself.
        with av.open(str(path)) as container:
            ref = np.concatenate(
                [f.to_ndarray() for f in container.decode(container.streams.audio[0])], axis=1
            )
        np.testing.assert_array_equal(x, ref)


def test_importing_dsu_audio_loads_neither_torch_nor_pyav():
    code = "import sys, dsu.audio; print('torch' in sys.modules, 'av' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["False", "False"]
