"""The YAML side of MSST-layout models: reading a config safely, and the stems it names.

Torch-free, so ``dsu models scan`` and the registry can read configs without loading a
network (:mod:`dsu.archs.msst` builds on it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dsu.errors import RegistryError

CONFIG_SECTIONS = ("model", "audio")
"""Sections every MSST config must have."""


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
        if not isinstance(config.get(section), dict):
            raise RegistryError(
                f"{path}: the model config has no {section}: section; "
                "is this the YAML that came with the checkpoint?"
            )
    return config


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
    if not (
        isinstance(instruments, list | tuple)
        and instruments
        and all(isinstance(name, str) and name for name in instruments)
    ):
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
