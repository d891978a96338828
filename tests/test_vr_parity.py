"""UVR VR models: DSU against audio-separator 0.47.1's ``VRSeparator`` on the same files.

Small random-weight nets of both generations are saved as ``.pth`` state dicts with real
band parameters (``1band_sr44100_hl512``, ``4band_v3``). The reference is driven through
its own pipeline (``loading_mix`` -> ``inference_vr`` -> ``spec_to_wav``, what its
``separate`` runs before writing files); its network is chosen by passing
``_ensure_model_loaded`` the UVR size id of the same variant rather than letting it guess
from the file size. Its band recombination resamples with ``sinc_fastest`` on Linux and
``polyphase`` on Apple silicon (``spec_utils.wav_resolution``); DSU always uses polyphase,
so the reference is pinned to that setting.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from dsu.archs.vr import load
from dsu.archs.vr.cascaded import CascadedNet
from dsu.archs.vr.nets import CascadedASPPNet, V5Shape
from dsu.archs.vr.params import load_params
from dsu.engine import EngineOptions
from dsu.engine.overlap_add import separate_array
from dsu.errors import RegistryError
from dsu.registry.entry import ModelEntry
from helpers import sdr

spec_utils = pytest.importorskip("audio_separator.separator.uvr_lib_v5.spec_utils")
vr_separator = pytest.importorskip("audio_separator.separator.architectures.vr_separator")

RATE = 44_100
V5_SP_SIZE = 31191
"""UVR's id of the v5 width-16, 5-branch variant."""
V51_SIZE = 56817
"""A v5.1 id that keeps the model data's ``nout``."""


