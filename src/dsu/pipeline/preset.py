"""Presets (pipelines shipped as data, ``presets/*.json``) and a request's pipeline
checked against the models directory.

Every surface turns what a user gave — a preset name, a spec object, or (on the command
line only) a spec file — into a checked :class:`~dsu.pipeline.spec.PipelineSpec` with
:func:`pipeline_from` and :func:`prepare`, without loading a model or importing torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsu.errors import BadRequest, ModelNotFound
from dsu.pipeline.spec import PipelineSpec, SpecError, load_spec, parse_spec, resolve_refs

if TYPE_CHECKING:
    from dsu.registry.entry import ModelEntry
    from dsu.registry.registry import Registry

PRESETS = "presets"
"""The data directory of :mod:`dsu.pipeline` that holds one ``<name>.json`` per preset."""


def _files() -> dict[str, Any]:
    folder = resources.files("dsu.pipeline") / PRESETS
    return {
        item.name[: -len(".json")]: item for item in folder.iterdir() if item.name.endswith(".json")
    }


def preset_names() -> list[str]:
    """The presets shipped with DSU, sorted."""
    return sorted(_files())


def load_preset(name: str) -> PipelineSpec:
    """The preset ``name``.

    Raises:
        BadRequest: no preset of that name (the message lists them).
    """
    item = _files().get(name)
    if item is None:
        raise BadRequest(f"unknown preset {name!r}; presets: {', '.join(preset_names())}")
    return parse_spec(json.loads(item.read_text(encoding="utf-8")), name=name)


def pipeline_from(
    value: str | Path | Mapping[str, Any] | PipelineSpec, *, files: bool = False
) -> PipelineSpec:
    """A spec from a preset name, a spec object, or (``files``: the command line) a
    ``.yaml``/``.json`` file.

    Raises:
        SpecError: a malformed spec.
        BadRequest: a name that is no preset (nor, with ``files``, a file).
    """
    if isinstance(value, PipelineSpec):
        return value
    if isinstance(value, Mapping):
        return parse_spec(value)
    if isinstance(value, str) and value in _files():
        return load_preset(value)
    if files and Path(value).suffix.lower() in (".yaml", ".yml", ".json"):
        if not Path(value).is_file():
            raise SpecError(f"pipeline file {value} does not exist")
        return load_spec(Path(value))
    hint = " or a .yaml/.json spec file" if files else " or a pipeline object"
    raise BadRequest(
        f"unknown preset {str(value)!r}; give one of {', '.join(preset_names())}{hint}"
    )


@dataclass(frozen=True)
class PreparedPipeline:
    """A spec whose references are checked, and the registry entry of each model it names."""

    spec: PipelineSpec
    entries: dict[str, ModelEntry]

    @property
    def outputs(self) -> list[str]:
        assert self.spec.outputs is not None
        return [name for name, _ in self.spec.outputs]


def prepare(spec: PipelineSpec, registry: Registry) -> PreparedPipeline:
    """Look up every model of ``spec`` (no loading) and check every stem reference.

    Raises:
        ModelNotFound: models not installed, all named, with the command that fetches them.
        SpecError: a reference to a stem a step does not have.
    """
    entries: dict[str, ModelEntry] = {}
    missing: list[str] = []
    unknown: list[str] = []
    for name in spec.models:
        try:
            entry = registry.lookup(name)
        except ModelNotFound as exc:
            (missing if "dsu models pull" in exc.message else unknown).append(name)
            continue
        if registry.missing_files(entry):
            missing.append(name)
        entries[name] = entry
    if unknown:
        raise ModelNotFound(
            f"pipeline {spec.name!r} names unknown models: {', '.join(unknown)} "
            "(`dsu models list` shows the models you can use)"
        )
    if missing:
        raise ModelNotFound(
            f"pipeline {spec.name!r} needs models that are not installed: {', '.join(missing)}; "
            f"fetch them with `dsu models pull {' '.join(missing)}`"
        )
    stems = {name: entry.stems for name, entry in entries.items()}
    return PreparedPipeline(resolve_refs(spec, stems), entries)
