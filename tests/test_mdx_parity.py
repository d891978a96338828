"""UVR MDX-Net (.onnx) against audio-separator 0.47.1's ``MDXSeparator``, on random weights.

Each case exports a tiny network with UVR's MDX-Net signature to ``.onnx``, runs it
through audio-separator's MDX path (its ``demix`` on the array, with the settings its
``Separator`` passes) and through DSU's engine, and compares both stems.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dsu.archs.mdx import MdxModel, MdxParams, OnnxNet
from dsu.engine.options import EngineOptions
from dsu.engine.overlap_add import separate_array
from dsu.errors import BadRequest
from dsu.metrics import sdr
from tiny_mdx import (
    SMALL_DATA,
    export,
    mixture_signal,
    reference_separator,
    reference_stems,
)

PARITY_DB = 60.0
LENGTH = 70_001  # not a multiple of the hop, the chunk or the step


def dsu_stems(
    onnx: Path, data: dict[str, Any], options: EngineOptions, *, denoise: bool = False
) -> np.ndarray:
    model = MdxModel(OnnxNet(onnx), MdxParams.from_model_data(data, "test"), denoise=denoise)
    mix = torch.from_numpy(mixture_signal(LENGTH))
    return separate_array(model, mix, options=options).numpy()


@pytest.mark.parametrize(
    ("overlap", "batch_size", "denoise", "primary", "dynamic_batch"),
    [
        (None, 1, False, "Vocals", True),  # audio-separator's defaults
        (None, 1, True, "Instrumental", True),
        (0.5, 3, True, "Vocals", True),
        (0.75, 4, False, "Instrumental", False),  # a graph exported for one chunk at a time
        (0.0, 2, False, "Vocals", True),  # no overlap: no window
    ],
)
def test_parity(
    tmp_path: Path,
    overlap: float | None,
    batch_size: int,
    denoise: bool,
    primary: str,
    dynamic_batch: bool,
) -> None:
    data = {**SMALL_DATA, "primary_stem": primary}
    onnx = export(tmp_path / "tiny.onnx", data, dynamic_batch=dynamic_batch)
    reference = reference_separator(
        onnx, data, overlap=0.25 if overlap is None else overlap, denoise=denoise
    )
    expected = reference_stems(reference, mixture_signal(LENGTH))
    options = EngineOptions(overlap=overlap, batch_size=batch_size)
    got = dsu_stems(onnx, data, options, denoise=denoise)
    assert got.shape == expected.shape
    assert (sdr(expected, got) >= PARITY_DB).all(), sdr(expected, got)


def test_segment_parity(tmp_path: Path) -> None:
    """A segment of 64 frames on a graph with a free time axis, against audio-separator
    run with ``segment_size`` 64 on the same graph."""
    onnx = export(tmp_path / "free.onnx", SMALL_DATA, dynamic_time=True)
    frames = 64
    reference = reference_separator(onnx, {**SMALL_DATA, "mdx_dim_t_set": 6})
    expected = reference_stems(reference, mixture_signal(LENGTH))
    segment = 1024 * (frames - 1) / 44100
    got = dsu_stems(onnx, SMALL_DATA, EngineOptions(segment=segment, batch_size=2))
    assert (sdr(expected, got) >= PARITY_DB).all(), sdr(expected, got)


def test_fixed_graph_refuses_another_segment(tmp_path: Path) -> None:
    onnx = export(tmp_path / "tiny.onnx", SMALL_DATA)
    with pytest.raises(BadRequest, match="exactly 32 STFT frames"):
        dsu_stems(onnx, SMALL_DATA, EngineOptions(segment=1.0))


def test_segment_shorter_than_the_fft_is_refused(tmp_path: Path) -> None:
    onnx = export(tmp_path / "tiny.onnx", SMALL_DATA)
    with pytest.raises(BadRequest, match="too short"):
        dsu_stems(onnx, SMALL_DATA, EngineOptions(segment=0.03))


def test_secondary_is_the_compensated_residual(tmp_path: Path) -> None:
    onnx = export(tmp_path / "tiny.onnx", SMALL_DATA)
    stems = dsu_stems(onnx, SMALL_DATA, EngineOptions())
    mix = mixture_signal(LENGTH)
    rebuilt = stems[0] * SMALL_DATA["compensate"] + stems[1]
    assert sdr(mix, rebuilt) > 100
    assert sdr(mix, stems[0] + stems[1]) < 60  # compensate is applied, not 1
