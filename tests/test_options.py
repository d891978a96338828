"""Engine options: one validator for every front end, and the checks against a model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsu.api import Separator
from dsu.engine.options import (
    MAX_BATCH_SIZE,
    MAX_SHIFTS,
    MIN_SEGMENT_SAMPLES,
    EngineOptions,
    check_against,
)
from dsu.errors import BadRequest
from tiny_demucs import write_models_dir


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Tiny networks with 1-second training segments.
    return write_models_dir(
        tmp_path_factory.mktemp("models"),
        {
            "ht": {"nets": [("htdemucs", 0)]},
            "hd": {"nets": [("hdemucs", 0)]},
            "bag": {"nets": [("hdemucs", 1), ("htdemucs", 2)]},
        },
    )


@pytest.mark.parametrize(
    ("values", "word"),
    [
        ({"shifts": 10**9}, "shifts"),
        ({"shifts": MAX_SHIFTS + 1}, "shifts"),
        ({"shifts": -1}, "shifts"),
        ({"shifts": 2.5}, "integer"),
        ({"shifts": True}, "integer"),
        ({"batch_size": 0}, "batch size"),
        ({"batch_size": MAX_BATCH_SIZE + 1}, "batch size"),
        ({"segment": float("inf")}, "finite"),
        ({"segment": float("nan")}, "finite"),
        ({"segment": 0.0}, "segment"),
        ({"segment": -3.0}, "segment"),
        ({"segment": 601.0}, "segment"),
        ({"segment": "10"}, "number"),
        ({"overlap": 1.0}, "overlap"),
        ({"overlap": -0.1}, "overlap"),
        ({"overlap": float("nan")}, "finite"),
        ({"max_shift": float("inf")}, "finite"),
        ({"max_shift": 11.0}, "max shift"),
        ({"seed": 1.5}, "seed"),
        ({"precision": "fp8"}, "precision"),
    ],
)
def test_out_of_range_values_are_refused(values: dict, word: str) -> None:
    with pytest.raises(BadRequest, match=word):
        EngineOptions(**values)


def test_values_in_range_are_kept_as_plain_numbers() -> None:
    options = EngineOptions(
        shifts=np.int64(MAX_SHIFTS), batch_size=MAX_BATCH_SIZE, segment=np.float32(2.5)
    )
    assert (options.shifts, options.batch_size, options.segment) == (MAX_SHIFTS, 64, 2.5)
    assert type(options.shifts) is int and type(options.segment) is float


def test_check_against_the_model(models: Path) -> None:
    ht = Separator("ht", models_dir=models, device="cpu").model
    hd = Separator("hd", models_dir=models, device="cpu").model
    bag = Separator("bag", models_dir=models, device="cpu").model
    assert ht.max_segment == 44100 and hd.max_segment is None
    for model in (ht, hd, bag):
        check_against(EngineOptions(), model)
        check_against(EngineOptions(segment=1.0, overlap=0.5), model)
    check_against(EngineOptions(segment=30.0), hd)
    for model in (ht, bag):  # a bag is checked member by member
        with pytest.raises(BadRequest, match="trained on"):
            check_against(EngineOptions(segment=1.5), model)
    with pytest.raises(BadRequest, match=f"{MIN_SEGMENT_SAMPLES} samples"):
        check_against(EngineOptions(segment=0.00001), hd)
    with pytest.raises(BadRequest, match="advances only"):
        check_against(EngineOptions(segment=0.05, overlap=0.99), hd)


def test_separate_checks_per_call_options_first(models: Path) -> None:
    mix = 0.1 * np.random.default_rng(0).standard_normal((2, 22050)).astype(np.float32)
    with pytest.raises(BadRequest, match="trained on"):
        Separator("ht", models_dir=models, device="cpu").separate(
            mix, 44100, options=EngineOptions(segment=30.0)
        )
    separator = Separator("hd", models_dir=models, device="cpu")
    short = separator.separate(mix, 44100, options=EngineOptions(segment=0.25))
    assert separator.options == EngineOptions(), "per-call options leave the separator's alone"
    assert short.stems is not None and short.stems["vocals"].shape == (2, 22050)


@pytest.mark.parametrize(
    ("flags", "word"),
    [
        (["-m", "ht", "--segment", "30"], "trained on"),
        (["-m", "center", "--segment", "inf"], "finite"),
        (["-m", "center", "--segment", "nan"], "finite"),
        (["-m", "center", "--segment", "0.00001"], "samples"),
    ],
)
def test_cli_refuses_a_bad_segment_cleanly(
    models: Path, tmp_path: Path, flags: list[str], word: str
) -> None:
    source = tmp_path / "x.wav"
    sf.write(source, np.zeros((4410, 2), dtype=np.float32), 44100)
    command = [sys.executable, "-m", "dsu", "separate", str(source), *flags]
    done = subprocess.run(
        [*command, "--models-dir", str(models), "-o", str(tmp_path / "out"), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert word in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