def randomise_norms(net: torch.nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics, so the test checks they are applied."""
    g = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            n = module.running_mean.numel()
            module.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            module.running_var.copy_(1 + 0.2 * torch.rand(n, generator=g))


def write_v5(path: Path, bins: int, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = CascadedASPPNet(bins, V5Shape(16))
    randomise_norms(net, seed)
    torch.save(net.state_dict(), path)
    return path


def write_v51(path: Path, bins: int, nout: int = 4, nout_lstm: int = 8, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    net = CascadedNet(bins, nout, nout_lstm)
    randomise_norms(net, seed)
    torch.save(net.state_dict(), path)
    return path


def write_mix(path: Path, seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A tone-and-noise stereo mix, written as float WAV (read back bit-exact)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    mix = np.stack([tone, 0.5 * tone]) + 0.05 * rng.standard_normal((2, t.size))
    sf.write(path, mix.T.astype(np.float32), rate, subtype="FLOAT")
    return mix.astype(np.float32)


def reference(
    weights: Path, audio: Path, data: dict[str, Any], settings: dict[str, Any], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """audio-separator's primary and secondary stems ``[2, n]``."""
    config = {
        "logger": logging.getLogger("vr-reference"),
        "log_level": logging.WARNING,
        "torch_device": torch.device("cpu"),
        "torch_device_cpu": torch.device("cpu"),
        "torch_device_mps": None,
        "model_name": weights.stem,
        "model_path": str(weights),
        "model_data": data,
        "output_dir": str(audio.parent),
        "output_format": "wav",
        "normalization_threshold": 0.9,
        "amplification_threshold": 0.0,
        "output_single_stem": None,
        "invert_using_spec": False,
        "sample_rate": RATE,
        "use_soundfile": True,
    }
    sep = vr_separator.VRSeparator(config, settings)
    sep.audio_file_path = str(audio)
    sep.wav_subtype = "FLOAT"
    sep._ensure_model_loaded(size)
    y, v = sep.inference_vr(sep.loading_mix(), sep.torch_device, sep.aggressiveness)
    y, v = (np.nan_to_num(s, nan=0.0, posinf=0.0, neginf=0.0) for s in (y, v))
    return sep.spec_to_wav(y), sep.spec_to_wav(v)


def dsu_stems(
    weights: Path,
    data: dict[str, Any],
    settings: dict[str, Any],
    mix: np.ndarray,
    segment: float | None = None,
) -> torch.Tensor:
    entry = ModelEntry("vr-test", "vr", (weights,), options={**data, **settings})
    model = load(entry)
    return separate_array(model, torch.from_numpy(mix), options=EngineOptions(segment=segment))


@pytest.fixture(autouse=True)
def polyphase_recombination(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_utils, "wav_resolution", "polyphase")


def compare(ours: torch.Tensor, primary: np.ndarray, secondary: np.ndarray) -> list[float]:
    n = primary.shape[-1]
    return [
        sdr(torch.from_numpy(ref.astype(np.float32)), ours[i, :, :n])
        for i, ref in enumerate((primary, secondary))
    ]


V51_DATA = {"vr_model_param": "4band_v3", "primary_stem": "Vocals", "nout": 4, "nout_lstm": 8}
WINDOW = {"window_size": 320}
"""Small windows keep the tests fast (UVR's quickest-quality choice is 320)."""

SETTINGS = {
    "defaults": {},
    "aggression_tta": {"enable_tta": True, "aggression": -30, **WINDOW},
    "post_process": {"enable_post_process": True, "post_process_threshold": 0.2, **WINDOW},
    "high_end": {"high_end_process": True, "aggression": 12, **WINDOW},
}
OURS = {
    "enable_tta": "tta",
    "enable_post_process": "post_process",
}


@pytest.mark.parametrize("case", list(SETTINGS))
def test_v51_four_band_matches_audio_separator(tmp_path: Path, case: str) -> None:
    bins = load_params("4band_v3").bins
    weights = write_v51(tmp_path / "tiny51.pth", bins)
    mix = write_mix(tmp_path / "mix.wav", 1.5)
    settings = SETTINGS[case]
    primary, secondary = reference(weights, tmp_path / "mix.wav", V51_DATA, settings, V51_SIZE)
    ours = dsu_stems(weights, V51_DATA, {OURS.get(k, k): v for k, v in settings.items()}, mix)
    assert min(compare(ours, primary, secondary)) >= 60


def test_v5_one_band_matches_audio_separator(tmp_path: Path) -> None:
    weights = write_v5(tmp_path / "sp.pth", load_params("1band_sr44100_hl256").bins)
    mix = write_mix(tmp_path / "mix.wav", 1.0)
    data = {"vr_model_param": "1band_sr44100_hl256", "primary_stem": "Instrumental"}
    primary, secondary = reference(weights, tmp_path / "mix.wav", data, {}, V5_SP_SIZE)
    ours = dsu_stems(weights, data, {}, mix)
    assert min(compare(ours, primary, secondary)) >= 60


def test_post_process_changes_the_mask(tmp_path: Path) -> None:
    """The post-process case above is only a check if merge_artifacts found runs."""
    bins = load_params("4band_v3").bins
    weights = write_v51(tmp_path / "tiny51.pth", bins)
    mix = write_mix(tmp_path / "mix.wav", 1.5)
    plain = dsu_stems(weights, V51_DATA, WINDOW, mix)
    merged = dsu_stems(
        weights, V51_DATA, {"post_process": True, "post_process_threshold": 0.2, **WINDOW}, mix
    )
    assert sdr(plain, merged) < 40


def test_chunked_equals_whole_track(tmp_path: Path) -> None:
    bins = load_params("4band_v3").bins
    weights = write_v51(tmp_path / "tiny51.pth", bins, seed=3)
    mix = write_mix(tmp_path / "mix.wav", 3.0, seed=2)
    settings = {
        "window_size": 320,
        "tta": True,
        "post_process": True,
        "post_process_threshold": 0.2,
        "high_end_process": True,
    }
    entry = ModelEntry("vr-test", "vr", (weights,), options={**V51_DATA, **settings})
    model = load(entry)
    whole = model(torch.from_numpy(mix)[None])[0]
    chunked = separate_array(model, torch.from_numpy(mix), options=EngineOptions(segment=1.5))
    assert model.segment > 1.5 * RATE  # the engine really cut it into several chunks
    assert min(sdr(whole[i], chunked[i]) for i in range(2)) >= 60


def test_unknown_hash_says_what_to_add(tmp_path: Path) -> None:
    weights = write_v51(tmp_path / "mystery.pth", 672)
    with pytest.raises(RegistryError) as info:
        load(ModelEntry("mystery", "vr", (weights,)))
    message = str(info.value)
    assert "vr_model_param" in message and "primary_stem" in message and "4band_v3" in message


def test_widths_contradicting_model_data_are_refused(tmp_path: Path) -> None:
    weights = write_v51(tmp_path / "w.pth", 672)
    options = {**V51_DATA, "nout": 16}
    with pytest.raises(RegistryError, match="nout=4"):
        load(ModelEntry("w", "vr", (weights,), options=options))


@pytest.mark.parametrize("rate", [48_000, 22_050])
def test_cli_resamples_other_rates(tmp_path: Path, rate: int) -> None:
    (tmp_path / "models").mkdir()
    write_v51(tmp_path / "models" / "tiny.pth", 672)
    registry = {
        "version": 1,
        "models": {
            "tiny-vr": {
                "arch": "vr",
                "weights": "tiny.pth",
                "stems": ["vocals", "instrumental"],
                "options": {**V51_DATA, **WINDOW},
            }
        },
    }
    (tmp_path / "models" / "models.json").write_text(json.dumps(registry))
    t = np.arange(int(1.5 * rate)) / rate
    tone = 0.4 * np.sin(2 * np.pi * 1000 * t)
    sf.write(tmp_path / "in.wav", np.stack([tone, tone], 1).astype(np.float32), rate)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dsu",
            "separate",
            str(tmp_path / "in.wav"),
            "-m",
            "tiny-vr",
            "--models-dir",
            str(tmp_path / "models"),
            "-o",
            str(tmp_path / "out"),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    stems = {}
    for name in ("vocals", "instrumental"):
        (path,) = (tmp_path / "out").rglob(f"{name}.wav")
        data, out_rate = sf.read(path, dtype="float32")
        assert out_rate == rate and data.shape == (t.size, 2)
        stems[name] = data
    total = stems["vocals"] + stems["instrumental"]
    spectrum = np.abs(np.fft.rfft(total[:, 0]))
    peak_hz = np.argmax(spectrum) * rate / t.size
    assert abs(peak_hz - 1000) < 2  # a wrong rate anywhere would move the tone
    middle = slice(rate // 4, -rate // 4)
    assert (
        sdr(
            torch.from_numpy(np.stack([tone, tone], 1)[middle].astype(np.float32)),
            torch.from_numpy(total[middle]),
        )
        > 20
    )
