"""BandIt v2, the cinematic dialogue / music / effects separator, from MSST checkpoints.

A model is one checkpoint (``.ckpt``) and its MSST YAML config; :func:`load` builds
:class:`~dsu.archs.bandit.network.Bandit` from the config's ``kwargs:`` section
(:class:`~dsu.archs.bandit.config.BanditConfig`), loads the weights strictly and wraps it
in :class:`~dsu.archs.msst.MsstModel`: MSST's framing with ``audio.chunk_size`` (or
``inference.chunk_size``) and ``inference.num_overlap``; stems are ``training.instruments``
(``speech``, ``music``, ``sfx`` for the public Divide-and-Remaster model).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dsu.archs.bandit.config import BanditConfig
from dsu.archs.bandit.network import Bandit
from dsu.archs.msst import MsstModel, load_msst
from dsu.errors import RegistryError
from dsu.registry.entry import ModelEntry

__all__ = ["Bandit", "BanditConfig", "build_network", "load"]


def build_network(config: dict[str, Any]) -> nn.Module:
    """BandIt v2 with random weights for a whole MSST config (its ``kwargs:`` section).

    Raises:
        RegistryError: a key is unknown or a value refused (named).
    """
    parsed = BanditConfig.from_dict(config)
    try:
        return Bandit(parsed)
    except ValueError as exc:  # a band split that leaves bins uncovered
        raise RegistryError(f"kwargs: {exc}") from exc


def _network(config: dict[str, Any], _state: dict[str, torch.Tensor]) -> nn.Module:
    return build_network(config)


def load(entry: ModelEntry, **options: Any) -> MsstModel:
    """Build a BandIt v2 model from a registry entry, on the CPU, in fp32
    (:func:`dsu.archs.msst.load_msst`; ``tta`` option; fp16 weights are widened)."""
    return load_msst(entry, "BandIt v2", _network, **options)
