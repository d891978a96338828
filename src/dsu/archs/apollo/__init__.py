"""Apollo restoration (JusperLee/Apollo): one output, the restored signal.

Two checkpoint layouts load, each read without executing pickled code:

- the official ``pytorch_model.bin`` (``{"model_name", "state_dict", "model_args",
  "infos"}``, whose ``infos`` holds a ``torch.torch_version.TorchVersion``, the one
  non-tensor class admitted), with no config: the network's size is read off the
  weights (:func:`~dsu.archs.apollo.config.infer_from_state`);
- MSST's ``.ckpt`` + ``.yaml`` (``training.model_type: apollo``), the state dict bare
  or under ``state_dict`` / ``model_state_dict`` / ``state``; a Lightning training
  checkpoint's ``audio_model.`` generator is taken and its discriminator dropped.

The model runs on the engine's ``"demucs"`` framing with exact context: each chunk is
fed :func:`~dsu.archs.apollo.network.context_frames` hops of the surrounding audio on
both sides, more than the network's whole receptive field, and the engine says where each
chunk lies in the track (``positional``: :meth:`ApolloModel.forward_at`). A chunk is then
run on the part of its input that lies inside the track, starting on the whole track's
STFT hop grid, so its centre equals what one pass over the whole track gives (to float
rounding) wherever the chunks fall, the track's ends included. The chunks need no overlap
and no cross-fade.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.torch_version import TorchVersion

from dsu.archs.apollo.config import (
    DEFAULT_SAMPLE_RATE,
    DEFAULT_WIN_MS,
    ApolloConfig,
    from_msst,
    infer_from_state,
)
from dsu.archs.apollo.network import Apollo, context_frames
from dsu.archs.base import SeparationModel
from dsu.archs.msst import load_strict, read_state_dict
from dsu.archs.msst_config import read_config
from dsu.errors import RegistryError
from dsu.registry.entry import ModelEntry

__all__ = ["Apollo", "ApolloConfig", "ApolloModel", "build_network", "load"]

STEM = "restored"
"""The output's name when the config names none."""
SEGMENT_HOPS = 500
"""Default chunk: 500 hops (5 s at 44.1 kHz), 22% context overhead with 6 layers."""
GENERATOR_PREFIX = "audio_model."
"""A Lightning training checkpoint's generator keys (the rest is the discriminator)."""
SAFE_GLOBALS = (TorchVersion,)
"""Non-tensor classes the official checkpoint pickles (its ``infos``)."""


