"""HTDemucs fine-tunes saved in the MSST layout: a bare state dict (``.ckpt``) and an
OmegaConf YAML with ``model: htdemucs`` and an ``htdemucs:`` section.

The network is the ``demucs`` package's own :class:`~demucs.htdemucs.HTDemucs`, built from
the ``htdemucs:`` section plus ``training.instruments`` (its sources),
``training.channels``, ``training.samplerate`` and ``training.segment``, as MSST's
``get_model`` builds its copy of it; the state dict then loads strictly. The section's
keys are the constructor's arguments: any other key is named in the error, and MSST's
own ``num_subbands`` must be 1 (the ``demucs`` package has no sub-band split; every
public config says 1).

It runs on the engine's ``"msst_demucs"`` framing, MSST's ``demix`` for
``model_type: htdemucs``: chunks of ``round(samplerate * segment)`` samples every
``chunk // inference.num_overlap`` samples, zeros past the end, equal weights. Unlike the
Demucs family the track is not standardised first (only with ``inference.normalize``);
the network standardises each chunk itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from demucs.htdemucs import HTDemucs

from dsu.archs.demucs import DemucsModel
from dsu.archs.msst import check_stems, entry_files, load_strict, read_state_dict
from dsu.archs.msst_config import (
    config_stems,
    read_config,
    reject_unknown_keys,
    training_instruments,
)
from dsu.errors import RegistryError
from dsu.registry.entry import ModelEntry

__all__ = ["MsstDemucsConfig", "MsstDemucsModel", "build_network", "load"]

MODEL = "htdemucs"
"""The ``model:`` value (and section name) this module reads."""

FROM_TRAINING = ("sources", "audio_channels", "samplerate", "segment")
"""HTDemucs arguments MSST takes from ``training:``, not from the ``htdemucs:`` section."""

MSST_ONLY_KEYS = {"num_subbands": 1}
"""Keys of MSST's own HTDemucs copy, with the one value the ``demucs`` package's equals."""

NETWORK_KEYS: frozenset[str] = frozenset(
    name for name in inspect.signature(HTDemucs.__init__).parameters if name != "self"
) - frozenset(FROM_TRAINING)
"""The ``htdemucs:`` keys: the constructor's arguments."""

DEFAULT_NUM_OVERLAP = 4


@dataclass(frozen=True)
class MsstDemucsConfig:
    """Everything inference needs from an MSST HTDemucs config.

    Attributes:
        instruments: ``training.instruments`` as written (the network's sources).
        channels: ``training.channels``.
        samplerate: ``training.samplerate`` in Hz.
        segment: ``training.segment`` in seconds (the chunk is ``round(samplerate * segment)``).
        network: the ``htdemucs:`` arguments, MSST-only keys removed, numbers typed.
        num_overlap: ``inference.num_overlap``.
        batch_size: ``inference.batch_size`` or None.
        normalize: ``inference.normalize``: standardise the whole track first.
    """

    instruments: tuple[str, ...]
    channels: int
    samplerate: int
    segment: float
    network: Mapping[str, Any]
    num_overlap: int = DEFAULT_NUM_OVERLAP
    batch_size: int | None = None
    normalize: bool = False

    @property
    def chunk(self) -> int:
        """Samples per chunk, as MSST's ``demix`` rounds them."""
        return round(self.samplerate * self.segment)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> MsstDemucsConfig:
        """Parse a loaded YAML mapping (``training``, ``htdemucs``, ``inference``, ...).

        Raises:
            RegistryError: a section or key is missing, unknown or out of range.
        """
        if raw.get("model") != MODEL or not isinstance(raw.get(MODEL), Mapping):
            raise RegistryError(
                f"an MSST HTDemucs config needs 'model: {MODEL}' and an '{MODEL}:' section "
                f"(got model: {raw.get('model')!r})"
            )
        training = raw.get("training")
        if not isinstance(training, Mapping):
            raise RegistryError("an MSST HTDemucs config needs a 'training' section")
        instruments = training_instruments(training)
        if training.get("target_instrument"):
            raise RegistryError(
                "training.target_instrument must be null for HTDemucs: it returns every "
                "one of training.instruments"
            )
        inference = raw.get("inference") or {}
        batch = inference.get("batch_size")
        return cls(
            instruments=instruments,
            channels=_positive(training, "training", "channels"),
            samplerate=_positive(training, "training", "samplerate"),
            segment=_seconds(training.get("segment")),
            network=_network_keys(raw[MODEL]),
            num_overlap=(
                _positive(inference, "inference", "num_overlap")
                if "num_overlap" in inference
                else DEFAULT_NUM_OVERLAP
            ),
            batch_size=None if batch is None else _positive(inference, "inference", "batch_size"),
            normalize=bool(inference.get("normalize", False)),
        )


