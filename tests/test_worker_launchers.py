"""The seed's launchers: ``dsu-demucs``, ``dsu-bsroformer``, ``dsu-audio-separator``,
``dsu-apollo`` (installed console scripts), each a worker restricted to its families."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import CENTRED, write_noise
from test_worker_support import request, spawn, write_models_json
from tiny_demucs import write_models_dir

BIN = Path(sys.executable).parent
LAUNCHERS = ["dsu-demucs", "dsu-bsroformer", "dsu-audio-separator", "dsu-apollo"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_models_dir(
        tmp_path_factory.mktemp("launch") / "models", {"tiny": {"nets": [("demucs", 0)]}}
    )
    manifest = json.loads((root / "models.json").read_text())["models"]
    (root / "weights" / "UVR-Vocals.pth").write_bytes(b"not a real VR model")
    manifest["uvr-vocals"] = {
        "arch": "vr",
        "weights": "weights/UVR-Vocals.pth",
        "stems": ["vocals", "instrumental"],
    }
    (root / "weights" / "scnet_xl.ckpt").write_bytes(b"an SCNet checkpoint")
    manifest["scnet-xl"] = {
        "arch": "scnet",
        "weights": "weights/scnet_xl.ckpt",
        "stems": ["drums", "bass", "other", "vocals"],
    }
    return write_models_json(root, manifest, default="tiny")


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_help(launcher: str) -> None:
    result = subprocess.run(
        [str(BIN / launcher), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--worker", "--models-dir", "--device", "--allowed-root"):
        assert flag in result.stdout


def test_without_worker_flag_is_a_usage_error() -> None:
    result = subprocess.run([str(BIN / "dsu-demucs")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--worker" in result.stderr


def test_demucs_launcher_serves_only_demucs(models: Path, tmp_path: Path) -> None:
    process, ready = spawn(
        command=[str(BIN / "dsu-demucs"), "--worker", "--models-dir", str(models)]
    )
    try:
        # Demucs checkpoints in either layout: its own `.th` and MSST's `.ckpt` + `.yaml`.
        assert ready["architectures"] == ["demucs", "htdemucs"]
        listed = request(process, {"cmd": "list_models"})
        assert listed["models"] == ["tiny"]
        refused = request(process, {"cmd": "load_model", "model": "center"})
        assert refused["code"] == "model_not_found"
        assert "'center'" in refused["message"] and "demucs" in refused["message"]
        seed_style = request(
            process,
            {
                "cmd": "separate",
                "input": str(write_noise(tmp_path / "a.wav", 1.0, **CENTRED)),
                "output": str(tmp_path / "out"),
                "model": "tiny",
                "two_stems": "vocals",
            },
        )
        assert seed_style["status"] == "done", seed_style
        assert sorted(seed_style["files"]) == ["no_vocals.wav", "vocals.wav"]
    finally:
        process.kill()


def test_builtins_can_be_added_with_arch(models: Path) -> None:
    process, ready = spawn(
        command=[
            str(BIN / "dsu-demucs"),
            "--worker",
            "--models-dir",
            str(models),
            "--arch",
            "demucs,center",
        ]
    )
    try:
        assert ready["architectures"] == ["center", "demucs"]
        assert request(process, {"cmd": "list_models"})["models"] == ["tiny", "center"]
        assert request(process, {"cmd": "load_model", "model": "center"})["status"] == (
            "model_loaded"
        )
    finally:
        process.kill()


def test_foreign_family_is_refused_at_start(models: Path) -> None:
    result = subprocess.run(
        [str(BIN / "dsu-apollo"), "--worker", "--models-dir", str(models), "--arch", "demucs"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "not served by this launcher" in result.stderr
    assert result.stdout == ""


def test_served_family_without_its_config_is_a_typed_error(models: Path) -> None:
    process, ready = spawn(
        command=[str(BIN / "dsu-bsroformer"), "--worker", "--models-dir", str(models)]
    )
    try:
        assert "unsupported_architectures" not in ready
        assert {"bs_roformer", "scnet"} <= set(ready["architectures"])
        listed = request(process, {"cmd": "list_models", "id": 1})
        assert listed["models"] == ["scnet-xl"]
        details = {d["name"]: d for d in listed["details"]}
        assert details["scnet-xl"]["runnable"] is True
        reply = request(process, {"cmd": "load_model", "model": "scnet-xl", "id": 2})
        assert (reply["status"], reply["id"]) == ("error", 2)
        assert "needs the YAML config" in reply["message"]
        assert request(process, {"cmd": "ping", "id": 3})["status"] == "pong"
    finally:
        process.kill()


def test_a_served_family_names_what_is_wrong_with_a_model(models: Path) -> None:
    """A VR file with no UVR model data (and no real weights) is a typed error naming it."""
    process, ready = spawn(
        command=[str(BIN / "dsu-audio-separator"), "--worker", "--models-dir", str(models)]
    )
    try:
        assert {"demucs", "vr", "mdx", "apollo"} <= set(ready["architectures"])
        listed = request(process, {"cmd": "list_models", "id": 1})
        assert listed["models"] == ["scnet-xl", "tiny", "uvr-vocals"]
        reply = request(process, {"cmd": "load_model", "model": "uvr-vocals", "id": 2})
        assert reply["status"] == "error" and reply["code"] in {"bad_request", "io_error"}
        assert "UVR-Vocals.pth" in reply["message"]
        assert request(process, {"cmd": "ping", "id": 3})["status"] == "pong"
    finally:
        process.kill()


@pytest.mark.parametrize("launcher", ["dsu-apollo"])
def test_other_launchers_start_and_refuse_foreign_models(launcher: str, models: Path) -> None:
    process, ready = spawn(command=[str(BIN / launcher), "--worker", "--models-dir", str(models)])
    try:
        assert "demucs" not in ready["architectures"]
        assert request(process, {"cmd": "list_models"})["models"] == []
        reply = request(process, {"cmd": "load_model", "model": "tiny"})
        assert reply["code"] == "model_not_found"
        process.send({"cmd": "exit"})
        assert process.read(timeout=30)["status"] == "exiting"
        assert process.wait(30) == 0
    finally:
        process.kill()


def test_dsu_worker_through_the_main_cli(models: Path) -> None:
    process, ready = spawn(command=[str(BIN / "dsu"), "worker", "--models-dir", str(models)])
    try:
        assert {"center", "demucs", "hpss"} <= set(ready["architectures"])
        assert request(process, {"cmd": "ping"})["status"] == "pong"
    finally:
        process.kill()
