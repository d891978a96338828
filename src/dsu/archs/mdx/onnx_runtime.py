"""An ONNX Runtime session for an MDX-Net graph, on the execution provider of a device.

``cuda`` asks for the CUDA provider (``onnxruntime-gpu``), ``mps`` for CoreML; the CPU
provider is always last in the list. When the wanted provider is not installed, or ONNX
Runtime cannot start it (missing CUDA/cuDNN libraries), the session runs on the CPU and one
warning on stderr says why and what to install.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from dsu.errors import CorruptCheckpoint, RegistryError, UnsupportedModel

CPU = "CPUExecutionProvider"
PROVIDERS = {"cuda": "CUDAExecutionProvider", "mps": "CoreMLExecutionProvider"}
"""The execution provider DSU asks for on each torch device type (CPU for the rest)."""
PROVIDER_PACKAGES = {"cuda": "onnxruntime-gpu", "mps": "onnxruntime (macOS build, with CoreML)"}
INSTALL_HINT = "pip install 'dsu[onnx]'"

log = logging.getLogger(__name__)


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module.

    Raises:
        UnsupportedModel: it is not installed; the message says which extra installs it.
    """
    try:
        import onnxruntime
    except ImportError as exc:
        raise UnsupportedModel(
            f"MDX-Net (.onnx) models need the onnxruntime package: {INSTALL_HINT}"
        ) from exc
    return onnxruntime


def providers_for(device: torch.device, available: list[str]) -> list[str]:
    """Execution providers to ask for on ``device``, best first, ending with the CPU's."""
    wanted = PROVIDERS.get(device.type)
    if wanted is None:
        return [CPU]
    if wanted not in available:
        log.warning(
            "onnxruntime has no %s here (install %s for %s); MDX-Net runs on the CPU",
            wanted,
            PROVIDER_PACKAGES[device.type],
            device.type,
        )
        return [CPU]
    return [wanted, CPU]


class OnnxNet:
    """The MDX-Net network of one ``.onnx`` file: spectrogram planes in, planes out.

    Attributes:
        path: the ``.onnx`` file.
        input_shape: the graph's input shape ``[B, 4, dim_f, dim_t]``, None where a
            dimension is dynamic.
        providers: the execution providers the session runs on.
    """

    def __init__(self, path: Path, device: torch.device | None = None) -> None:
        self.path = Path(path)
        self._ort = import_onnxruntime()
        self._session = self._open(device or torch.device("cpu"))
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 4:
            raise RegistryError(
                f"{self.path}: not an MDX-Net graph (expected one input and one output of "
                f"shape [batch, 4, dim_f, dim_t], got inputs {[i.shape for i in inputs]})"
            )
        self._input = inputs[0].name
        self.input_shape = [d if isinstance(d, int) else None for d in inputs[0].shape]

    def _open(self, device: torch.device) -> object:
        ort = self._ort
        if not self.path.is_file():
            raise CorruptCheckpoint(f"{self.path}: ONNX model file not found")
        requested = providers_for(device, list(ort.get_available_providers()))
        options = ort.SessionOptions()
        # Errors only: ONNX Runtime's warnings (unused initialisers, graph rewrites) mean
        # nothing to a user.
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(self.path), options, providers=requested)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise CorruptCheckpoint(f"{self.path}: not a readable ONNX model ({exc})") from exc
        self.providers = list(session.get_providers())
        if requested[0] != CPU and requested[0] not in self.providers:
            log.warning(
                "onnxruntime could not start %s (are the CUDA/cuDNN libraries it needs on "
                "the library path?); MDX-Net runs on %s",
                requested[0],
                self.providers,
            )
        return session

    def to(self, device: torch.device) -> OnnxNet:
        """Reopen the session on ``device``'s provider (when it differs) and return self."""
        wanted = providers_for(device, list(self._ort.get_available_providers()))[0]
        if self.providers[0] != wanted:
            self._session = self._open(device)
        return self

    def accepts(self, frames: int) -> bool:
        """Whether the graph takes chunks of ``frames`` STFT frames."""
        return self.input_shape[3] in (None, frames)

    def __call__(self, planes: np.ndarray) -> np.ndarray:
        """Run the network.

        Args:
            planes: ``[B, 4, dim_f, frames]`` float32.

        Returns:
            ``[B, 4, dim_f, frames]`` float32. A graph exported for a fixed batch runs the
            chunks that many at a time, the last group padded with silence.
        """
        fixed = self.input_shape[0]
        if fixed is None or fixed == len(planes):
            return self._session.run(None, {self._input: planes})[0]
        outputs = []
        for first in range(0, len(planes), fixed):
            group = planes[first : first + fixed]
            short = fixed - len(group)
            if short:
                group = np.concatenate([group, np.zeros((short, *group.shape[1:]), group.dtype)])
            outputs.append(self._session.run(None, {self._input: group})[0][: fixed - short])
        return np.concatenate(outputs)
