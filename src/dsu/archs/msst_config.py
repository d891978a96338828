"""The YAML side of MSST-layout models: reading a config safely, and the stems it names.

Torch-free, so ``dsu models scan`` and the registry can read configs without loading a
network (:mod:`dsu.archs.msst` builds on it).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml

from dsu.errors import RegistryError

CONFIG_SECTIONS = ("model", "audio")
"""Sections every MSST config must have (the model's under another name for the layouts
:func:`model_section` knows)."""

KWARGS_SECTION = "kwargs"
"""Where BandIt v2 configs keep the network's arguments (MSST builds it from ``kwargs:``)."""


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also builds tuples for ``!!python/tuple``.

    MSST writes configs with PyYAML's full dumper, so tuples (``freqs_per_bands``,
    ``multi_stft_resolutions_window_sizes``) carry that tag. No other Python tag is
    constructed: ``!!python/object`` and friends stay errors.
    """


ConfigLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple",
    lambda loader, node: tuple(loader.construct_sequence(node, deep=True)),
)


def read_config(path: Path) -> dict[str, Any]:
    """Read an MSST YAML config.

    Returns:
        The config as nested dicts (sections ``model``, ``audio``, usually ``training``
        and ``inference``); ``!!python/tuple`` values are tuples.

    Raises:
        RegistryError: naming ``path``, when the file cannot be read, is not valid YAML,
            uses a Python tag other than ``!!python/tuple``, is not a mapping, or lacks a
            ``model:`` or ``audio:`` section.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: cannot read the model config ({exc})") from exc
    try:
        config = yaml.load(text, Loader=ConfigLoader)
    except yaml.constructor.ConstructorError as exc:
        raise RegistryError(
            f"{path}: the model config uses a YAML tag DSU does not construct ({exc.problem}); "
            "only plain YAML and !!python/tuple are read"
        ) from exc
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: the model config is not valid YAML ({exc})") from exc
    if not isinstance(config, dict):
        raise RegistryError(f"{path}: the model config must be a YAML mapping of sections")
    for section in CONFIG_SECTIONS:
        found = model_section(config) if section == "model" else config.get(section)
        if not isinstance(found, dict):
            raise RegistryError(
                f"{path}: the model config has no {section}: section; "
                "is this the YAML that came with the checkpoint?"
            )
    return config


def model_section(config: Mapping[str, Any]) -> Any:
    """The section holding the network's hyperparameters: ``model:``; or, in MSST's
    Demucs layout, the section ``model:`` names (``model: htdemucs`` with an
    ``htdemucs:`` section); or BandIt v2's ``kwargs:``. None when there is none."""
    model = config.get("model")
    if isinstance(model, str):
        return config.get(model)
    if model is None:
        return config.get(KWARGS_SECTION)
    return model


def is_name_list(value: object) -> bool:
    """Whether ``value`` is what ``training.instruments`` must be: a non-empty list of names."""
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(name, str) and name for name in value)
    )


def training_instruments(training: Mapping[str, Any]) -> tuple[str, ...]:
    """``training.instruments`` as written.

    Raises:
        RegistryError: it is not a non-empty list of names.
    """
    instruments = training.get("instruments")
    if not is_name_list(instruments):
        raise RegistryError(
            f"training.instruments must be a list of stem names, got {instruments!r}"
        )
    return tuple(instruments)


def reject_unknown_keys(
    section: Mapping[str, Any], name: str, known: Collection[str], family: str
) -> None:
    """Refuse a ``name:`` section holding keys the ``family``'s network does not take.

    Raises:
        RegistryError: naming every unknown key and listing the known ones.
    """
    unknown = sorted(str(key) for key in section if key not in known)
    if unknown:
        raise RegistryError(
            f"unknown {family} key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
            f"known {name} keys: {', '.join(sorted(known))}. Fix or remove them."
        )


def config_stems(
    config: Mapping[str, Any], source: object = "config", *, residual: bool = True
) -> list[str]:
    """The stems an MSST model outputs, in order, lower-cased (``Vocals`` -> ``vocals``).

    ``training.instruments`` when the config names no ``training.target_instrument``;
    otherwise the target, followed (when ``residual``) by the residual (mixture - target)
    under the name of the one other instrument when ``instruments`` names exactly one more.

    Raises:
        RegistryError: naming ``source``, when ``training.instruments`` is not a
            non-empty list of names, the target is not one of them, or two names are
            the same once lower-cased.
    """
    training = config.get("training")
    training = training if isinstance(training, Mapping) else {}
    instruments = training.get("instruments")
    target = training.get("target_instrument")
    if not is_name_list(instruments):
        raise RegistryError(f"{source}: training.instruments must be a list of stem names")
    if target and target not in instruments:
        raise RegistryError(
            f"{source}: training.target_instrument {target!r} is not one of "
            f"training.instruments ({', '.join(instruments)})"
        )
    names = [name.lower() for name in instruments]
    if len(set(names)) != len(names):
        raise RegistryError(
            f"{source}: training.instruments {list(instruments)} repeat once lower-cased"
        )
    if not target:
        return names
    others = [name for name in names if name != target.lower()]
    if residual and len(others) == 1:
        return [target.lower(), others[0]]
    return [target.lower()]
