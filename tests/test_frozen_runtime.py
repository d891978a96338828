"""The frozen one-folder runtime (``make runtime``: ``dist/dsu``), driven as an app ships it.

Run by ``make test-dist``, which sets ``DSU_RUNTIME`` to the bundle (the frozen tests skip
with that reason otherwise): the launchers are small executables over one shared ``_internal``
folder, they run with no Python on ``PATH``, every family of the table separates through
them (a random-weight model each, the one-per-family list following
:data:`dsu.archs.families.FAMILIES`), and the worker's start-up is printed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml

from dsu.archs import scnet
from dsu.archs.families import LAUNCHERS
from dsu.client import WorkerProcess
from helpers import write_noise
from test_launcher_families import models  # noqa: F401 (the seed launchers' fixture)
from test_scnet_parity import SMALL as SCNET_SMALL
from test_worker_support import RUNTIME, request, spawn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packaging"))

from bundle_plan import bundle_families, family_id  # noqa: E402

frozen = pytest.mark.skipif(
    not RUNTIME, reason="needs a frozen runtime: DSU_RUNTIME=dist/dsu (make test-dist)"
)

# One random-weight model per family, by family id (packaging/bundle_plan.py): a new
# family is covered by building its tiny checkpoint in `models` and naming it here.
TINY_MODELS = {
    "demucs": "tiny-demucs",
    "tdc_unet": "tdc-vocals",
    "roformer": "tiny-bs-roformer",
    "mdx23c": "tiny-mdx23c",
    "scnet": "tiny-scnet",
    "bandit": "tiny-bandit",
    "msst_htdemucs": "tiny-htdemucs-msst",
    "mdx": "tiny-mdx",
    "vr": "tiny-vr",
    "apollo": "tiny-apollo",
}
# Built for the environment the launchers meet on an app user's machine: no Python.
BARE_ENV = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def family_models(models: Path, shared_dir: Path) -> Path:  # noqa: F811 (the fixture)
    """The seed launchers' models directory plus the families it lacks."""
    registry = json.loads((models / "models.json").read_text())
    entries = registry["models"]

    tdc = shared_dir / "models" / "tdc-vocals-ismir2020"
    tdc_entry = json.loads((tdc / "models.json").read_text())["models"]["tdc-vocals"]
    shutil.copy(tdc / tdc_entry["weights"], models / "weights" / tdc_entry["weights"])
    entries["tdc-vocals"] = {**tdc_entry, "weights": f"weights/{tdc_entry['weights']}"}

    torch.manual_seed(0)
    config = {
        "audio": {"chunk_size": 4096, "num_channels": 2, "sample_rate": 44100},
        "model": SCNET_SMALL,
        "training": {"instruments": SCNET_SMALL["sources"], "target_instrument": None},
        "inference": {"num_overlap": 2},
    }
    torch.save(scnet.build("scnet", SCNET_SMALL).state_dict(), models / "weights/scnet.ckpt")
    (models / "configs" / "scnet.yaml").write_text(yaml.safe_dump(config))
    entries["tiny-scnet"] = {
        "arch": "scnet",
        "weights": "weights/scnet.ckpt",
        "config": "configs/scnet.yaml",
    }
    (models / "models.json").write_text(json.dumps(registry))
    return models


def test_every_family_has_a_tiny_model() -> None:
    assert set(TINY_MODELS) == {family_id(f) for f in bundle_families()}


@frozen
def test_launchers_share_one_runtime() -> None:
    runtime = Path(RUNTIME)
    for name in ("dsu", *LAUNCHERS):
        launcher = runtime / name
        assert launcher.is_file(), f"{name} missing from the bundle"
        # A bootloader only: Python, torch and the modules are in _internal, once.
        assert launcher.stat().st_size < 2_000_000, f"{name} carries its own copy of the runtime"
    assert len(list(runtime.rglob("libtorch_cpu.*"))) == 1
    version = subprocess.run(
        [str(runtime / "dsu"), "--version"], capture_output=True, text=True, env=BARE_ENV
    )
    assert version.returncode == 0 and version.stdout.startswith("dsu "), version.stderr


@frozen
@pytest.mark.parametrize("family", [family_id(f) for f in bundle_families()])
def test_family_separates_through_the_frozen_runtime(
    family: str, family_models: Path, tmp_path: Path
) -> None:
    owner = next(f for f in bundle_families() if family_id(f) == family)
    launcher = owner.launchers[0] if owner.launchers else None
    runtime = Path(RUNTIME)
    command = (
        [str(runtime / launcher), "--worker"] if launcher else [str(runtime / "dsu"), "worker"]
    )
    source = write_noise(tmp_path / "song.wav", 1.0)
    process, _ = spawn(
        command=[*command, "--models-dir", str(family_models)], env=BARE_ENV, cwd=tmp_path
    )
    try:
        loaded = request(process, {"cmd": "load_model", "model": TINY_MODELS[family]})
        assert loaded["status"] == "model_loaded", loaded
        done = request(
            process, {"cmd": "separate", "input": str(source), "output": str(tmp_path / "out")}
        )
        assert done["status"] == "done", done
        assert sorted(done["stems"]) == sorted(loaded["stems"])
        for path in done["stems"].values():
            data, rate = sf.read(path, always_2d=True)
            assert rate == 44100 and data.shape == (44100, 2)
        assert request(process, {"cmd": "exit"})["status"] == "exiting"
        assert process.wait(30) == 0
    finally:
        process.kill()


@frozen
def test_frozen_worker_start_up(family_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the time from spawn to ``ready`` and to the first model loaded."""
    started = time.monotonic()
    process = WorkerProcess(
        [str(Path(RUNTIME) / "dsu-demucs"), "--worker", "--models-dir", str(family_models)],
        env=BARE_ENV,
    )
    try:
        assert process.read(timeout=60)["status"] == "ready"
        ready = time.monotonic() - started
        loaded = request(process, {"cmd": "load_model", "model": "tiny-demucs"})
        assert loaded["status"] == "model_loaded", loaded
        first_model = time.monotonic() - started
        request(process, {"cmd": "exit"})
    finally:
        process.kill()
    with capsys.disabled():
        print(
            f"\nfrozen dsu-demucs: ready {ready:.2f} s after spawn, "
            f"first model loaded {first_model:.2f} s after spawn"
        )
    assert ready < 5.0
