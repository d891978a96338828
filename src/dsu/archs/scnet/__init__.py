"""SCNet and MSST's ``scnet_masked`` and ``scnet_tran`` variants, written here, loading
the published MSST checkpoints byte-for-byte.

- :mod:`.config`: the typed ``model:`` section (:func:`parse_model_config`).
- :mod:`.network`: the three networks, pure ``nn.Module`` s; :mod:`.layers`: the SD/SU
  encoder and decoder; :mod:`.separation`: the dual-path RNN / transformer bottleneck.

A model is one checkpoint and its MSST YAML config; :func:`load` builds the network the
entry's arch names, loads the weights strictly and wraps it in
:class:`~dsu.archs.msst.MsstModel` (MSST's framing with ``audio.chunk_size`` or
``inference.chunk_size`` and ``inference.num_overlap``, batch size, TTA, the residual stem
of a ``training.target_instrument``). SCNet takes any chunk length (it pads internally),
so no length wrapper is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import torch

from dsu.archs.families import msst_arch
from dsu.archs.msst import MsstModel, load_msst
from dsu.archs.scnet.config import (
    ARCHS,
    SCNET,
    SCNET_MASKED,
    SCNET_TRAN,
    ScnetConfig,
    TransformerConfig,
    parse_model_config,
)
from dsu.archs.scnet.network import SCNet, SCNetMasked, SCNetTran
from dsu.errors import RegistryError
from dsu.registry.entry import ModelEntry

NETWORKS: dict[str, type[SCNet]] = {
    SCNET: SCNet,
    SCNET_MASKED: SCNetMasked,
    SCNET_TRAN: SCNetTran,
}
"""Arch name -> network class."""


def checkpoint_arch(arch: str, state: Mapping[str, torch.Tensor]) -> str:
    """The variant a checkpoint holds: its mask head or its transformers say so, whatever
    ``arch`` (a scanned folder without ``training.model_type`` calls every SCNet
    ``scnet``: the masked variant's config keys are the same)."""
    if "mask_layer.0.weight" in state:
        return SCNET_MASKED
    if any(".time_layer." in key for key in state):
        return SCNET_TRAN
    return arch


def build(arch: str, model: Mapping[str, Any]) -> SCNet:
    """The network a ``model:`` section describes for ``arch``, with random weights.

    Raises:
        RegistryError: an unknown, missing or ill-typed key (named).
    """
    return NETWORKS[arch](parse_model_config(arch, model))


def build_network(config: dict[str, Any]) -> SCNet:
    """The network a whole MSST config describes (arch from ``training.model_type`` or
    the ``model:`` keys), with random weights; no checkpoint is read.

    Raises:
        RegistryError: the config is not an SCNet one, or a key is bad (named).
    """
    arch = msst_arch(config)
    if arch not in ARCHS:
        raise RegistryError(f"not an SCNet config (it describes {arch!r})")
    return build(arch, config["model"])


def _network(arch: str, config: dict[str, Any], state: dict[str, torch.Tensor]) -> SCNet:
    net = build(checkpoint_arch(arch, state), config["model"])
    outputs = len(net.config.sources)
    training = config.get("training") or {}
    instruments = training.get("instruments") or ()
    if outputs != len(instruments) and not (outputs == 1 and training.get("target_instrument")):
        raise RegistryError(
            f"model.sources names {outputs} stem(s) but training.instruments names "
            f"{len(instruments)} ({', '.join(map(str, instruments))}); they must match"
        )
    return net


def load(entry: ModelEntry, **options: Any) -> MsstModel:
    """Build an SCNet (plain, masked or transformer) from a registry entry, on the CPU,
    in fp32 (:func:`dsu.archs.msst.load_msst`; ``tta`` option; fp16 weights widened)."""
    return load_msst(entry, "SCNet", partial(_network, entry.arch), **options)


__all__ = [
    "ARCHS",
    "NETWORKS",
    "SCNet",
    "SCNetMasked",
    "SCNetTran",
    "ScnetConfig",
    "TransformerConfig",
    "build",
    "build_network",
    "checkpoint_arch",
    "load",
    "parse_model_config",
]
