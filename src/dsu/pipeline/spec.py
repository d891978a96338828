"""The pipeline spec: steps, each a model or an ensemble, and the stems to write.

Written as YAML or JSON (or built in code)::

    name: vocals-clean
    steps:
      - name: vocals
        models: [mel-roformer-kj-vocals, bs-roformer-viperx-1297]
        ensemble: avg_fft          # default avg_wave; see dsu.pipeline.ensemble
        weights: [2, 1]            # avg_wave and avg_fft only
      - name: dry
        model: mel-roformer-dereverb-anvuew
        input: vocals.vocals       # default: mixture
    outputs:                       # default: every stem of the last step
      vocals: dry.no_reverb
      instrumental: vocals.instrumental

A step's ``input`` is ``mixture`` or ``<earlier step>.<stem>``; ``outputs`` is a list of
``<step>.<stem>`` (each written under its stem's name, or ``<step>_<stem>`` where two
share a name) or a mapping of output name to reference. Stems are named as
:mod:`dsu.pipeline.stems` says (an ensemble's are the names its models share).

Parsing checks the spec's shape (:func:`parse_spec`); :func:`check_stems` checks every
reference against the models' stems, known from the registry without loading a model.
Both raise :class:`SpecError` naming the step and the field. Nothing here imports torch,
so the worker and the service validate a request before any model loads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsu.errors import BadRequest
from dsu.pipeline.ensemble import ALGORITHMS, DEFAULT_ALGORITHM, check_weights
from dsu.pipeline.stems import canonical_stems, find_stem, shared_stems

MIXTURE = "mixture"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MAX_STEPS = 8
MAX_MODELS = 8
"""Models of one step: each is one more network held in memory and run on every chunk."""

_SPEC_KEYS = {"name", "description", "steps", "outputs"}
_STEP_KEYS = {"name", "model", "models", "ensemble", "weights", "input"}


class SpecError(BadRequest):
    """A pipeline spec is malformed; the message names the step and the field."""


@dataclass(frozen=True)
class Ref:
    """A stem of a step (``step.stem``), or the mixture (``step == "mixture"``)."""

    step: str
    stem: str = ""

    def __str__(self) -> str:
        return MIXTURE if self.step == MIXTURE else f"{self.step}.{self.stem}"


@dataclass(frozen=True)
class Step:
    """One step: ``models`` (one, or an ensemble combined by ``ensemble``) run on ``input``."""

    name: str
    models: tuple[str, ...]
    input: Ref = Ref(MIXTURE)
    ensemble: str = DEFAULT_ALGORITHM
    weights: tuple[float, ...] | None = None


@dataclass(frozen=True)
class PipelineSpec:
    """Steps in order, and output name -> the stem written under it (None: every stem of
    the last step, under its name)."""

    name: str
    steps: tuple[Step, ...]
    outputs: tuple[tuple[str, Ref], ...] | None = None
    description: str = ""

    @property
    def models(self) -> list[str]:
        """Every model the pipeline runs, each once, in order of first use."""
        return list(dict.fromkeys(m for step in self.steps for m in step.models))

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


def _where(index: int | None, step: Any, field: str) -> str:
    if index is None:
        return f"pipeline field '{field}'"
    label = f" ({step!r})" if isinstance(step, str) else ""
    return f"pipeline step {index + 1}{label}: field '{field}'"


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise SpecError(
            f"{where} must be a name of letters, digits, '_' and '-' (at most 64), got {value!r}"
        )
    return value


def _ref(value: Any, where: str, earlier: Sequence[str]) -> Ref:
    if value == MIXTURE:
        return Ref(MIXTURE)
    if not isinstance(value, str) or value.count(".") != 1:
        raise SpecError(f"{where} must be 'mixture' or '<step>.<stem>', got {value!r}")
    step, stem = value.split(".")
    if step not in earlier:
        known = ", ".join(earlier) or "none yet"
        raise SpecError(f"{where}: {value!r} names no earlier step (earlier steps: {known})")
    if not stem:
        raise SpecError(f"{where}: {value!r} names no stem")
    return Ref(step, stem)


def _step(index: int, raw: Any, earlier: list[str]) -> Step:
    if not isinstance(raw, Mapping):
        raise SpecError(f"pipeline step {index + 1} must be an object, got {type(raw).__name__}")
    name = raw.get("name", f"step{index + 1}")
    unknown = sorted(set(raw) - _STEP_KEYS)
    if unknown:
        raise SpecError(
            f"{_where(index, name, unknown[0])} is unknown; a step has "
            f"{', '.join(sorted(_STEP_KEYS))}"
        )
    _name(name, _where(index, None, "name"))
    if name == MIXTURE or name in earlier:
        raise SpecError(f"{_where(index, name, 'name')}: {name!r} is taken; names must be unique")
    if ("model" in raw) == ("models" in raw):
        raise SpecError(f"{_where(index, name, 'model')}: give either 'model' or 'models'")
    models = [raw["model"]] if "model" in raw else raw["models"]
    if not isinstance(models, list) or not 1 <= len(models) <= MAX_MODELS:
        raise SpecError(
            f"{_where(index, name, 'models')} must be a list of 1 to {MAX_MODELS} model names"
        )
    field = "model" if "model" in raw else "models"
    for model in models:
        if not isinstance(model, str) or not model:
            raise SpecError(f"{_where(index, name, field)} must be model names, got {model!r}")
    if len(set(models)) != len(models):
        raise SpecError(f"{_where(index, name, 'models')} names a model twice; use weights")
    algorithm = raw.get("ensemble", DEFAULT_ALGORITHM)
    if algorithm not in ALGORITHMS:
        raise SpecError(
            f"{_where(index, name, 'ensemble')}: unknown algorithm {algorithm!r}; "
            f"one of {', '.join(ALGORITHMS)}"
        )
    weights = raw.get("weights")
    if weights is not None:
        if not isinstance(weights, list) or not all(
            isinstance(w, int | float) and not isinstance(w, bool) for w in weights
        ):
            raise SpecError(f"{_where(index, name, 'weights')} must be a list of numbers")
        try:
            weights = tuple(check_weights(algorithm, weights, len(models)))
        except BadRequest as exc:
            raise SpecError(f"{_where(index, name, 'weights')}: {exc.message}") from None
    source = _ref(raw.get("input", MIXTURE), _where(index, name, "input"), earlier)
    return Step(name, tuple(models), source, algorithm, weights)


def _outputs(raw: Any, steps: list[str]) -> tuple[tuple[str, Ref], ...] | None:
    if raw is None:
        return None
    where = _where(None, None, "outputs")
    if isinstance(raw, list):
        refs = [_ref(value, where, steps) for value in raw]
        stems = [ref.stem for ref in refs]
        pairs = [
            (ref.stem if stems.count(ref.stem) == 1 else f"{ref.step}_{ref.stem}", ref)
            for ref in refs
        ]
    elif isinstance(raw, Mapping):
        pairs = [
            (_name(k, f"{where} name"), _ref(v, f"{where} {k!r}", steps)) for k, v in raw.items()
        ]
    else:
        raise SpecError(f"{where} must be a list of '<step>.<stem>' or a mapping name -> reference")
    if not pairs:
        raise SpecError(f"{where} is empty; leave it out to write every stem of the last step")
    for name, ref in pairs:
        if ref.step == MIXTURE:
            raise SpecError(f"{where}: output {name!r} is the mixture itself; name a step's stem")
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise SpecError(f"{where}: output names repeat ({', '.join(names)})")
    return tuple(pairs)


def parse_spec(raw: Any, *, name: str = "pipeline") -> PipelineSpec:
    """A spec from its JSON/YAML object (``name``: used when it has none).

    Raises:
        SpecError: a problem of shape, naming the step and the field.
    """
    if not isinstance(raw, Mapping):
        raise SpecError(f"a pipeline is an object with 'steps', got {type(raw).__name__}")
    unknown = sorted(set(raw) - _SPEC_KEYS)
    if unknown:
        raise SpecError(
            f"pipeline field {unknown[0]!r} is unknown; a pipeline has "
            f"{', '.join(sorted(_SPEC_KEYS))}"
        )
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not 1 <= len(steps_raw) <= MAX_STEPS:
        raise SpecError(f"pipeline field 'steps' must be a list of 1 to {MAX_STEPS} steps")
    steps: list[Step] = []
    for index, step in enumerate(steps_raw):
        steps.append(_step(index, step, [s.name for s in steps]))
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise SpecError("pipeline field 'description' must be text")
    return PipelineSpec(
        _name(raw.get("name", name), "pipeline field 'name'"),
        tuple(steps),
        _outputs(raw.get("outputs"), [s.name for s in steps]),
        description,
    )


def load_spec(path: Path) -> PipelineSpec:
    """A spec from a ``.yaml``/``.yml``/``.json`` file, named after the file by default.

    Raises:
        SpecError: the file cannot be read or parsed, or the spec is malformed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the pipeline {path}: {exc}") from None
    import yaml

    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise SpecError(f"{path} is not valid {kind}: {exc}") from None
    return parse_spec(raw, name=path.stem if NAME_PATTERN.match(path.stem) else "pipeline")


