"""Tiny MDX-Net ``.onnx`` models written at test time, and audio-separator's MDX path.

The network has UVR's MDX-Net signature: spectrogram planes ``[B, 4, dim_f, dim_t]`` in
and out (input named ``input``, as UVR's graphs and audio-separator's ``run`` call expect).
Weights are random; a gate keeps the output a bounded, non-linear function of the input.
"""

from __future__ import annotations

import json
import logging
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dsu.registry.scan import uvr_hash

SMALL_DATA: dict[str, Any] = {
    "compensate": 1.035,
    "mdx_dim_f_set": 256,
    "mdx_dim_t_set": 5,
    "mdx_n_fft_scale_set": 2048,
    "primary_stem": "Vocals",
}
"""Parameters of the tiny model: 32 frames of a 2048-point FFT, 256 bins."""


class TinyMdxNet(nn.Module):
    """``[B, 4, F, T] -> [B, 4, F, T]``: a gated two-layer convolution."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.inner = nn.Conv2d(4, hidden, 3, padding=1)
        self.outer = nn.Conv2d(hidden, 4, 3, padding=1)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        return planes * torch.sigmoid(self.outer(torch.tanh(self.inner(planes))))


def export(
    path: Path,
    data: dict[str, Any],
    *,
    seed: int = 0,
    dynamic_batch: bool = True,
    dynamic_time: bool = False,
    hidden: int = 8,
) -> Path:
    """Write a random-weight MDX-Net graph for ``data`` (UVR model data) to ``path``."""
    torch.manual_seed(seed)
    net = TinyMdxNet(hidden).eval()
    example = torch.randn(1, 4, data["mdx_dim_f_set"], 2 ** data["mdx_dim_t_set"])
    axes: dict[int, str] = {}
    if dynamic_batch:
        axes[0] = "batch"
    if dynamic_time:
        axes[3] = "frames"
    path.parent.mkdir(parents=True, exist_ok=True)
    # The TorchScript exporter (deprecated, but it needs no onnxscript) writes the same
    # kind of graph UVR's models are.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": axes, "output": axes} if axes else None,
            dynamo=False,
        )
    return path


def write_model_data(folder: Path, onnx: Path, data: dict[str, Any]) -> Path:
    """UVR's ``model_data.json`` beside the model: its hash -> ``data``."""
    target = folder / "model_data.json"
    target.write_text(json.dumps({uvr_hash(onnx): data}), encoding="utf-8")
    return target


def mixture_signal(
    length: int, rate: int = 44100, seed: int = 0, noise: float = 0.05
) -> np.ndarray:
    """``[2, length]`` float32: two chords and ``noise`` (std of white noise), peak below 0.9."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / rate
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1375 * t)
    right = 0.3 * np.sin(2 * np.pi * 330 * t + 1) + 0.2 * np.sin(2 * np.pi * 2750 * t)
    hiss = noise * rng.standard_normal((2, length))
    return (np.stack([left, right]) + hiss).astype(np.float32)


def reference_separator(
    onnx: Path,
    data: dict[str, Any],
    *,
    overlap: float = 0.25,
    denoise: bool = False,
    segment_size: int | None = None,
) -> Any:
    """audio-separator 0.47.1's ``MDXSeparator``, configured as its ``Separator`` does.

    ``segment_size`` defaults to the model's frames (``2 ** mdx_dim_t_set``), which is
    audio-separator's default (256) for every published model of 256 frames: that path
    runs the graph through onnxruntime. Only its other path (a segment that differs from
    the graph's frames) uses ``onnx2torch``, which needs torchvision (no CPU build is
    installable beside this torch); an empty module stands in for it at import.
    """
    sys.modules.setdefault("onnx2torch", types.ModuleType("onnx2torch"))
    from audio_separator.separator.architectures.mdx_separator import MDXSeparator

    common = {
        "logger": logging.getLogger("audio-separator-reference"),
        "log_level": logging.WARNING,
        "torch_device": torch.device("cpu"),
        "torch_device_cpu": torch.device("cpu"),
        "torch_device_mps": None,
        "onnx_execution_provider": ["CPUExecutionProvider"],
        "model_name": onnx.stem,
        "model_path": str(onnx),
        "model_data": dict(data),
        "output_format": "WAV",
        "output_bitrate": None,
        "output_dir": None,
        "normalization_threshold": 0.9,
        "amplification_threshold": 0.0,
        "output_single_stem": None,
        "invert_using_spec": False,
        "sample_rate": 44100,
        "use_soundfile": False,
        "use_autocast": False,
        "use_native_fp16": False,
        "use_torch_compile": False,
    }
    arch = {
        "hop_length": 1024,
        "segment_size": segment_size or 2 ** data["mdx_dim_t_set"],
        "overlap": overlap,
        "batch_size": 1,
        "enable_denoise": denoise,
    }
    return MDXSeparator(common_config=common, arch_config=arch)


def reference_stems(separator: Any, mix: np.ndarray) -> np.ndarray:
    """``[2, 2, T]``: the reference's primary stem (its ``demix``) and secondary stem
    (``mix - primary * compensate``, as its ``separate`` forms it)."""
    primary = separator.demix(mix.copy())
    secondary = -primary * separator.compensate + mix
    return np.stack([primary, secondary]).astype(np.float32)
