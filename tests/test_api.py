"""The Python API end to end: files and arrays in, stems out, streaming, bad input."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dsu import Separator, audio
from dsu.engine import separate_array
from dsu.errors import BadAudio, BadRequest, Cancelled, ModelNotFound
from helpers import noise, sdr, write_noise
from tiny_demucs import write_models_dir


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    return write_models_dir(root, {"tiny-ht": {"nets": [("htdemucs", 0)]}})


@pytest.fixture(scope="module")
def tiny(models_dir: Path) -> Separator:
    separator = Separator("tiny-ht", models_dir=models_dir, device="cpu")
    separator.load()
    return separator


def test_file_is_streamed_to_the_same_stems_as_a_whole_array(tiny: Separator, tmp_path: Path):
    mix = noise(7.3)
    source = tmp_path / "mix.wav"
    sf.write(source, mix.T, 44100, subtype="FLOAT")
    # 7.3 s in 2.97 s decode blocks: the engine sees the file window by window.
    result = tiny.separate(source, output_dir=tmp_path / "out", bit_depth=32)
    whole = separate_array(tiny.model, torch.from_numpy(mix))
    for row, stem in enumerate(tiny.stems):
        written, rate = sf.read(result.files[stem], dtype="float32", always_2d=True)
        assert rate == 44100 and written.shape == (mix.shape[1], 2)
        assert sdr(whole[row].numpy(), written.T) >= 60


def test_array_in_array_out_keeps_rate_length_and_mono(tiny: Separator):
    mono = noise(2.0, rate=48000, channels=1)[0]
    result = tiny.separate(mono, 48000)
    assert result.samplerate == 48000
    assert set(result.stems) == {"drums", "bass", "other", "vocals"}
    for stem in result.stems.values():
        assert stem.shape == (1, mono.size) and stem.dtype == np.float32
        assert np.isfinite(stem).all()


def test_two_stems_sum_to_the_mixture(tiny: Separator):
    mix = noise(1.5)
    result = tiny.separate(mix, 44100, two_stems="vocals")
    assert list(result.stems) == ["vocals", "no_vocals"]
    total = result.stems["vocals"] + result.stems["no_vocals"]
    assert np.abs(total - mix).max() < 1e-5


def test_stems_subset_and_unknown_stem(tiny: Separator):
    assert list(tiny.separate(noise(1.0), 44100, stems=["bass"]).stems) == ["bass"]
    with pytest.raises(BadRequest, match="no stem 'guitar'"):
        tiny.separate(noise(1.0), 44100, stems=["guitar"])


@pytest.mark.parametrize("rate", [8000, 192000])
def test_unusual_rates_come_back_at_their_own_rate(rate: int, tmp_path: Path):
    source = write_noise(tmp_path / f"r{rate}.wav", 1.0, rate)
    result = Separator("center").separate(source, output_dir=tmp_path / "out")
    info = audio.probe(result.files["vocals"])
    assert (info.samplerate, info.frames) == (rate, rate)


def test_one_sample_file(tmp_path: Path):
    source = tmp_path / "one.wav"
    sf.write(source, np.full((1, 2), 0.5, dtype=np.float32), 44100)
    result = Separator("center").separate(source, output_dir=tmp_path / "out")
    assert audio.probe(result.files["vocals"]).frames == 1


def _nan_wav(path: Path) -> None:
    data = noise(1.0)
    data[1, 30000] = np.nan
    sf.write(path, data.T, 44100, subtype="FLOAT")


def _eight_channels(path: Path) -> None:
    write_noise(path, 0.5, channels=8)


BAD_INPUTS = {
    "garbage.wav": (lambda p: p.write_bytes(b"RIFF\x00\x01garbage" * 100), "not a decodable"),
    "empty.mp3": (lambda p: p.write_bytes(b""), "empty"),
    "nan.wav": (_nan_wav, "NaN"),
    "surround.wav": (_eight_channels, "8 channels"),
    "truncated.wav": (
        lambda p: p.write_bytes(_wav_bytes(p)[: 44 + 4000]),
        "truncated",
    ),
}


def _wav_bytes(path: Path) -> bytes:
    return write_noise(path, 1.0, subtype="PCM_16").read_bytes()


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_a_typed_error_naming_the_file_and_leaves_nothing(name: str, tmp_path: Path):
    make, problem = BAD_INPUTS[name]
    source = tmp_path / name
    make(source)
    out = tmp_path / "out"
    with pytest.raises(BadAudio) as info:
        Separator("center").separate(source, output_dir=out)
    assert name in str(info.value) and problem.lower() in str(info.value).lower()
    assert not out.exists() or not any(out.iterdir())


def test_clipping_is_counted_per_stem_and_float_wav_keeps_it(tmp_path: Path):
    source = tmp_path / "hot.wav"
    loud = noise(0.5)
    loud[:, :1000] *= 20  # a float input far beyond full scale
    sf.write(source, loud.T, 44100, subtype="FLOAT")
    separator = Separator("center")
    clipped = separator.separate(source, output_dir=tmp_path / "int").clipped
    assert clipped and set(clipped) <= {"vocals", "instrumental"}
    assert all(0 < n <= 2000 for n in clipped.values())
    floats = separator.separate(source, output_dir=tmp_path / "float", bit_depth=32)
    assert floats.clipped == {}
    kept, _ = sf.read(floats.files["instrumental"], dtype="float32")
    assert np.abs(kept).max() > 1
    quiet = write_noise(tmp_path / "quiet.wav", 0.5)
    assert separator.separate(quiet, output_dir=tmp_path / "q").clipped == {}


def test_downmix_accepts_eight_channels(tmp_path: Path):
    source = tmp_path / "surround.wav"
    _eight_channels(source)
    result = Separator("center", downmix=True).separate(source, output_dir=tmp_path / "out")
    assert audio.probe(result.files["vocals"]).channels == 2


def test_cancel_stops_and_leaves_no_output(tiny: Separator, tmp_path: Path):
    source = write_noise(tmp_path / "long.wav", 6.0)
    event = threading.Event()
    seen: list[float] = []

    def progress(stage: str, fraction: float) -> None:
        if stage == "separating":
            seen.append(fraction)
            event.set()

    with pytest.raises(Cancelled):
        tiny.separate(source, output_dir=tmp_path / "out", progress=progress, cancel=event)
    assert seen and seen[-1] < 1.0
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_model_is_model_not_found(tmp_path: Path):
    with pytest.raises(ModelNotFound, match="nosuchmodel"):
        Separator("nosuchmodel", models_dir=tmp_path)


def test_center_and_hpss_on_the_real_clip(mu_dir: Path, tmp_path: Path):
    mix, rate = audio.read(mu_dir / "mixture.wav")
    vocals, _ = audio.read(mu_dir / "vocals.wav")
    drums, _ = audio.read(mu_dir / "drums.wav")
    centre = Separator("center").separate(mix, rate).stems
    # Nothing is lost: the two stems add back up to the mixture.
    assert np.abs(centre["vocals"] + centre["instrumental"] - mix).max() < 1e-4
    # The centre estimate is closer to the true vocals than the mixture itself is.
    assert sdr(vocals, centre["vocals"]) > sdr(vocals, mix) + 1.0
    split = Separator("hpss").separate(mu_dir / "mixture.wav", output_dir=tmp_path).files
    percussive, _ = audio.read(split["percussive"])
    harmonic, _ = audio.read(split["harmonic"])
    correlation = [np.corrcoef(s.ravel(), drums.ravel())[0, 1] for s in (percussive, harmonic)]
    assert correlation[0] > correlation[1] + 0.2


def test_bf16_autocast_stays_close_and_fp16_is_refused_on_cpu(models_dir: Path, tiny: Separator):
    mix = noise(1.5)
    full = tiny.separate(mix, 44100).stems
    half = Separator("tiny-ht", models_dir=models_dir, device="cpu", precision="bf16")
    low = half.separate(mix, 44100).stems
    assert all(sdr(full[s], low[s]) > 15 for s in full)
    with pytest.raises(BadRequest, match="fp16"):
        Separator("tiny-ht", models_dir=models_dir, device="cpu", precision="fp16").separate(
            mix, 44100
        )
