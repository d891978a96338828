"""Pipeline specs (shape, references, files) and the presets shipped as data."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsu.pipeline.preset import load_preset, pipeline_from, preset_names
from dsu.pipeline.spec import SpecError, load_spec, parse_spec, resolve_refs, short_spec
from dsu.registry.catalog import builtin_catalog

STEMS = {"v": ["vocals", "other"], "i": ["instrumental", "vocals"], "d": ["dry", "no_dry"]}


def _steps(*steps: dict) -> dict:
    return {"name": "p", "steps": list(steps)}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"steps": []}, "field 'steps' must be a list of 1 to 8"),
        ({**_steps({"model": "v"}), "extra": 1}, "pipeline field 'extra' is unknown"),
        (_steps({"model": "v", "models": ["i"]}), r"step 1 \('step1'\): field 'model'"),
        (_steps({"models": ["v", "i"], "ensemble": "mean"}), "field 'ensemble': unknown"),
        (
            _steps({"models": ["v", "i"], "ensemble": "max_wave", "weights": [1, 2]}),
            "field 'weights': max_wave has no weights",
        ),
        (_steps({"model": "v"}, {"model": "d", "input": "later.x"}), "names no earlier step"),
        (_steps({"name": "a", "model": "v"}, {"name": "a", "model": "d"}), "'a' is taken"),
        (_steps({"model": "v", "colour": 1}), r"step 1 \('step1'\): field 'colour' is unknown"),
        ({**_steps({"model": "v"}), "outputs": ["mixture"]}, "is the mixture itself"),
    ],
)
def test_shape_errors_name_the_step_and_field(raw: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(raw)


def test_references_are_checked_and_canonical() -> None:
    spec = parse_spec(
        _steps(
            {"name": "sep", "models": ["v", "i"], "ensemble": "avg_fft"},
            {"name": "dry", "model": "d", "input": "sep.no_vocals"},
        )
    )
    resolved = resolve_refs(spec, STEMS)
    assert resolved.steps[1].input.stem == "instrumental"  # other / instrumental / no_vocals
    assert [name for name, _ in resolved.outputs or ()] == ["dry", "no_dry"]
    bad = parse_spec(_steps({"name": "sep", "model": "v"}, {"model": "d", "input": "sep.bass"}))
    with pytest.raises(SpecError, match=r"step 2 .*'input'.*no stem 'bass'.*vocals, instrumental"):
        resolve_refs(bad, STEMS)
    with pytest.raises(SpecError, match="share no stem"):
        resolve_refs(parse_spec(_steps({"models": ["v", "d"]})), STEMS)


def test_short_form_and_files(tmp_path: Path) -> None:
    spec = resolve_refs(short_spec(["v", "i"], "avg_wave", None, [("d", None)]), STEMS)
    assert [s.name for s in spec.steps] == ["step1", "step2"]
    assert str(spec.steps[1].input) == "step1.vocals"
    path = tmp_path / "clean.yaml"
    path.write_text("steps:\n  - model: v\n  - {model: d, input: step1.vocals}\n")
    assert load_spec(path).name == "clean"
    path.write_text("steps: [")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
    with pytest.raises(SpecError, match="does not exist"):
        pipeline_from(str(tmp_path / "none.json"), files=True)


def test_presets_name_catalog_models_and_their_stems() -> None:
    catalog = builtin_catalog()
    assert {"best-vocals", "karaoke", "vocals-clean", "four-stems"} <= set(preset_names())
    for name in preset_names():
        spec = load_preset(name)
        entries = {model: catalog.get(model) for model in spec.models}
        assert all(entries.values()), (name, entries)
        stems = {model: list(entry.stems) for model, entry in entries.items() if entry}
        assert resolve_refs(spec, stems).outputs, name
