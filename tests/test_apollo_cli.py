"""``dsu restore`` as a user runs it: a real subprocess on an MSST-layout Apollo checkpoint
in a models folder without ``models.json`` (found by the scan), files in, files out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

from dsu.archs.apollo import Apollo, ApolloConfig
from dsu.metrics import sdr

RATE = 44_100
CONFIG = ApolloConfig(feature_dim=16, layer=1)


def dsu(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dsu", *map(str, args)], capture_output=True, text=True, timeout=600
    )


def msst_folder(folder: Path) -> Apollo:
    """``apollo_tiny.ckpt`` + ``apollo_tiny.yaml`` as MSST publishes them, random weights."""
    torch.manual_seed(0)
    net = Apollo(CONFIG).eval()
    with torch.no_grad():
        for param in net.parameters():
            param.add_(0.05 * torch.randn_like(param))
    folder.mkdir()
    torch.save(net.state_dict(), folder / "apollo_tiny.ckpt")
    config = {
        "audio": {"chunk_size": 132300, "num_channels": 2, "sample_rate": RATE, "min_mean_abs": 0},
        "model": {"sr": RATE, "win": 20, "feature_dim": 16, "layer": 1},
        "training": {
            "instruments": ["restored", "addition"],
            "target_instrument": "restored",
            "model_type": "apollo",
        },
        "inference": {"batch_size": 1, "num_overlap": 4},
    }
    (folder / "apollo_tiny.yaml").write_text(yaml.safe_dump(config))
    return net


def test_restore_end_to_end(tmp_path: Path) -> None:
    net = msst_folder(tmp_path / "models")
    rng = np.random.default_rng(0)
    stereo = (0.1 * rng.standard_normal((RATE, 2))).astype(np.float32)
    sf.write(tmp_path / "song.wav", stereo, RATE, subtype="FLOAT")
    sf.write(tmp_path / "voice.flac", stereo[: RATE // 2, 0], RATE)
    out = tmp_path / "out"
    result = dsu(
        "restore", tmp_path / "song.wav", tmp_path / "voice.flac", "-m", "apollo_tiny",
        "--models-dir", tmp_path / "models", "-o", out, "--bit-depth", "32", "--segment", "0.4",
        "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(out / "song.wav"), str(out / "voice.wav")]
    assert not (tmp_path / "models" / "models.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["song.wav", "voice.wav"]  # nothing staged

    restored, rate = sf.read(out / "song.wav", dtype="float32", always_2d=True)
    assert rate == RATE and restored.shape == stereo.shape
    with torch.inference_mode():
        expected = net(torch.from_numpy(stereo.T.copy())[None])[0].numpy()
    assert sdr(expected, restored.T) >= 60.0

    mono, _ = sf.read(out / "voice.wav", dtype="float32", always_2d=True)
    assert mono.shape == (RATE // 2, 1)


def test_restore_refuses_bad_requests(tmp_path: Path) -> None:
    msst_folder(tmp_path / "models")
    song = tmp_path / "song.wav"
    sf.write(song, np.zeros((RATE // 4, 2), np.float32), RATE)
    before = song.read_bytes()

    separation = dsu("restore", song, "-m", "center", "--models-dir", tmp_path / "models")
    assert separation.returncode == 2
    assert "one-output restoration model" in separation.stderr
    assert "Traceback" not in separation.stderr

    onto_input = dsu(
        "restore", song, "-m", "apollo_tiny", "--models-dir", tmp_path / "models", "-o", tmp_path
    )
    assert onto_input.returncode == 2
    assert "would overwrite the input" in onto_input.stderr
    assert song.read_bytes() == before
