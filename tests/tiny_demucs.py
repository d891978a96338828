"""Tiny random-weight Demucs checkpoints in the real ``.th`` package format.

``demucs.states.serialize_model`` writes ``{"klass", "args", "kwargs", "state"}`` (plus
training args); these helpers write the same package for small networks so tests run in
seconds. Each builder is seeded, so two calls give the same weights.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch
from demucs.demucs import Demucs
from demucs.hdemucs import HDemucs
from demucs.htdemucs import HTDemucs

SOURCES = ["drums", "bass", "other", "vocals"]


def tiny_net(kind: str, seed: int = 0, sources: list[str] | None = None) -> torch.nn.Module:
    """A small network of each Demucs generation, 1-second segments."""
    torch.manual_seed(seed)
    sources = sources or SOURCES
    if kind == "htdemucs":
        return HTDemucs(
            sources,
            channels=8,
            depth=3,
            segment=1,
            nfft=512,
            t_layers=1,
            t_heads=2,
            t_hidden_scale=1.0,
        )
    if kind == "hdemucs":
        return HDemucs(sources, channels=8, depth=3, nfft=256, segment=1)
    if kind == "demucs":
        return Demucs(sources, channels=8, depth=3, segment=1, lstm_layers=1)
    raise ValueError(kind)


def write_package(
    net: torch.nn.Module, directory: Path, signature: str, state: dict | None = None
) -> Path:
    """Save ``net`` as ``<signature>-<sha256[:8]>.th``, as demucs names its checkpoints.

    ``state`` replaces the network's own state dict, e.g. with a diffq-quantized one.
    """
    args, kwargs = net._init_args_kwargs
    if state is None:
        state = {k: v.clone() for k, v in net.state_dict().items()}
    package = {
        "klass": net.__class__,
        "args": args,
        "kwargs": kwargs,
        "state": state,
        "training_args": {},
    }
    buffer = io.BytesIO()
    torch.save(package, buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{signature}-{digest[:8]}.th"
    path.write_bytes(buffer.getvalue())
    return path


def write_models_dir(root: Path, models: dict[str, dict]) -> Path:
    """A models directory: ``weights/*.th``, ``configs/*.yaml`` and ``models.json``.

    ``models`` maps a name to ``{"nets": [(kind, seed), ...], "weights": [[...]] | None}``.
    """
    manifest: dict = {"version": 1, "default": next(iter(models)), "models": {}}
    for name, spec in models.items():
        files = []
        for index, (kind, seed) in enumerate(spec["nets"]):
            path = write_package(tiny_net(kind, seed), root / "weights", f"{name[:4]}{index:04x}")
            files.append(f"weights/{path.name}")
        entry = {"arch": "demucs", "weights": files, "config": None, "stems": SOURCES}
        if spec.get("weights"):
            entry["options"] = {"weights": spec["weights"]}
        manifest["models"][name] = entry
    (root / "models.json").write_text(json.dumps(manifest, indent=2))
    return root
