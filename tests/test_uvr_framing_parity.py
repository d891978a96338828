"""The ``uvr`` framing against audio-separator 0.47.1's RoFormer ``demix``, and its options.

The same tiny random-weight BS-RoFormer (audio-separator's network, its weights saved as
an MSST ``.ckpt`` + ``.yaml`` folder) separates the same mixture through DSU with
``framing="uvr"`` and through ``MDXCSeparator.demix``: the chunk grid, the tail chunk
moved back to the track's end, the Hamming window and a track shorter than one chunk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from corpus import separate_cli
from dsu import Separator
from dsu.engine import EngineOptions
from dsu.engine.framing import plan
from dsu.errors import BadRequest
from helpers import sdr
from roformer_configs import HOP, TINY_BS, uvr_bs
from uvr_reference import uvr_demix

DIM_T = 65
CHUNK = HOP * (DIM_T - 1)  # audio-separator's chunk: stft_hop_length * (dim_t - 1)


def config(num_overlap: int) -> dict:
    return {
        "audio": {"chunk_size": CHUNK, "num_channels": 2, "sample_rate": 44100},
        # audio-separator's network has no zero_dc switch (it keeps the DC bin).
        "model": {**TINY_BS, "stereo": True, "zero_dc": False},
        "training": {"instruments": ["vocals", "other"], "target_instrument": "vocals"},
        "inference": {"dim_t": DIM_T, "num_overlap": num_overlap},
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """audio-separator's network with random weights, and a models folder holding them."""
    torch.manual_seed(0)
    net = uvr_bs.BSRoformer(**config(2)["model"]).eval()
    models = tmp_path_factory.mktemp("models")
    torch.save(net.state_dict(), models / "tiny-bs.ckpt")
    return models, net


def write_config(models: Path, num_overlap: int) -> None:
    text = yaml.dump(config(num_overlap), Dumper=yaml.Dumper)
    (models / "tiny-bs.yaml").write_text(text, encoding="utf-8")


def mixture(length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.2 * rng.standard_normal((2, length))).astype(np.float32)


@pytest.mark.parametrize(
    ("num_overlap", "length"),
    [
        (2, 5 * CHUNK + 777),  # the tail chunk moved back to end at the track's end
        (4, 3 * CHUNK + 5),
        (2, 2 * CHUNK),  # the grid ends exactly at the track's end
        (2, CHUNK // 2),  # one short chunk
    ],
)
def test_uvr_framing_matches_audio_separator_demix(folder, num_overlap: int, length: int):
    models, net = folder
    write_config(models, num_overlap)
    mix = mixture(length, seed=num_overlap)
    separator = Separator("tiny-bs", models_dir=models, device="cpu", framing="uvr")
    ours = separator.separate(mix, 44100, stems=["vocals"]).stems["vocals"]
    theirs = uvr_demix(config(num_overlap), net, mix, num_overlap)
    assert ours.shape == theirs.shape == mix.shape
    assert sdr(theirs, ours) >= 60
    # The framing matters: MSST's (the default) differs from audio-separator's here.
    default = Separator("tiny-bs", models_dir=models, device="cpu")
    msst = default.separate(mix, 44100, stems=["vocals"]).stems["vocals"]
    assert sdr(theirs, msst) < 40


def test_uvr_runs_fewer_chunks_than_msst(folder):
    models, _ = folder
    write_config(models, 2)
    model = Separator("tiny-bs", models_dir=models, device="cpu").model
    length = 30 * CHUNK // 8  # the bench's 30 s with 8 s chunks, scaled
    uvr = plan(model, length, 0, EngineOptions(framing="uvr"))
    msst = plan(model, length, 0, EngineOptions())
    assert [c.start for c in uvr] == [0, 1024, 2048, 3072, 4096, 5120, 5632]
    # MSST's grid: starts -1024 .. 8192 over the mirrored track, 8192 wholly in the border.
    assert [c.start for c in msst] == list(range(-1024, 7680, 1024))


def test_cli_framing_flag(folder, tmp_path: Path):
    models, net = folder
    write_config(models, 2)
    mix = mixture(3 * CHUNK + 100, seed=7)
    sf.write(tmp_path / "song.wav", mix.T, 44100, subtype="FLOAT")
    ours = separate_cli(
        tmp_path / "song.wav", models, "tiny-bs", tmp_path / "out", "--framing", "uvr"
    )
    assert sdr(uvr_demix(config(2), net, mix, 2), ours["vocals"]) >= 60


def test_framing_is_validated(folder):
    with pytest.raises(BadRequest, match="framing must be one of"):
        EngineOptions(framing="bogus")
    models, _ = folder
    write_config(models, 2)
    separator = Separator("tiny-bs", models_dir=models, device="cpu", framing="demucs")
    with pytest.raises(BadRequest, match="framing 'demucs' is not one this model runs"):
        separator.separate(mixture(CHUNK), 44100)
