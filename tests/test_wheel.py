"""``python -m build`` gives an sdist and a wheel that carry every data file of the
package, and the wheel installed into a fresh virtual environment separates a real clip
with ``dsu separate`` and answers the seed's ``dsu worker`` lines.

The fresh environment gets the CPU torch first (the Makefile's pin, fetched by pip as
configured here), then the wheel with the ``service`` extra; the weight-free ``center``
model needs no download.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

from dsu.client import WorkerProcess
from test_requirements_files import makefile_torch
from test_worker_support import request

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "dsu"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def data_files() -> set[str]:
    """Every file of the ``dsu`` package that is not Python source, as ``dsu/...``."""
    return {
        f"dsu/{p.relative_to(PACKAGE).as_posix()}"
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command[:4]} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # No isolation: the build backend (setuptools) is already in this environment.
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)])
    return out


def test_sdist_and_wheel_carry_every_data_file(dists: Path) -> None:
    (wheel,) = dists.glob("dsu-*.whl")
    (sdist,) = dists.glob("dsu-*.tar.gz")
    wanted = data_files()
    assert {"dsu/py.typed", "dsu/registry/catalog/demucs.json"} <= wanted
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert wanted <= in_wheel, f"missing from the wheel: {sorted(wanted - in_wheel)[:10]}"
    assert not any("__pycache__" in name for name in in_wheel)
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {f"src/{name}" for name in wanted} <= in_sdist
    entry_points = next(n for n in in_wheel if n.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for launcher in ("dsu", "dsu-demucs", "dsu-bsroformer", "dsu-audio-separator", "dsu-apollo"):
        assert f"{launcher} = " in scripts


@pytest.fixture(scope="module")
def venv(dists: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment with the CPU torch and the wheel: pip fetches torch as this
    machine's pip is configured (the Makefile's pin), uv installs, which is what keeps this
    within its time budget (no bytecode compiled, dependencies from uv's cache)."""
    tmp = tmp_path_factory.mktemp("venv")
    root = tmp / "venv"
    uv = [sys.executable, "-m", "uv"]
    run([*uv, "venv", "--quiet", "--python", sys.executable, str(root)])
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "download", "-q", "--no-deps", "-d", str(tmp / "torch"), makefile_torch()])
    (torch_wheel,) = (tmp / "torch").glob("torch-*.whl")
    (wheel,) = dists.glob("dsu-*.whl")
    python = str(root / "bin" / "python")
    run([*uv, "pip", "install", "--quiet", "--python", python, str(torch_wheel)])
    run([*uv, "pip", "install", "--quiet", "--python", python, f"{wheel}[service]"])
    return root


def test_installed_wheel_separates_a_real_clip(venv: Path, mu_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # Outside the checkout, so the installed package is the one imported.
    result = run(
        [str(venv / "bin" / "dsu"), "separate", str(mu_dir / "mixture.wav"), "-m", "center",
         "-o", str(out), "--models-dir", str(tmp_path / "models")],
        cwd=tmp_path,
    )  # fmt: skip
    frames = sf.info(str(mu_dir / "mixture.wav")).frames
    for stem in ("vocals", "instrumental"):
        path = out / "mixture" / f"{stem}.wav"
        assert str(path) in result.stdout
        assert sf.info(str(path)).frames == frames
    where = run(
        [str(venv / "bin" / "python"), "-c", "import dsu; print(dsu.__file__)"], cwd=tmp_path
    )
    assert str(venv) in where.stdout


def test_installed_wheel_answers_the_seed_worker_lines(
    venv: Path, mu_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "models").mkdir()
    started = time.monotonic()
    worker = WorkerProcess(
        [str(venv / "bin" / "dsu"), "worker", "--models-dir", str(tmp_path / "models")],
        cwd=tmp_path,
    )
    try:
        assert worker.read(timeout=60)["status"] == "ready"
        assert time.monotonic() - started < 30
        assert request(worker, {"cmd": "ping"}) == {"status": "pong", "model_loaded": None}
        loaded = request(worker, {"cmd": "load_model", "model": "center"})
        assert loaded["status"] == "model_loaded" and loaded["stems"] == ["vocals", "instrumental"]
        done = request(
            worker,
            {
                "cmd": "separate",
                "input": str(mu_dir / "mixture.wav"),
                "output": str(tmp_path / "w"),
            },
        )
        assert done["status"] == "done", done
        assert sorted(done["files"]) == ["instrumental.wav", "vocals.wav"]
        assert request(worker, {"cmd": "exit"}) == {"status": "exiting"}
        assert worker.wait(30) == 0
    finally:
        worker.kill()