def short_spec(
    models: Sequence[str],
    algorithm: str = DEFAULT_ALGORITHM,
    weights: Sequence[float] | None = None,
    then: Sequence[tuple[str, str | None]] = (),
) -> PipelineSpec:
    """The command line's short forms: ``step1`` runs ``models`` (an ensemble by
    ``algorithm`` when several), then each ``(model, stem)`` of ``then`` runs on the
    previous step's ``stem`` (None: its first stem) as ``step2``, ``step3``, ...; the
    last step's stems are written.

    Raises:
        SpecError: as :func:`parse_spec`.
    """
    first: dict[str, Any] = {"name": "step1", "models": list(models), "ensemble": algorithm}
    if weights is not None:
        first["weights"] = list(weights)
    steps = [first]
    for index, (model, stem) in enumerate(then, start=2):
        steps.append(
            {"name": f"step{index}", "model": model, "input": f"step{index - 1}.{stem or '*'}"}
        )
    name = "ensemble" if len(models) > 1 and not then else "chain" if then else "single"
    return parse_spec({"name": name, "steps": steps})


def step_stems(spec: PipelineSpec, stems_of: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Each step's stems (canonical names; an ensemble's are those its models share).

    Raises:
        SpecError: an ensemble whose models share no stem.
    """
    result: dict[str, list[str]] = {}
    for index, step in enumerate(spec.steps):
        if len(step.models) == 1:
            result[step.name] = list(canonical_stems(stems_of[step.models[0]]))
            continue
        try:
            shared = shared_stems({m: stems_of[m] for m in step.models})
        except BadRequest as exc:
            raise SpecError(f"{_where(index, step.name, 'models')}: {exc.message}") from None
        result[step.name] = list(shared)
    return result


def resolve_refs(spec: PipelineSpec, stems_of: Mapping[str, Sequence[str]]) -> PipelineSpec:
    """``spec`` with every stem reference checked against the models' stems and written
    in canonical names; ``*`` (from :func:`short_spec`) becomes the step's first stem.

    Args:
        stems_of: model name -> its stems (from the registry; no model is loaded).

    Raises:
        SpecError: a reference to a stem the step does not have, naming the step, the
            field and the stems it has; an ensemble whose models share no stem.
    """
    stems = step_stems(spec, stems_of)

    def check(ref: Ref, where: str) -> Ref:
        if ref.step == MIXTURE:
            return ref
        available = stems[ref.step]
        if ref.stem == "*":
            return Ref(ref.step, available[0])
        found = find_stem(ref.stem, available)
        if found is None:
            raise SpecError(
                f"{where}: step {ref.step!r} has no stem {ref.stem!r}; its stems are "
                f"{', '.join(available)}"
            )
        return Ref(ref.step, found)

    steps = tuple(
        Step(s.name, s.models, check(s.input, _where(i, s.name, "input")), s.ensemble, s.weights)
        for i, s in enumerate(spec.steps)
    )
    if spec.outputs is None:
        last = spec.steps[-1].name
        outputs = tuple((stem, Ref(last, stem)) for stem in stems[last])
    else:
        outputs = tuple(
            (name, check(ref, f"{_where(None, None, 'outputs')} {name!r}"))
            for name, ref in spec.outputs
        )
    return PipelineSpec(spec.name, steps, outputs, spec.description)
