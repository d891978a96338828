"""MDX23C (TFC-TDF U-Net v3) from MSST / UVR ``mdx_c_configs`` checkpoints and configs.

A model is one checkpoint (``.ckpt``) and its YAML config; :func:`load` builds
:class:`~dsu.archs.mdx23c.network.TfcTdfNet` from the config's ``audio:`` and ``model:``
sections, loads the weights strictly and wraps it in :class:`~dsu.archs.msst.MsstModel`
(MSST's framing, chunk ``audio.chunk_size`` or ``inference.chunk_size``,
``inference.num_overlap``). Stems are the config's ``training.instruments`` (or its
``target_instrument`` plus the residual), lower-cased: ``Vocals`` -> ``vocals``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dsu.archs.mdx23c.config import Mdx23cConfig
from dsu.archs.mdx23c.network import TfcTdfNet
from dsu.archs.msst import MsstModel, load_msst
from dsu.registry.entry import ModelEntry

__all__ = ["Mdx23cConfig", "TfcTdfNet", "ValidLengthNet", "build_network", "load"]


class ValidLengthNet(nn.Module):
    """Runs the network on any chunk length: ``[B, C, T] -> [B, S, C, T]``.

    The network takes only ``hop_length * (frames - 1)`` samples with ``frames`` a
    multiple of its time reduction. The config's own chunk size always is one (so the
    MSST framing's chunks pass unchanged); a chunk of another length, from a user's
    segment, is zero-padded at its end to the next valid length and the output trimmed.
    """

    def __init__(self, net: TfcTdfNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        length = mix.shape[-1]
        padded = self.net.valid_length(length)
        if padded != length:
            mix = F.pad(mix, (0, padded - length))
        return self.net(mix)[..., :length]


def build_network(config: dict[str, Any]) -> TfcTdfNet:
    """The network a whole MSST config describes, with random weights.

    Raises:
        RegistryError: a missing, unknown or ill-typed key (named).
    """
    parsed = Mdx23cConfig.from_dict(config)
    return TfcTdfNet(parsed.audio, parsed.model, len(parsed.targets))


def _network(config: dict[str, Any], _state: dict[str, torch.Tensor]) -> TfcTdfNet:
    return build_network(config)


def load(entry: ModelEntry, **options: Any) -> MsstModel:
    """Build an MDX23C model from a registry entry, on the CPU, in fp32
    (:func:`dsu.archs.msst.load_msst`; ``tta`` option; fp16 weights are widened)."""
    return load_msst(entry, "MDX23C", _network, wrap=ValidLengthNet, **options)
