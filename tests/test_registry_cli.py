"""``dsu models list|pull|scan|verify`` run as real subprocesses (``python -m dsu``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsu.registry import scan_to_file
from test_registry_pull import FileServer, tiny_catalog_document
from tiny_demucs import tiny_net, write_package

ROOT = Path(__file__).resolve().parents[1]


def dsu(*args: str | Path, env_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dsu ...`` with ``DSU_MODELS_DIR`` pointing at ``env_dir``."""
    env = {**os.environ, "DSU_MODELS_DIR": str(env_dir), "PYTHONPATH": str(ROOT / "src")}
    env.pop("DSU_MODELS_MIRROR", None)
    return subprocess.run(
        [sys.executable, "-m", "dsu", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )


def user_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """Assert a clean failure (exit code, an ``error:`` line last, no traceback); return it."""
    assert result.returncode == code, result
    assert result.stderr.splitlines()[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.splitlines()[-1]


@pytest.fixture
def demucs_dir(tmp_path: Path) -> Path:
    """A plain Demucs repo: two tiny packages and a bag yaml, no models.json."""
    root = tmp_path / "repo"
    for seed in (1, 2):
        write_package(tiny_net("demucs", seed), root, f"beef000{seed}")
    (root / "pair.yaml").write_text("models: ['beef0001', 'beef0002']\n")
    return root


@pytest.fixture
def registered_dir(demucs_dir: Path) -> Path:
    """``demucs_dir`` with its models.json written (so commands need not import torch)."""
    scan_to_file(demucs_dir)
    return demucs_dir


def test_list_json_and_table(tmp_path: Path, registered_dir: Path) -> None:
    demucs_dir = registered_dir
    result = dsu("models", "list", "--json", "--models-dir", demucs_dir, env_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["models_dir"] == str(demucs_dir)
    assert listing["default"] == "pair"
    status = {m["name"]: m for m in listing["models"]}
    assert status["pair"]["status"] == "installed" and status["pair"]["default"]
    assert status["pair"]["stems"] == ["drums", "bass", "other", "vocals"]
    assert status["center"]["status"] == "builtin"
    assert status["htdemucs"]["status"] == "available"
    assert status["mdx_q"]["requires"] == "quantized"

    table = dsu("models", "list", env_dir=demucs_dir)  # DSU_MODELS_DIR is the default
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ARCH", "CATEGORY", "STEMS", "STATUS", "SIZE", "LICENSE"]
    assert any(line.split()[:3] == ["pair", "*", "demucs"] for line in lines)
    # Apollo's weights are CC BY-SA 4.0: the listing says so.
    assert any(line.startswith("apollo ") and "CC-BY-SA-4.0" in line for line in lines)
    assert any(line.startswith("htdemucs_6s") and "available" in line for line in lines)
    assert f"models directory: {demucs_dir}" in table.stdout


def test_scan_writes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    # Official Demucs file names (stems from the catalog) and an MSST pair: no checkpoint
    # needs unpickling, so the subprocesses stay light.
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "955717e8-8726e21a.th").write_bytes(b"stand-in")
    (root / "htdemucs.yaml").write_text("models: ['955717e8']\n")
    (root / "voc.ckpt").write_bytes(b"stand-in")
    (root / "voc.yaml").write_text("model: {num_bands: 4}\ntraining: {target_instrument: vocals}\n")
    result = dsu("models", "scan", root, env_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"wrote {root / 'models.json'}: 2 models" in result.stdout
    written = json.loads((root / "models.json").read_text())
    assert written["default"] == "htdemucs"
    assert written["models"]["htdemucs"]["stems"] == ["drums", "bass", "other", "vocals"]
    assert written["models"]["voc"]["arch"] == "mel_band_roformer"

    (root / "models.json").write_text(json.dumps({"version": 1, "models": {}}))
    again = dsu("models", "scan", "--models-dir", root, env_dir=tmp_path)
    assert "--force" in user_error(again)
    assert json.loads((root / "models.json").read_text())["models"] == {}
    forced = dsu("models", "scan", "--force", root, env_dir=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert json.loads((root / "models.json").read_text()) == written


def test_verify_exit_codes(tmp_path: Path, registered_dir: Path) -> None:
    demucs_dir = registered_dir
    ok = dsu("models", "verify", "--models-dir", demucs_dir, env_dir=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 problems" in ok.stdout

    victim = next(demucs_dir.glob("beef0002-*.th"))
    victim.write_bytes(victim.read_bytes()[:-10])
    bad = dsu("models", "verify", "--models-dir", demucs_dir, env_dir=tmp_path)
    assert bad.returncode == 1
    failed = [line for line in bad.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and victim.name in failed[0] and "sha256 mismatch" in failed[0]

    assert "nope" in user_error(dsu("models", "verify", "nope", env_dir=demucs_dir))


def test_invalid_manifest_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / "models.json").write_text(json.dumps({"version": 7, "models": {}}))
    stderr = user_error(dsu("models", "list", "--models-dir", tmp_path, env_dir=tmp_path))
    assert str(tmp_path / "models.json") in stderr and "version" in stderr
    verify = dsu("models", "verify", "--models-dir", tmp_path, env_dir=tmp_path)
    assert verify.returncode == 1 and "FAILED" in verify.stdout


def test_pull_with_extra_catalog(tmp_path: Path) -> None:
    folder = tmp_path / "packages"
    paths = [write_package(tiny_net("demucs", s), folder, f"cafe000{s}") for s in (1, 2)]
    files = {p.name: p.read_bytes() for p in paths}
    catalog = tmp_path / "catalog.json"
    models = tmp_path / "models"
    with FileServer(dict(files)) as server:
        catalog.write_text(json.dumps(tiny_catalog_document(files, server)))
        result = dsu(
            "models", "pull", "tiny", "--catalog", catalog, "--models-dir", models,
            env_dir=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"tiny: installed in {models} (2 weight files)" in result.stdout
        # Dotfiles are dsu's own bookkeeping (the remembered digests), not model files.
        installed = sorted((models / "weights").glob("[!.]*"))
        assert [(p.name, p.read_bytes()) for p in installed] == sorted(files.items())
        listing = json.loads(dsu("models", "list", "--json", env_dir=models).stdout)
        assert {m["name"]: m["status"] for m in listing["models"]}["tiny"] == "installed"

        server.files = {name: b"corrupt" for name in files}
        broken = dsu(
            "models", "pull", "tiny", "--catalog", catalog, "--models-dir", tmp_path / "other",
            env_dir=tmp_path,
        )  # fmt: skip
        assert "sha256 mismatch" in user_error(broken, code=1)
    assert "did you mean" in user_error(dsu("models", "pull", "htdemucz", env_dir=tmp_path))


def test_models_without_action_prints_usage(tmp_path: Path) -> None:
    result = dsu("models", env_dir=tmp_path)
    assert result.returncode == 2
    assert "list" in result.stderr and "pull" in result.stderr and "verify" in result.stderr
