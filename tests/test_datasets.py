"""Datasets and NI stem files: the real MUSDB stem files, MUSDB(-HQ) layouts, round trips."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsu import audio
from dsu.audio.stems_mp4 import (
    NI_COLORS,
    NI_STEMS,
    STREAM_ORDER,
    read_stem_metadata,
    read_stem_mp4,
    write_stem_mp4,
)
from dsu.datasets import Track, find_tracks
from dsu.errors import BadAudio, BadRequest
from helpers import sdr

ROCK = "Music Delta - 80s Rock"
FALCON = "The Easton Ellises - Falcon 69"


def mu_audio(
    mu_dir: Path, seconds: float | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    def load(name: str) -> np.ndarray:
        data, _ = sf.read(mu_dir / f"{name}.wav", dtype="float32", always_2d=True)
        return data.T if seconds is None else data.T[:, : int(seconds * 44100)]

    return load("mixture"), {name: load(name) for name in NI_STEMS}


def mp4_boxes(data: bytes, start: int, end: int) -> dict[bytes, list[tuple[int, int]]]:
    """Top-level boxes of ``data[start:end]``: type -> [(payload offset, payload end)]."""
    out: dict[bytes, list[tuple[int, int]]] = {}
    offset = start
    while offset < end:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        out.setdefault(kind, []).append((offset + 8, offset + size))
        offset += size
    return out


# ---- the real MUSDB18 stem files ------------------------------------------------------


@pytest.mark.shared
@pytest.mark.parametrize(
    ("name", "frames", "min_snr_db"),
    [
        # measured: 31.6 dB over the whole clip
        (ROCK, 299_880, 30.0),
        # measured: 21.0 dB; this excerpt's mixture is a little louder than the stem sum
        # (gain 0.993) and every one of its five streams carries the same ~1.0 click in
        # its last 2048 samples, which therefore cannot cancel and is excluded
        (FALCON, 268_288, 20.0),
    ],
)
def test_musdb_stem_files_decode_to_five_streams_that_sum_to_the_mixture(
    shared_dir: Path, name: str, frames: int, min_snr_db: float
) -> None:
    streams, rate = read_stem_mp4(shared_dir / "audio" / "stems" / f"{name}.stem.mp4")
    assert rate == 44100
    assert list(streams) == list(STREAM_ORDER)
    # the declared track duration (edit list) is honoured, equal for all five streams
    assert {s.shape for s in streams.values()} == {(2, frames)}
    assert all(s.dtype == np.float32 for s in streams.values())
    stem_sum = sum(streams[n] for n in NI_STEMS)
    body = slice(0, frames - 2048)
    assert sdr(streams["mixture"][:, body], stem_sum[:, body]) >= min_snr_db
    for stem in NI_STEMS:
        assert np.sqrt(np.mean(streams[stem] ** 2)) > 1e-3, f"{stem} is silent"


@pytest.mark.shared
def test_stem_metadata_of_real_files(shared_dir: Path) -> None:
    falcon = read_stem_metadata(shared_dir / "audio" / "stems" / f"{FALCON}.stem.mp4")
    assert falcon is not None
    assert [s["name"] for s in falcon["stems"]] == ["Drums", "Bass", "Other", "Vox"]
    assert falcon["mastering_dsp"]["limiter"]["enabled"] is True
    # the MUSDB release of this track carries no stem box; streams are named by position
    assert read_stem_metadata(shared_dir / "audio" / "stems" / f"{ROCK}.stem.mp4") is None


# ---- writing NI stem files -------------------------------------------------------------


@pytest.mark.shared
def test_write_stem_mp4_round_trip_with_traktor_metadata(mu_dir: Path, tmp_path: Path) -> None:
    mixture, stems = mu_audio(mu_dir)
    target = tmp_path / "out" / "Mu - Too Bright.stem.mp4"
    assert write_stem_mp4(target, mixture, stems, 44100) == target
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left

    decoded, rate = read_stem_mp4(target)
    assert rate == 44100
    assert {s.shape for s in decoded.values()} == {mixture.shape}  # priming and padding gone
    assert sdr(mixture, decoded["mixture"]) > 25
    for name in NI_STEMS:
        assert sdr(stems[name], decoded[name]) > 25, name
    # an ordinary decoder plays the first stream: the mixture
    first, first_rate = audio.read(target)
    assert first_rate == 44100 and sdr(mixture, first[:, : mixture.shape[1]]) > 25

    meta = read_stem_metadata(target)
    assert meta is not None and meta["version"] == 1
    assert meta["stems"] == [{"name": n, "color": NI_COLORS[n]} for n in NI_STEMS]
    assert set(meta["mastering_dsp"]) == {"compressor", "limiter"}

    data = target.read_bytes()
    top = mp4_boxes(data, 0, len(data))
    assert data[top[b"ftyp"][0][0] : top[b"ftyp"][0][0] + 4] == b"M4A "
    moov = mp4_boxes(data, *top[b"moov"][0])
    assert len(moov[b"trak"]) == 5
    udta = mp4_boxes(data, *moov[b"udta"][0])
    begin, end = udta[b"stem"][0]
    assert json.loads(data[begin:end]) == meta
    # only the mixture track is enabled (tkhd flag 1), as in NI's own files
    flags = []
    for trak in moov[b"trak"]:
        tkhd_begin, _ = mp4_boxes(data, *trak)[b"tkhd"][0]
        flags.append(int.from_bytes(data[tkhd_begin + 1 : tkhd_begin + 4], "big") & 1)
    assert flags == [1, 0, 0, 0, 0]


def test_write_stem_mp4_refuses_bad_input_and_leaves_nothing(tmp_path: Path) -> None:
    mix = np.zeros((2, 4410), np.float32)
    stems = {name: mix for name in NI_STEMS}
    with pytest.raises(BadRequest, match="missing vocals"):
        write_stem_mp4(tmp_path / "a.stem.mp4", mix, {k: stems[k] for k in NI_STEMS[:3]}, 44100)
    with pytest.raises(BadRequest, match="AAC cannot store 44000 Hz"):
        write_stem_mp4(tmp_path / "b.stem.mp4", mix, stems, 44000)
    with pytest.raises(BadRequest, match="differ in length"):
        write_stem_mp4(tmp_path / "c.stem.mp4", mix, {**stems, "bass": mix[:, :100]}, 44100)
    assert list(tmp_path.iterdir()) == []


def test_write_stem_mp4_mono_becomes_stereo(tmp_path: Path) -> None:
    t = np.arange(48000) / 48000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    path = write_stem_mp4(tmp_path / "mono.stem.mp4", tone, {n: tone for n in NI_STEMS}, 48000)
    decoded, rate = read_stem_mp4(path)
    assert rate == 48000
    assert decoded["vocals"].shape == (2, 48000)
    assert sdr(np.repeat(tone, 2, axis=0), decoded["vocals"]) > 25


def test_read_stem_mp4_rejects_ordinary_audio(tmp_path: Path) -> None:
    path = tmp_path / "plain.wav"
    sf.write(path, np.zeros((1000, 2), np.float32), 44100)
    with pytest.raises(BadAudio):
        read_stem_mp4(path)


# ---- datasets --------------------------------------------------------------------------


@pytest.mark.shared
def test_shared_audio_is_a_dataset_of_three_tracks(shared_dir: Path, mu_dir: Path) -> None:
    tracks = find_tracks(shared_dir / "audio")
    assert [t.key for t in tracks] == [
        "musdb18-mu-too-bright",
        f"stems/{ROCK}",
        f"stems/{FALCON}",
    ]
    mu = tracks[0].load()
    assert mu.samplerate == 44100
    assert sorted(mu.stems) == sorted(NI_STEMS)
    assert all(s.shape == mu.mixture.shape == (2, 308_700) for s in mu.stems.values())
    # shared/README: the stems sum to the mixture within -32.8 dB
    assert sdr(mu.mixture, sum(mu.stems.values())) == pytest.approx(32.8, abs=0.1)
    rock = tracks[1].load()
    assert rock.mixture.shape == (2, 299_880) and sorted(rock.stems) == sorted(NI_STEMS)
    # a track folder or a stem file on its own is a one-track dataset
    assert [t.key for t in find_tracks(mu_dir)] == ["musdb18-mu-too-bright"]
    assert [t.key for t in find_tracks(tracks[2].path)] == [FALCON]


@pytest.mark.shared
def test_musdb18_and_hq_layouts_with_subsets(mu_dir: Path, tmp_path: Path) -> None:
    mixture, stems = mu_audio(mu_dir, seconds=1.0)
    hq = tmp_path / "musdb18hq"
    for subset, name in (("train", "A"), ("test", "B"), ("test", "C")):
        folder = hq / subset / name
        folder.mkdir(parents=True)
        for stem, data in {"mixture": mixture, **stems}.items():
            sf.write(folder / f"{stem}.flac", data.T, 44100, subtype="PCM_24")
    (hq / "test" / "C" / ".vocals.wav.partial-1234").write_bytes(b"junk")  # ignored
    stem_files = tmp_path / "musdb18"
    write_stem_mp4(stem_files / "test" / "D.stem.mp4", mixture, stems, 44100)
    write_stem_mp4(stem_files / "train" / "E.stem.mp4", mixture, stems, 44100)

    assert [t.key for t in find_tracks(hq)] == ["test/B", "test/C", "train/A"]
    assert [t.key for t in find_tracks(hq, subset="test")] == ["test/B", "test/C"]
    assert [t.key for t in find_tracks(stem_files, subset="test")] == ["test/D"]

    loaded = find_tracks(hq, subset="train")[0].load()
    assert loaded.mixture.shape == (2, 44100)
    np.testing.assert_allclose(loaded.stems["vocals"], stems["vocals"], atol=2**-23)
    from_mp4 = Track("D", stem_files / "test" / "D.stem.mp4", "test").load()
    assert sorted(from_mp4.stems) == sorted(NI_STEMS)
    assert from_mp4.mixture.shape == (2, 44100)


def test_stem_folders_are_conformed_to_the_mixture(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    track = tmp_path / "song"
    track.mkdir()
    mix = rng.uniform(-0.5, 0.5, (2, 8000)).astype(np.float32)
    sf.write(track / "mixture.wav", mix.T, 8000, subtype="FLOAT")
    sf.write(track / "voice.wav", mix[0, :7900], 8000, subtype="FLOAT")  # mono, a bit short
    sf.write(track / "Drums.WAV", mix[:, :8100].T, 8000, subtype="FLOAT")  # a bit long
    loaded = find_tracks(track)[0].load()
    assert sorted(loaded.stems) == ["drums", "voice"]
    assert loaded.stems["voice"].shape == (2, 8000)
    np.testing.assert_array_equal(loaded.stems["voice"][1, :7900], mix[0, :7900])
    assert not loaded.stems["voice"][:, 7900:].any()
    np.testing.assert_array_equal(loaded.stems["drums"], mix)

    sf.write(track / "drums.wav", mix[:, :3000].T, 8000)  # 0.6 s short: a wrong file
    (track / "Drums.WAV").unlink()
    with pytest.raises(BadAudio, match=r"drums\.wav: is 0\.38 s long but the mixture is 1\.00 s"):
        find_tracks(track)[0].load()


def test_find_tracks_errors(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="does not exist"):
        find_tracks(tmp_path / "nowhere")
    (tmp_path / "only-a-mixture").mkdir()
    sf.write(tmp_path / "only-a-mixture" / "mixture.wav", np.zeros(100), 8000)
    with pytest.raises(BadRequest, match="no tracks in"):
        find_tracks(tmp_path)