class ApolloModel(SeparationModel):
    """An Apollo network as the engine runs it.

    Args:
        net: the network, ``[B, C, S] -> [B, C, S]``.
        samplerate: the rate inputs are resampled to.
        stem: the output's name.
        channels: channels the engine feeds (each is restored on its own).
        batch_size: chunks per forward pass the config asks for, or None.

    Attributes:
        context: samples of surrounding audio fed on each side of a chunk.
    """

    overlap = 0.0
    window = "rect"
    positional = True

    def __init__(
        self,
        net: Apollo,
        samplerate: int,
        stem: str = STEM,
        channels: int = 2,
        batch_size: int | None = None,
    ) -> None:
        self.net = net.eval()
        self.samplerate = samplerate
        self.channels = channels
        self.stems = [stem]
        self.batch_size = batch_size
        self.hop = net.config.hop
        self.context = context_frames(net.config.layer) * self.hop
        self.segment = SEGMENT_HOPS * self.hop
        self._min_length = net.config.window // 2 + 1

    def valid_length(self, length: int, segment: int) -> int:
        """``length`` plus :attr:`context` on each side."""
        return length + 2 * self.context

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """Restore each item as a whole track: ``[B, C, T] -> [B, 1, C, T]``."""
        return self._restore(mix).unsqueeze(1)

    def forward_at(self, mix: torch.Tensor, starts: list[int], length: int) -> torch.Tensor:
        """Restore chunks ``mix [B, C, T]`` whose first samples lie at track positions
        ``starts`` of a track of ``length`` samples: ``[B, 1, C, T]``.

        Each item is run on its samples inside the track from the first hop-grid position
        on (where the whole track's STFT frames lie); the rest of the output is zeros,
        within the context the engine trims. Items with the same span share a pass.
        """
        out = mix.new_zeros(mix.shape[0], 1, *mix.shape[1:])
        spans: dict[tuple[int, int], list[int]] = {}
        for item, start in enumerate(starts):
            first = max(0, -(-start // self.hop) * self.hop)
            end = min(start + mix.shape[-1], length)
            if end > first:
                spans.setdefault((first - start, end - start), []).append(item)
        for (lo, hi), items in spans.items():
            out[items, 0, :, lo:hi] = self._restore(mix[items, :, lo:hi])
        return out

    def _restore(self, mix: torch.Tensor) -> torch.Tensor:
        """``[B, C, T] -> [B, C, T]``; an input too short for the STFT's reflect padding
        (a track under ``W / 2 + 1`` samples) is zero-padded at its end, then trimmed."""
        length = mix.shape[-1]
        if length < self._min_length:
            mix = torch.nn.functional.pad(mix, (0, self._min_length - length))
        return self.net(mix)[..., :length]

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> ApolloModel:
        self.net.to(device)
        return self


def build_network(config: dict[str, Any]) -> Apollo:
    """The network an MSST Apollo config describes, with random weights.

    Raises:
        RegistryError: a key that is missing, unknown or out of range (named).
    """
    return Apollo(from_msst(config).model)


def load(entry: ModelEntry, **_: Any) -> ApolloModel:
    """Build an Apollo model from a registry entry, on the CPU, in fp32.

    Args:
        entry: one weights file, and an MSST YAML config or none (official layout; the
            entry's ``options`` may give ``sr`` and ``win``, default 44100 and 20).
        **_: options meant for other families.

    Raises:
        RegistryError: not one weights file; a config key that is missing, unknown or
            out of range; a config that disagrees with the checkpoint's shapes; a
            checkpoint that is not an Apollo's; stems in models.json other than the
            model's one output.
        CorruptCheckpoint: the weights file is missing, truncated or not a checkpoint.
    """
    if len(entry.weights) != 1:
        raise RegistryError(
            f"{entry.name}: an Apollo model has exactly one weights file, got {len(entry.weights)}"
        )
    weights = entry.weights[0]
    state = generator_state(read_weights(weights))
    if entry.config is None:
        config = infer_from_state(
            state,
            str(weights),
            sr=_option(entry, "sr", DEFAULT_SAMPLE_RATE),
            win=_option(entry, "win", DEFAULT_WIN_MS),
        )
        samplerate, channels, stem, chunks = config.sr, 2, STEM, None
    else:
        raw = read_config(entry.config)
        parsed = from_msst(raw, str(entry.config))
        config, samplerate, channels = parsed.model, parsed.samplerate, parsed.channels
        stem = parsed.target or STEM
        chunks = _batch_size(raw)
        found = infer_from_state(state, str(weights), sr=config.sr, win=config.win)
        if found != config:
            raise RegistryError(
                f"{entry.config}: model: says feature_dim={config.feature_dim}, "
                f"layer={config.layer}, but {weights.name} holds feature_dim="
                f"{found.feature_dim}, layer={found.layer}; use the config published "
                "with the checkpoint"
            )
    net = Apollo(config)
    load_strict(net, state, weights)
    # A scanned MSST config may add its residual instrument after the target.
    if entry.stems and entry.stems[0] != stem:
        raise RegistryError(
            f"{entry.name}: models.json lists stems {list(entry.stems)} but an Apollo "
            f"model has one output, {stem!r}; fix the entry's 'stems'"
        )
    return ApolloModel(net, samplerate, stem, channels, chunks)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of an Apollo checkpoint, weights-only, fp32 (see the module)."""
    with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
        return read_state_dict(path)


def generator_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without a Lightning checkpoint's ``audio_model.`` prefix and its
    discriminator, or as it is when it has no such prefix."""
    if not any(key.startswith(GENERATOR_PREFIX) for key in state):
        return dict(state)
    return {
        key[len(GENERATOR_PREFIX) :]: value
        for key, value in state.items()
        if key.startswith(GENERATOR_PREFIX)
    }


def _option(entry: ModelEntry, key: str, default: int) -> int:
    value = entry.options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RegistryError(
            f"{entry.name}: models.json option {key!r} must be a positive integer, got {value!r}"
        )
    return value


def _batch_size(raw: Mapping[str, Any]) -> int | None:
    inference = raw.get("inference")
    value = inference.get("batch_size") if isinstance(inference, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
