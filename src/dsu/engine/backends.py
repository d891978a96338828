"""Which runtime executes a model's forward pass (:data:`dsu.engine.options.BACKENDS`).

``torch`` runs every family on every device. ``openvino`` runs the models that offer it
(``SeparationModel.backends``: HTDemucs' network between its STFT and iSTFT) through
OpenVINO on the CPU, in fp32 or bf16, and the others on torch, so one worker, service or
chain setting serves every family; it needs the ``openvino`` extra. ``auto`` picks the
faster one (bench/bench_demucs.py, full-size HTDemucs, 2 threads with AVX-512 and AMX):

- fp32: ``torch``. OpenVINO takes ~5% less time per chunk than DSU's eager path, which
  its first chunk of a run (compiling, ~0.4 s) and the export on a model's first run
  (~5 s) take back on a song, for ~700 MB more peak memory while exporting.
- bf16: ``openvino`` where the model offers it, the device is the CPU and the package is
  installed: ~23% less time per chunk than torch's bf16 autocast.

Exported graphs are kept under :func:`compiled_cache_dir`, so only a model's first run
pays for the export.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from dsu.errors import BadRequest

CACHE_ENV = "DSU_CACHE_DIR"
"""Environment variable: where compiled graphs are kept (default ``~/.cache/dsu``)."""

INSTALL_HINT = "pip install 'dsu[openvino]'"


def compiled_cache_dir() -> Path:
    """``$DSU_CACHE_DIR/compiled``, or ``~/.cache/dsu/compiled``."""
    root = os.environ.get(CACHE_ENV, "").strip()
    return (Path(root) if root else Path.home() / ".cache" / "dsu") / "compiled"


def openvino_installed() -> bool:
    """Whether ``openvino`` imports here."""
    try:
        import_openvino()
    except BadRequest:
        return False
    return True


def import_openvino() -> ModuleType:
    """The ``openvino`` module.

    Raises:
        BadRequest: it is not installed (the message names the extra).
    """
    try:
        return importlib.import_module("openvino")
    except ImportError as exc:
        raise BadRequest(
            f"the openvino backend needs the openvino package: {INSTALL_HINT}"
        ) from exc


def resolve_backend(
    requested: str, offered: tuple[str, ...], device_type: str, precision: str
) -> str:
    """The backend a model runs with.

    Args:
        requested: one of :data:`dsu.engine.options.BACKENDS`.
        offered: the backends the model can run (``SeparationModel.backends``).
        device_type: ``cpu``, ``cuda`` or ``mps``.
        precision: one of :data:`dsu.engine.options.PRECISIONS`.

    Raises:
        BadRequest: ``openvino`` for a model that offers it, off the CPU or without the
            package.
    """
    if requested == "torch" or "openvino" not in offered:
        return "torch"
    if requested == "auto":
        faster = precision == "bf16" and device_type == "cpu"
        return "openvino" if faster and openvino_installed() else "torch"
    if device_type != "cpu":
        raise BadRequest(
            f"the openvino backend runs on the CPU, not {device_type}; use --device cpu"
        )
    import_openvino()
    return "openvino"
