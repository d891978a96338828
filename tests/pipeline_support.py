"""What the ensemble and chain tests share: the models, the chain and its reference.

Models: two tiny random-weight UVR MDX-Net graphs (tests/tiny_mdx.py), ``mdx-a`` and
``mdx-b``, next to the weight-free ``center`` and ``hpss``. The reference runs each model
on its own over whole arrays and combines them with the whole-array ensemble.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dsu.api import Separator
from dsu.pipeline.ensemble import ensemble
from tiny_mdx import SMALL_DATA, export

RATE = 44100
CHAIN = {
    "name": "chain3",
    "steps": [
        {"name": "split", "models": ["mdx-a", "center"], "ensemble": "avg_fft"},
        {"name": "voice", "model": "mdx-b", "input": "split.vocals"},
        {"name": "hp", "model": "hpss", "input": "voice.instrumental"},
    ],
    "outputs": ["split.instrumental", "voice.vocals", "hp.harmonic", "hp.percussive"],
}

Stems = dict[str, np.ndarray]


def tiny_mdx_entries(models: Path) -> dict[str, dict[str, Any]]:
    """Export ``mdx-a`` and ``mdx-b`` under ``models/weights``; their models.json entries."""
    entries = {}
    for name, seed in (("mdx-a", 0), ("mdx-b", 1)):
        export(models / "weights" / f"{name}.onnx", SMALL_DATA, seed=seed)
        entries[name] = {
            "arch": "mdx",
            "weights": f"weights/{name}.onnx",
            "config": None,
            "stems": ["vocals", "instrumental"],
            "options": {"model_data": SMALL_DATA},
        }
    return entries


def run_alone(name: str, x: np.ndarray, models_dir: Path) -> Stems:
    """One model run on its own over the whole array ``x``."""
    stems = Separator(name, models_dir=models_dir).separate(x, RATE).stems
    assert stems is not None
    return stems


def chain_reference(mix: np.ndarray, models_dir: Path) -> Stems:
    """CHAIN computed on whole arrays, step by step."""
    a, b = run_alone("mdx-a", mix, models_dir), run_alone("center", mix, models_dir)
    split = {s: ensemble([a[s], b[s]], "avg_fft") for s in ("vocals", "instrumental")}
    voice = run_alone("mdx-b", split["vocals"], models_dir)
    hp = run_alone("hpss", voice["instrumental"], models_dir)
    return {
        "instrumental": split["instrumental"],
        "vocals": voice["vocals"],
        "harmonic": hp["harmonic"],
        "percussive": hp["percussive"],
    }
