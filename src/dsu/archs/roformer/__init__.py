"""BS-RoFormer and Mel-Band RoFormer, written here, loading the published MSST / UVR
checkpoints byte-for-byte.

- :mod:`.config`: the typed ``model:`` section (:func:`parse_model_config`).
- :mod:`.bs_roformer`, :mod:`.mel_band_roformer`: the two networks, pure ``nn.Module`` s.
- :mod:`.core`: the band-split network they share; :mod:`.bands`: band split and mask
  estimators; :mod:`.layers`: the transformer; :mod:`.pope`: PoPE positions;
  :mod:`.hyperace`: the HyperACE variant, recognised from its checkpoint's keys.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import torch

from dsu.archs.families import msst_arch
from dsu.archs.msst import MsstModel, load_msst
from dsu.archs.roformer.bs_roformer import BSRoformer
from dsu.archs.roformer.config import (
    BS_ROFORMER,
    MEL_BAND_ROFORMER,
    BSRoformerConfig,
    MelBandRoformerConfig,
    RoformerConfig,
    parse_model_config,
)
from dsu.archs.roformer.core import BandRoformer
from dsu.archs.roformer.hyperace import BSRoformerHyperACE, is_hyperace
from dsu.archs.roformer.mel_band_roformer import MelBandRoformer
from dsu.errors import RegistryError
from dsu.registry.entry import ModelEntry

NETWORKS: dict[str, type[BandRoformer]] = {
    BS_ROFORMER: BSRoformer,
    MEL_BAND_ROFORMER: MelBandRoformer,
}
"""Arch name -> network class (each takes its arch's typed config)."""


def build(arch: str, model: dict[str, Any]) -> BandRoformer:
    """The network a ``model:`` section describes, with random weights.

    Raises:
        RegistryError: an unknown, missing or ill-typed key (named).
    """
    return NETWORKS[arch](parse_model_config(arch, model))


def build_network(config: dict[str, Any]) -> BandRoformer:
    """The network a whole MSST config describes (its arch told by
    :func:`dsu.archs.families.msst_arch`), with random weights.

    Raises:
        RegistryError: the config describes no RoFormer, or a bad ``model:`` key (named).
    """
    arch = msst_arch(config)
    if arch not in NETWORKS:
        raise RegistryError(f"the config describes a {arch!r} model, not a RoFormer")
    return build(arch, config["model"])


def _network(arch: str, config: dict[str, Any], state: dict[str, torch.Tensor]) -> BandRoformer:
    """The network for a config; a BS-RoFormer whose checkpoint carries HyperACE's
    segmentation heads is :class:`BSRoformerHyperACE`."""
    parsed = parse_model_config(arch, config["model"])
    # The engine takes back as many samples per chunk as it gave; on chunks that are a
    # multiple of the hop (every MSST chunk size) this changes no sample.
    parsed = dataclasses.replace(parsed, match_input_audio_length=True)
    if arch == BS_ROFORMER and is_hyperace(state):
        return BSRoformerHyperACE(parsed)
    return NETWORKS[arch](parsed)


def load(entry: ModelEntry, **options: Any) -> MsstModel:
    """Build a BS-RoFormer (plain, PoPE or HyperACE) or Mel-Band RoFormer from a registry
    entry, on the CPU, in fp32 (:func:`dsu.archs.msst.load_msst`; ``tta`` option)."""
    return load_msst(entry, "RoFormer", partial(_network, entry.arch), **options)


__all__ = [
    "BSRoformer",
    "BSRoformerConfig",
    "BSRoformerHyperACE",
    "BandRoformer",
    "MelBandRoformer",
    "MelBandRoformerConfig",
    "RoformerConfig",
    "build",
    "build_network",
    "load",
    "parse_model_config",
]
