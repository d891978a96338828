"""MSST parity: DSU's engine against ``msst.utils.model_utils.demix`` on the same network.

The network is a small deterministic conv net (random weights) whose output depends on
where a sample sits in its chunk (zero-padded convolutions), so the chunk grid, the
padding and the window all show in the result.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ml_collections import ConfigDict
from msst.utils.model_utils import _getWindowingArray, apply_tta, demix

from dsu.archs.msst import MsstModel
from dsu.engine import EngineOptions, separate_array
from dsu.engine.window import MSST_FADE_DIVISOR, fade_window
from helpers import sdr

CHUNK = 1000
STEMS = ["vocals", "drums"]


class ConvNet(torch.nn.Module):
    """``[B, 2, T] -> [B, S, 2, T]``: a few zero-padded conv layers."""

    def __init__(self, stems: int = len(STEMS), seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.stems = stems
        self.layers = torch.nn.Sequential(
            torch.nn.Conv1d(2, 8, 9, padding=4),
            torch.nn.Tanh(),
            torch.nn.Conv1d(8, 8, 9, padding=8, dilation=2),
            torch.nn.Tanh(),
            torch.nn.Conv1d(8, 2 * stems, 5, padding=2),
        )
        for parameter in self.parameters():
            parameter.data = 0.3 * torch.randn(parameter.shape, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).view(x.shape[0], self.stems, 2, x.shape[-1])


def config(num_overlap: int, batch_size: int = 1, **inference: object) -> dict:
    return {
        "audio": {"chunk_size": CHUNK, "sample_rate": 44100, "num_channels": 2},
        "model": {},
        "training": {"instruments": STEMS, "target_instrument": None, "use_amp": False},
        "inference": {"num_overlap": num_overlap, "batch_size": batch_size, **inference},
    }


def reference(net: torch.nn.Module, settings: dict, mix: torch.Tensor) -> torch.Tensor:
    out = demix(ConfigDict(settings), net, mix.numpy(), torch.device("cpu"), "bs_roformer")
    return torch.from_numpy(np.stack([out[name] for name in STEMS]))


def mixture(length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(2, length, generator=generator)


@pytest.fixture(scope="module")
def net() -> ConvNet:
    return ConvNet().eval()


def test_window_is_msst_window():
    fade = CHUNK // MSST_FADE_DIVISOR
    assert torch.equal(fade_window(CHUNK, fade), _getWindowingArray(CHUNK, fade))


@pytest.mark.parametrize("num_overlap", [2, 4])
@pytest.mark.parametrize(
    "length",
    [
        5 * CHUNK,  # 5 chunks, the grid ends exactly on the track
        5 * CHUNK + 371,  # a short last chunk
        2 * CHUNK - 1,  # shorter than 2 * border at num_overlap=4: not mirrored
        CHUNK,
        CHUNK // 3,  # shorter than one chunk: zero-padded
        1,
    ],
)
def test_engine_matches_demix(net: ConvNet, num_overlap: int, length: int):
    mix = mixture(length, seed=length)
    settings = config(num_overlap)
    expected = reference(net, settings, mix)
    model = MsstModel(net, settings)
    assert sdr(expected, separate_array(model, mix)) >= 60
    # Streaming in blocks much smaller than a chunk, and batching, change nothing.
    batched = separate_array(model, mix, options=EngineOptions(batch_size=3), block=97)
    assert sdr(expected, batched) >= 60


def test_batched_demix_where_its_batching_does_not_change_the_windows(net: ConvNet):
    # demix sets the window of a whole batch from its position: with batch_size 3 the
    # last batch loses its fade-outs. On 5 chunks + 371 samples at num_overlap=4 the
    # last batch holds chunks that lie wholly in the trimmed border, so the reference
    # itself is unaffected; the engine weighs each chunk by its own position.
    mix = mixture(5 * CHUNK + 371, seed=7)
    settings = config(4, batch_size=3)
    expected = reference(net, settings, mix)
    assert sdr(reference(net, config(4), mix), expected) >= 60
    out = separate_array(MsstModel(net, settings), mix, options=EngineOptions(batch_size=3))
    assert sdr(expected, out) >= 60


def test_without_overlap_demix_zeroes_chunk_edges(net: ConvNet):
    # num_overlap=1: demix's fades weigh the first and last sample of a chunk 0 and no
    # other chunk covers them, so it returns 0 there (0/0, nan_to_num). The engine does
    # not fade without overlap; everywhere else the two agree exactly.
    mix = mixture(3 * CHUNK + 400, seed=3)
    settings = config(1)
    expected = reference(net, settings, mix)
    out = separate_array(MsstModel(net, settings), mix)
    zeroed = torch.tensor([k * CHUNK + d for k in (1, 2, 3) for d in (-1, 0)])
    assert expected[..., zeroed].eq(0).all() and out[..., zeroed].ne(0).all()
    keep = torch.ones(mix.shape[-1], dtype=torch.bool)
    keep[zeroed] = False
    assert sdr(expected[..., keep], out[..., keep]) >= 60


def test_overlap_option_overrides_num_overlap(net: ConvNet):
    mix = mixture(4 * CHUNK + 10, seed=4)
    expected = reference(net, config(4), mix)
    out = separate_array(MsstModel(net, config(2)), mix, options=EngineOptions(overlap=0.75))
    assert sdr(expected, out) >= 60


def test_tta_matches_apply_tta(net: ConvNet):
    mix = mixture(3 * CHUNK + 123, seed=5)
    settings = config(2)
    cfg = ConfigDict(settings)
    cpu = torch.device("cpu")
    plain = demix(cfg, net, mix.numpy(), cpu, "bs_roformer")
    averaged = apply_tta(cfg, net, mix.numpy(), plain, cpu, "bs_roformer")
    expected = torch.from_numpy(np.stack([averaged[name] for name in STEMS]))
    out = separate_array(MsstModel(net, settings, tta=True), mix)
    assert sdr(expected, out) >= 60
    assert sdr(expected, separate_array(MsstModel(net, settings), mix)) < 40


def test_normalize_matches_msst_inference(net: ConvNet):
    # MSST's inference (msst.utils.audio_utils.normalize_audio, which imports matplotlib,
    # so its two lines are restated here) standardises the track by the mean and
    # population std of its mono mix before demix and undoes it after.
    mix = 0.2 + mixture(3 * CHUNK + 5, seed=6)
    mono = mix.numpy().mean(0)
    mean, std = mono.mean(), mono.std()
    settings = config(4, normalize=True)
    ref = demix(ConfigDict(settings), net, (mix.numpy() - mean) / std, torch.device("cpu"), "x")
    expected = torch.from_numpy(np.stack([ref[name] * std + mean for name in STEMS])).float()
    model = MsstModel(net, settings)
    assert model.normalize
    assert sdr(expected, separate_array(model, mix)) >= 60
    # Without the track's standardisation the result differs.
    assert sdr(expected, separate_array(MsstModel(net, config(4)), mix)) < 40
