"""Ensembles and chains as the service takes them: a request's pipeline, checked, and the
presets ``GET /models`` offers.

A request names one ``model``, or ``models`` (+ ``ensemble``, ``weights``: an ensemble),
or a ``pipeline``: a preset name or a spec object (:mod:`dsu.pipeline.spec`; in a
multipart form, its JSON text). :func:`request_pipeline` checks it at submission against
the models directory without loading a model or importing torch, and the job stores the
checked spec as a JSON object (:func:`spec_document`), so the worker that runs it — in
this process or a Celery worker — rebuilds exactly what was checked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dsu.errors import BadRequest, ModelNotFound
from dsu.pipeline.ensemble import DEFAULT_ALGORITHM
from dsu.pipeline.preset import PreparedPipeline, load_preset, pipeline_from, prepare, preset_names
from dsu.pipeline.spec import PipelineSpec, SpecError, resolve_refs, short_spec
from dsu.registry import Registry
from dsu.registry.catalog import builtin_catalog

SEPARATING = "separating"
"""The engine's stage whose reports a pipeline job records as ``separating:<step>``."""


@dataclass(frozen=True)
class PipelineFields:
    """What a request says about ensembles and chains (all None: one model)."""

    pipeline: str | dict[str, Any] | None = None
    models: Sequence[str] | None = None
    ensemble: str | None = None
    weights: Sequence[float] | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.pipeline, self.models, self.ensemble, self.weights))


def _spec(fields: PipelineFields) -> PipelineSpec:
    if fields.pipeline is not None and fields.models is not None:
        raise BadRequest("give either pipeline or models (an ensemble), not both")
    if fields.pipeline is not None:
        if fields.ensemble is not None or fields.weights is not None:
            raise BadRequest("ensemble and weights go with models; a pipeline sets them per step")
        raw = fields.pipeline
        if isinstance(raw, str) and raw.lstrip().startswith("{"):
            try:
                raw = json.loads(raw)
            except ValueError as exc:
                raise SpecError(f"field 'pipeline' is not valid JSON: {exc}") from None
        return pipeline_from(raw)
    if fields.models is None:
        raise BadRequest("ensemble and weights need models: the models to combine")
    return short_spec(list(fields.models), fields.ensemble or DEFAULT_ALGORITHM, fields.weights)


def request_pipeline(
    fields: PipelineFields, model: str | None, two_stems: str | None, registry: Registry
) -> PreparedPipeline | None:
    """The request's pipeline, checked against ``registry``; None for a one-model request.

    Raises:
        BadRequest: fields that do not go together, an unknown preset.
        SpecError: a malformed spec or a stem reference a step does not have (the message
            names the step and the field).
        ModelNotFound: models the pipeline needs that are not installed, all of them named.
    """
    if not fields.given:
        return None
    if model is not None:
        raise BadRequest("give one of model, models (an ensemble) or pipeline")
    if two_stems is not None:
        raise BadRequest("two_stems is for one model; a pipeline writes the outputs it names")
    spec = _spec(fields)
    missing = [name for name in spec.models if not installed(registry, name)]
    catalog = builtin_catalog()
    unknown = [name for name in missing if not _listed(registry, name) and not catalog.get(name)]
    if unknown:
        raise ModelNotFound(
            f"pipeline {spec.name!r} names unknown models: {', '.join(unknown)} "
            "(GET /models lists the models this server can run)"
        )
    if missing:
        raise ModelNotFound(
            f"pipeline {spec.name!r} needs models this server does not have: "
            f"{', '.join(missing)}; they must be pulled on the server first "
            "(GET /models lists its models, and for each preset the models it lacks)"
        )
    return prepare(spec, registry)


def _listed(registry: Registry, name: str) -> bool:
    try:
        registry.lookup(name)
    except ModelNotFound:
        return False
    return True


def installed(registry: Registry, name: str) -> bool:
    """Whether the model ``name`` is on this server with all its files."""
    try:
        entry = registry.lookup(name)
    except ModelNotFound:
        return False
    return not registry.missing_files(entry)


def spec_document(prepared: PreparedPipeline) -> dict[str, Any]:
    """The checked spec as the JSON object a job stores (every reference resolved)."""
    spec = prepared.spec
    steps = []
    for step in spec.steps:
        item: dict[str, Any] = {
            "name": step.name,
            "models": list(step.models),
            "ensemble": step.ensemble,
            "input": str(step.input),
        }
        if step.weights is not None:
            item["weights"] = list(step.weights)
        steps.append(item)
    return {
        "name": spec.name,
        "description": spec.description,
        "steps": steps,
        "outputs": {name: str(ref) for name, ref in spec.outputs or ()},
    }


def step_names(document: dict[str, Any]) -> list[str]:
    """The steps of a stored spec, in order."""
    return [step["name"] for step in document["steps"]]


@dataclass(frozen=True)
class PresetInfo:
    """A preset as ``GET /models`` lists it."""

    name: str
    description: str
    models: tuple[str, ...]
    stems: tuple[str, ...]
    installed: bool
    missing: tuple[str, ...]


def presets(registry: Registry) -> list[PresetInfo]:
    """Every shipped preset, with the stems it writes and the models this server lacks."""
    catalog = builtin_catalog()
    found = []
    for name in preset_names():
        spec = load_preset(name)
        stems_of: dict[str, tuple[str, ...]] = {}
        missing = [model for model in spec.models if not installed(registry, model)]
        for model in spec.models:
            try:
                stems_of[model] = tuple(registry.lookup(model).stems)
            except ModelNotFound:
                known = catalog.get(model)
                if known is not None and known.stems:
                    stems_of[model] = known.stems
        found.append(
            PresetInfo(
                name,
                spec.description,
                tuple(spec.models),
                tuple(_outputs(spec, stems_of)),
                not missing,
                tuple(missing),
            )
        )
    return found


def _outputs(spec: PipelineSpec, stems_of: dict[str, tuple[str, ...]]) -> list[str]:
    """The stems ``spec`` writes; by name alone when its models' stems are not all known."""
    if all(model in stems_of for model in spec.models):
        try:
            return [name for name, _ in resolve_refs(spec, stems_of).outputs or ()]
        except SpecError:
            pass
    return [name for name, _ in spec.outputs or ()]