def _positive(section: Mapping[str, Any], name: str, key: str) -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RegistryError(f"{name}.{key} must be a positive integer, got {value!r}")
    return value


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise RegistryError(f"training.segment must be a positive number of seconds, got {value!r}")
    return float(value)


def _network_keys(section: Mapping[str, Any]) -> dict[str, Any]:
    reject_unknown_keys(section, MODEL, NETWORK_KEYS | MSST_ONLY_KEYS.keys(), "HTDemucs")
    for key, value in MSST_ONLY_KEYS.items():
        if section.get(key, value) != value:
            raise RegistryError(
                f"{MODEL}.{key} must be {value} (the demucs package's HTDemucs has no other), "
                f"got {section[key]!r}"
            )
    defaults = inspect.signature(HTDemucs.__init__).parameters
    network = {}
    for key, value in section.items():
        if key in MSST_ONLY_KEYS:
            continue
        if isinstance(defaults[key].default, float) and isinstance(value, str):
            # OmegaConf reads `1e-3` as a number, YAML 1.1 (PyYAML) as a string.
            try:
                value = float(value)
            except ValueError:
                raise RegistryError(f"{MODEL}.{key} must be a number, got {value!r}") from None
        network[key] = value
    return network


class MsstDemucsModel(DemucsModel):
    """An HTDemucs from an MSST config, run with MSST's ``demix`` framing for it."""

    framing = "msst_demucs"

    def __init__(self, net: HTDemucs, config: MsstDemucsConfig, stems: list[str]) -> None:
        super().__init__(net)
        self.segment = self.max_segment = config.chunk
        self.num_overlap = config.num_overlap
        self.overlap = 1 - 1 / config.num_overlap
        self.window = "rect"
        self.normalize = config.normalize
        self.batch_size = config.batch_size
        self.stems = stems


def build_network(config: dict[str, Any]) -> HTDemucs:
    """The HTDemucs an MSST config describes, with random weights.

    Raises:
        RegistryError: a key is unknown or a value out of range (named).
    """
    parsed = MsstDemucsConfig.from_dict(config)
    return _build(parsed)


def _build(config: MsstDemucsConfig) -> HTDemucs:
    try:
        return HTDemucs(
            sources=list(config.instruments),
            audio_channels=config.channels,
            samplerate=config.samplerate,
            segment=config.segment,
            **config.network,
        )
    except (TypeError, ValueError, AssertionError, ZeroDivisionError) as exc:
        raise RegistryError(f"the {MODEL}: section does not build an HTDemucs ({exc})") from exc


def load(entry: ModelEntry, **_: Any) -> MsstDemucsModel:
    """Build an MSST-layout HTDemucs from a registry entry, on the CPU, in fp32.

    Raises:
        RegistryError: no config or not one weights file; a bad config key (named, with
            the file); a checkpoint that does not fit the config (tensors named); stems
            that differ from the entry's.
    """
    config_path, weights = entry_files(entry, "an MSST HTDemucs model")
    raw = read_config(config_path)
    try:
        config = MsstDemucsConfig.from_dict(raw)
        net = _build(config)
    except RegistryError as exc:
        raise RegistryError(f"{config_path}: {exc.message}") from exc
    state: dict[str, torch.Tensor] = read_state_dict(weights)
    load_strict(net, state, weights)
    model = MsstDemucsModel(net, config, config_stems(raw, config_path))
    check_stems(entry, model.stems)
    return model
