"""Demucs v2/v3/v4 through the ``demucs`` package's own model classes.

A checkpoint is a ``.th`` package (``klass``, ``args``, ``kwargs``, ``state``) as
``demucs.states.serialize_model`` writes it; diffq-quantized states (``mdx_q``,
``mdx_extra_q``) need the ``quantized`` extra. A bag is a YAML file (``models``,
optional ``weights`` and ``segment``) whose members are the entry's weight files, in
order.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from demucs.htdemucs import HTDemucs
from demucs.states import load_model

from dsu.archs.base import Bag, SeparationModel
from dsu.errors import RegistryError, UnsupportedModel
from dsu.registry.entry import ModelEntry

if TYPE_CHECKING:
    from dsu.archs.demucs_openvino import OpenVinoHTDemucs

log = logging.getLogger(__name__)


class DemucsModel(SeparationModel):
    """One Demucs network (``Demucs``, ``HDemucs`` or ``HTDemucs``).

    Chunks are ``net.segment`` seconds with 25% overlap and a triangle window; the track
    is standardised by its mono mix's mean and std, as ``demucs.api`` does.

    Attributes:
        max_segment: the longest chunk in samples the network takes: an HTDemucs pads
            every chunk to its training segment and cannot take a longer one; None (no
            limit) for the convolutional generations.
        backends: ``openvino`` for an HTDemucs (:mod:`dsu.archs.demucs_openvino`).
    """

    overlap = 0.25
    normalize = True
    window = "triangle"

    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net.eval()
        self.samplerate = int(net.samplerate)
        self.channels = int(net.audio_channels)
        self.stems = list(net.sources)
        self.segment = int(float(Fraction(net.segment)) * self.samplerate)
        self.max_segment: int | None = (
            self.segment if isinstance(net, HTDemucs) and net.use_train_segment else None
        )
        self.backends = ("openvino",) if isinstance(net, HTDemucs) else ()
        # Kept across separations, so a worker switching precision compiles each once.
        self._openvino: OpenVinoHTDemucs | None = None
        self._backend = "torch"
        self._requested = False
        self._openvino_failed = False  # under auto, a failed export is not retried

    def use_backend(self, backend: str, *, requested: bool) -> None:
        self._requested = requested
        if backend == "openvino" and self._openvino_failed and not requested:
            backend = "torch"
        self._backend = backend
        if backend == "openvino" and self._openvino is None:
            from dsu.archs.demucs_openvino import OpenVinoHTDemucs

            self._openvino = OpenVinoHTDemucs(self.net)

    def valid_length(self, length: int, segment: int) -> int:
        if isinstance(self.net, HTDemucs):
            # A transformer model always sees whole segments (it pads a short one itself).
            return segment
        if hasattr(self.net, "valid_length"):
            return int(self.net.valid_length(length))
        return length

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """``[B, C, T] -> [B, S, C, T']``."""
        if mix.device.type != "cpu":
            return self.net(mix)
        if self._backend == "openvino" and self._openvino is not None:
            try:
                return self._openvino(mix)
            except UnsupportedModel:
                if self._requested:
                    raise
                log.warning(
                    "this HTDemucs does not run on OpenVINO; it runs on torch", exc_info=True
                )
                self._backend, self._openvino_failed = "torch", True
        with _without_mha_fastpath():
            return self.net(mix)

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> DemucsModel:
        # On the CPU, oneDNN runs HTDemucs' 2-D convolutions (spectral branch) without a
        # layout reorder per call when the weights are channels-last: ~5% less time per
        # chunk with 1 thread, ~3% with 2, at ~128 dB against the contiguous layout.
        channels_last = torch.device(device).type == "cpu" and isinstance(self.net, HTDemucs)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(device=device, dtype=dtype, memory_format=memory_format)
        return self


@contextlib.contextmanager
def _without_mha_fastpath() -> Iterator[None]:
    """Route ``nn.MultiheadAttention`` through ``scaled_dot_product_attention``.

    On the CPU the fused fast path computes HTDemucs' cross-attention with plain
    ``bmm`` + softmax; the regular path uses the flash kernel: the same attention to
    ~130 dB, about 9% less time per chunk (bench/bench_demucs.py).
    """
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def load_package(path: Path) -> torch.nn.Module:
    """Build the network stored in a ``.th`` package.

    Raises:
        RegistryError: the file is unreadable, damaged or not a Demucs package (the message
            names the file and the problem).
        UnsupportedModel: a diffq-quantized package without the ``quantized`` extra.
    """
    from dsu.registry.checkpoint import read_torch

    # What demucs.states.serialize_model writes into every package.
    keys = {"klass", "args", "kwargs", "state"}
    package = read_torch(path, weights_only=False)
    if not isinstance(package, dict) or not keys <= package.keys():
        raise RegistryError(
            f"{path}: a PyTorch file but not a Demucs package (expected the keys "
            f"{', '.join(sorted(keys))}); is it a checkpoint of another family?"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_model(package)
    except SystemExit as exc:  # demucs.states calls fatal() when diffq is missing
        raise UnsupportedModel(
            f"{path.name} is a diffq-quantized Demucs model: install the 'quantized' extra "
            "(pip install 'dsu[quantized]')"
        ) from exc
    except (KeyError, TypeError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        raise RegistryError(f"{path}: not a loadable Demucs checkpoint ({exc})") from exc


def _bag_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"{path}: unreadable Demucs bag definition ({exc})") from exc
    if not isinstance(config, dict):
        raise RegistryError(f"{path}: a Demucs bag definition must be a mapping")
    return config


def load(entry: ModelEntry, **_: Any) -> DemucsModel | Bag:
    """Build a Demucs model or bag from a registry entry.

    Bag weights and segment come from ``entry.options`` or else the bag YAML
    (``entry.config``); the YAML's ``models`` order must match ``entry.weights``.
    """
    if not entry.weights:
        raise RegistryError(f"model {entry.name!r} lists no weight files")
    config = _bag_config(entry.config)
    weights = entry.options.get("weights", config.get("weights"))
    segment = entry.options.get("segment", config.get("segment"))
    nets = [load_package(path) for path in entry.weights]
    if segment is not None:
        for net in nets:
            # As demucs.apply.BagOfModels: a bag segment may shorten an HTDemucs, never lengthen it.
            if not isinstance(net, HTDemucs) or segment <= net.segment:
                net.segment = segment
    members = [DemucsModel(net) for net in nets]
    if len(members) == 1 and weights is None:
        return members[0]
    try:
        return Bag(members, [list(map(float, w)) for w in weights] if weights else [])
    except ValueError as exc:
        raise RegistryError(f"model {entry.name!r}: {exc}") from exc
