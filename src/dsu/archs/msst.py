"""MSST-layout models: a checkpoint (``.ckpt``/``.pth``/``.safetensors``) and a YAML config.

Every family published in the layout of ZFTurbo's Music-Source-Separation-Training
(BS-RoFormer, Mel-Band RoFormer, MDX23C, SCNet, BandIt, ...) loads through this toolkit.
A family loader only says how to build its own pure network from the config;
:func:`load_msst` reads the config (:mod:`dsu.archs.msst_config`) and the weights, maps
them onto the network strictly and wraps it::

    def load(entry: ModelEntry, **options: Any) -> MsstModel:
        return load_msst(entry, "MyNet", lambda config, state: MyNet(config["model"]), **options)

:class:`MsstModel` takes the sample rate, channels, chunk size, overlap, batch size and
stems from the config and runs with the engine's ``"msst"`` framing (MSST's ``demix``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from dsu.archs.base import SeparationModel
from dsu.archs.msst_config import config_stems, read_config
from dsu.errors import CorruptCheckpoint, RegistryError, UnsupportedModel
from dsu.registry.checkpoint import read_torch
from dsu.registry.entry import ModelEntry

Builder = Callable[[dict[str, Any], dict[str, torch.Tensor]], torch.nn.Module]
"""Builds a family's network from an MSST config and the checkpoint's state dict (which
a family may inspect to tell variants apart, e.g. HyperACE's extra heads)."""

STATE_WRAPPERS = ("state_dict", "model_state_dict", "model", "state")
"""Keys under which checkpoints nest the state dict (Lightning, MSST, Demucs, Apollo)."""

DATA_PARALLEL_PREFIX = "module."

_SHOWN_KEYS = 5  # keys of each kind a mismatch error lists


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's weights, without executing any pickled code.

    ``.safetensors`` files are read with the ``safetensors`` package; anything else
    with ``torch.load(weights_only=True)`` (:func:`dsu.registry.checkpoint.read_torch`).
    The state dict is unwrapped from :data:`STATE_WRAPPERS` keys and a DataParallel
    ``module.`` prefix; fp16/bf16 tensors become fp32.

    Returns:
        Parameter name -> CPU tensor.

    Raises:
        CorruptCheckpoint: naming ``path``, when it is missing, empty, truncated or not a
            checkpoint.
        RegistryError: naming ``path``, when it holds pickled objects (which DSU does not
            execute) or no state dict.
        UnsupportedModel: a ``.safetensors`` file without the ``safetensors`` package.
    """
    path = Path(path)
    if not path.is_file():
        raise CorruptCheckpoint(f"{path}: checkpoint file not found")
    raw = _read_safetensors(path) if path.suffix == ".safetensors" else _torch_load(path)
    state = _unwrap(raw, path)
    if all(key.startswith(DATA_PARALLEL_PREFIX) for key in state):
        state = {key[len(DATA_PARALLEL_PREFIX) :]: value for key, value in state.items()}
    return {
        key: value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
        for key, value in state.items()
    }


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as exc:
        raise UnsupportedModel(
            f"{path.name} is a .safetensors checkpoint: install the safetensors package "
            "(pip install safetensors)"
        ) from exc
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptCheckpoint(f"{path}: not a readable .safetensors checkpoint ({exc})") from exc


def _torch_load(path: Path) -> object:
    try:
        return read_torch(path)
    except CorruptCheckpoint as exc:
        # The weights-only reader names the class or function a pickle wants to build.
        found = re.search(r"GLOBAL (\S+)", str(exc.__cause__))
        if found is None:
            raise
        raise RegistryError(
            f"{path}: the checkpoint contains pickled objects ({found.group(1)}) that DSU "
            "will not execute; re-save only its state dict (torch.save(model.state_dict(), "
            "...)) from a source you trust, or use a .safetensors file"
        ) from exc.__cause__


def _unwrap(raw: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside ``raw``, however many wrapper levels deep."""
    state = raw
    while isinstance(state, Mapping) and not _is_state(state):
        inner = next((state[k] for k in STATE_WRAPPERS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not _is_state(state):
        keys = ", ".join(map(str, list(state)[:_SHOWN_KEYS])) if isinstance(state, Mapping) else ""
        found = f"a mapping of {keys}" if keys else type(state).__name__
        raise RegistryError(
            f"{path}: no state dict (tensors by parameter name) found in the checkpoint, "
            f"which holds {found}"
        )
    return dict(state)


def _is_state(mapping: Mapping[Any, Any]) -> bool:
    return bool(mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in mapping.items()
    )


def load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Copy ``state`` into ``module``; every key and shape must match exactly.

    Raises:
        RegistryError: naming ``path``, listing the first missing, unexpected and
            mismatched-shape keys (with both shapes) and how many of each there are.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (checkpoint {tuple(state[k].shape)}, network {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{len(keys)} {kind} key{'s' * (len(keys) != 1)}: {', '.join(keys[:_SHOWN_KEYS])}"
        + (", ..." if len(keys) > _SHOWN_KEYS else "")
        for kind, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mismatched-shape", mismatched),
        )
        if keys
    ]
    if problems:
        raise RegistryError(
            f"{path}: the checkpoint does not fit the network its config describes "
            f"({'; '.join(problems)}); check that the config is the one published with it"
        )
    module.load_state_dict(state, strict=True)


def _positive_int(section: Mapping[str, Any], key: str, name: str, source: object) -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RegistryError(f"{source}: {name} must be a positive integer, got {value!r}")
    return value


class MsstModel(SeparationModel):
    """A pure MSST network with its config, run with MSST's framing.

    Args:
        net: maps ``[B, C, T]`` to ``[B, S, C, T]`` (or ``[B, C, T]`` for one stem), where
            ``S`` is the number of ``training.instruments``, or 1 when the config has a
            ``target_instrument`` (a network that returns every instrument anyway has the
            target picked out).
        config: the dict :func:`read_config` returns. Read: ``audio.sample_rate``,
            ``audio.num_channels`` (default 2), ``inference.chunk_size`` or else
            ``audio.chunk_size`` (as MSST's ``demix``), ``inference.num_overlap``
            (default 4), ``inference.batch_size`` (exposed as :attr:`batch_size`),
            ``inference.normalize`` (default off) and the stems (:func:`config_stems`).
        tta: test-time augmentation as MSST's ``--use_tta``: the mean of the network on
            the chunk, on its channels swapped (swapped back) and on its polarity
            inverted (inverted back); three forward passes per chunk.
        source: what to name in errors (the config's path).

    With ``inference.normalize`` the engine standardises the whole track by the mean and
    std of its mono mix (``normalize = True``), as MSST's inference does (its std is the
    population one, the engine's the sample one: a relative difference of ``1 / 2T``).
    The residual is then computed on the standardised chunks, so once the engine undoes
    the standardisation it is ``mixture - target + mean`` (the track's DC offset, ~0).

    Attributes:
        batch_size: ``inference.batch_size`` or None; the engine runs
            ``EngineOptions.batch_size``, a caller may default it to this.
    """

    framing = "msst"
    # audio-separator's framing too: its RoFormer path runs these same checkpoints.
    framings = ("msst", "uvr")

    def __init__(
        self,
        net: torch.nn.Module,
        config: Mapping[str, Any],
        *,
        tta: bool = False,
        source: object = "config",
    ) -> None:
        self.net = net.eval()
        self.tta = tta
        self.source = source
        audio = config.get("audio") or {}
        inference = config.get("inference") or {}
        training = config.get("training") or {}
        self.samplerate = _positive_int(audio, "sample_rate", "audio.sample_rate", source)
        self.channels = (
            _positive_int(audio, "num_channels", "audio.num_channels", source)
            if "num_channels" in audio
            else 2
        )
        if "chunk_size" in inference:
            self.segment = _positive_int(inference, "chunk_size", "inference.chunk_size", source)
        else:
            self.segment = _positive_int(audio, "chunk_size", "audio.chunk_size", source)
        if "num_overlap" in inference:
            self.num_overlap = _positive_int(
                inference, "num_overlap", "inference.num_overlap", source
            )
        if self.num_overlap > self.segment:
            raise RegistryError(
                f"{source}: inference.num_overlap ({self.num_overlap}) exceeds the chunk size "
                f"({self.segment})"
            )
        self.overlap = 1 - 1 / self.num_overlap
        if "batch_size" in inference:
            self.batch_size = _positive_int(inference, "batch_size", "inference.batch_size", source)
        self.normalize = bool(inference.get("normalize", False))
        self.stems = config_stems(config, source)
        self._instruments = list(training["instruments"])
        target = training.get("target_instrument")
        self._target = self._instruments.index(target) if target else None
        # Outputs the network itself produces; a residual stem is computed after.
        self._produced = 1 if target else len(self._instruments)
        self._residual = len(self.stems) > self._produced

    def _run(self, mix: torch.Tensor) -> torch.Tensor:
        """The network's stems ``[B, S', C, T]`` for ``mix`` ``[B, C, T]``."""
        out = self.net(mix)
        if out.dim() == 3:
            out = out.unsqueeze(1)
        if self._target is not None and out.shape[1] == len(self._instruments) > 1:
            out = out[:, self._target : self._target + 1]
        if out.shape[1] != self._produced or out.shape[2:] != mix.shape[1:]:
            raise RegistryError(
                f"{self.source}: the network returned shape {tuple(out.shape)} for input "
                f"{tuple(mix.shape)}, expected {self._produced} stem(s) of the input's shape; "
                "does the config match the checkpoint?"
            )
        return out

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        """``[B, C, T] -> [B, S, C, T]``, ``S = len(stems)``."""
        out = self._run(mix)
        if self.tta:
            swapped = self._run(mix.flip(1)).flip(2)
            inverted = -self._run(-mix)
            out = (out + swapped + inverted) / 3
        if self._residual:
            # MSST subtracts the target from the whole track after overlap-add; per chunk
            # is the same: the engine's windows are normalised to sum to 1 at every
            # sample and each chunk's input is the mixture there, so the weighted mean of
            # (mixture - target) is the mixture minus the weighted mean of the target.
            out = torch.cat([out, mix.unsqueeze(1) - out], 1)
        return out

    def to(self, device: torch.device, dtype: torch.dtype = torch.float32) -> MsstModel:
        self.net.to(device=device, dtype=dtype)
        return self


def load_msst(
    entry: ModelEntry,
    family: str,
    build: Builder,
    *,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    tta: bool | None = None,
    **_: Any,
) -> MsstModel:
    """Build an MSST-layout model from a registry entry, on the CPU, in fp32.

    Args:
        entry: one weights file and the YAML config published with it.
        family: the family's name, for messages.
        build: the network for a config and state dict; raises RegistryError naming a
            bad ``model:`` key (the config's path is added here).
        wrap: adapts the loaded network before it runs (e.g. to pad chunks to a length
            the network takes); the checkpoint is mapped onto the unwrapped network.
        tta: MSST's test-time augmentation; None takes ``entry.options["tta"]`` (off).
        **_: options meant for other families (the family table passes the same to all).

    Raises:
        RegistryError: no config or not one weights file; a bad config key (named, with
            the file); a checkpoint that does not fit the config (tensors named); stems
            that differ from the entry's.
    """
    config_path, weights = entry_files(entry, f"a {family} model")
    config = read_config(config_path)
    state = read_state_dict(weights)
    try:
        net = build(config, state)
    except RegistryError as exc:
        raise RegistryError(f"{config_path}: {exc.message}") from exc
    load_strict(net, state, weights)
    if tta is None:
        tta = bool(entry.options.get("tta", False))
    model = MsstModel(wrap(net) if wrap else net, config, tta=tta, source=config_path)
    check_stems(entry, model.stems)
    return model


def entry_files(entry: ModelEntry, model: str) -> tuple[Path, Path]:
    """The config and the one weights file of an MSST-layout entry.

    Args:
        model: the kind of model, for messages (``"a SCNet model"``).

    Raises:
        RegistryError: the entry names no config, or not exactly one weights file.
    """
    if entry.config is None:
        raise RegistryError(
            f"{entry.name}: {model} needs the YAML config published with its "
            "checkpoint (models.json 'config')"
        )
    if len(entry.weights) != 1:
        raise RegistryError(
            f"{entry.name}: {model} has exactly one weights file, got {len(entry.weights)}"
        )
    return Path(entry.config), entry.weights[0]


def check_stems(entry: ModelEntry, stems: list[str]) -> None:
    """Refuse an entry whose ``stems`` differ from the ``stems`` its config gives.

    Raises:
        RegistryError: naming both lists.
    """
    if entry.stems and [name.lower() for name in entry.stems] != stems:
        raise RegistryError(
            f"{entry.name}: models.json lists stems {list(entry.stems)} but the config "
            f"gives {stems}; fix the entry's 'stems'"
        )
