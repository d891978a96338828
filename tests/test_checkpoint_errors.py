"""Damaged checkpoints and checksum mismatches end in one typed error naming the file.

A Demucs-layout models directory (no ``models.json``) is scanned; its ``.th`` names carry
the first 8 hex of their sha256, which the registry checks before loading.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsu.api import Separator
from dsu.errors import ChecksumMismatch, RegistryError
from dsu.registry import ModelEntry, Registry, digests
from dsu.registry.verify import ensure_checksums, verify
from tiny_demucs import tiny_net, write_package

SIG = "abcd1234"


@pytest.fixture(scope="module")
def package_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("pkg")
    return write_package(tiny_net("htdemucs"), folder, SIG).read_bytes()


def _damaged(kind: str, package: bytes) -> bytes:
    if kind == "truncated":
        return package[: len(package) // 2]
    if kind == "random":
        return np.random.default_rng(0).bytes(5000)
    return b""


PROBLEM = {
    "truncated": "truncated",
    "random": "not a PyTorch checkpoint",
    "empty": "empty (0 bytes)",
}


def _demucs_dir(root: Path, data: bytes) -> Path:
    """A Demucs repo whose single ``.th`` is named after the sha256 of ``data`` (so the
    checksum passes and the loader itself must reject the bytes)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{SIG}-{hashlib.sha256(data).hexdigest()[:8]}.th"
    path.write_bytes(data)
    return path


def _wav(path: Path) -> Path:
    sf.write(path, np.zeros((4410, 2), dtype="float32"), 44100)
    return path


def _dsu(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DSU_MODELS_DIR": str(cwd / "unused")}
    return subprocess.run(
        [sys.executable, "-m", "dsu", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


@pytest.mark.parametrize("kind", sorted(PROBLEM))
def test_cli_separate_names_the_damaged_file(
    tmp_path: Path, package_bytes: bytes, kind: str
) -> None:
    path = _demucs_dir(tmp_path / "models", _damaged(kind, package_bytes))
    result = _dsu(
        "separate", "-m", SIG, "--models-dir", tmp_path / "models", "-o", tmp_path / "out",
        "-q", _wav(tmp_path / "x.wav"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert path.name in result.stderr
    assert PROBLEM[kind] in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.wav"))


@pytest.mark.parametrize("kind", sorted(PROBLEM))
def test_api_raises_registry_error_naming_the_file(
    tmp_path: Path, package_bytes: bytes, kind: str
) -> None:
    path = _demucs_dir(tmp_path, _damaged(kind, package_bytes))
    separator = Separator(SIG, models_dir=tmp_path, device="cpu")
    with pytest.raises(RegistryError) as caught:
        separator.load()
    assert str(path) in caught.value.message
    assert PROBLEM[kind] in caught.value.message


def test_a_pickle_that_is_not_a_package_is_refused(tmp_path: Path) -> None:
    import torch

    buffer = tmp_path / "tmp.th"
    torch.save({"weights": torch.zeros(2)}, buffer)
    path = _demucs_dir(tmp_path / "models", buffer.read_bytes())
    with pytest.raises(RegistryError, match="not a Demucs package") as caught:
        Separator(SIG, models_dir=tmp_path / "models", device="cpu").load()
    assert str(path) in caught.value.message


def _mismatched_dir(root: Path, package: bytes) -> Path:
    """A Demucs repo whose file name promises another digest than its bytes have."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{SIG}-{hashlib.sha256(package).hexdigest()[:8]}.th"
    path.write_bytes(package[:-1] + bytes([package[-1] ^ 1]))
    return path


def test_checksum_mismatch_is_refused_with_how_to_override(
    tmp_path: Path, package_bytes: bytes
) -> None:
    path = _mismatched_dir(tmp_path, package_bytes)
    with pytest.raises(ChecksumMismatch) as caught:
        Registry.open(tmp_path).resolve(SIG)
    message = caught.value.message
    assert str(path) in message and "sha256 mismatch" in message
    assert "--allow-checksum-mismatch" in message and "dsu models pull" in message
    # The explicit override returns the entry.
    entry = Registry.open(tmp_path).resolve(SIG, allow_checksum_mismatch=True)
    assert entry.weights == (path,)


def test_cli_separate_refuses_a_checksum_mismatch(tmp_path: Path, package_bytes: bytes) -> None:
    path = _mismatched_dir(tmp_path / "models", package_bytes)
    result = _dsu(
        "separate", "-m", SIG, "--models-dir", tmp_path / "models", "-o", tmp_path / "out",
        "-q", _wav(tmp_path / "x.wav"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert path.name in result.stderr and "sha256 mismatch" in result.stderr
    verified = _dsu("models", "verify", "--models-dir", tmp_path / "models", cwd=tmp_path)
    assert verified.returncode == 1 and "FAILED" in verified.stdout


def test_models_json_flag_allows_a_mismatch(tmp_path: Path, package_bytes: bytes) -> None:
    path = _mismatched_dir(tmp_path, package_bytes)
    entry = {
        "arch": "demucs",
        "weights": [path.name],
        "sha256": {path.name: "0" * 64},
        "allow_checksum_mismatch": True,
    }
    (tmp_path / "models.json").write_text(json.dumps({"version": 1, "models": {"m": entry}}))
    assert Registry.open(tmp_path).resolve("m").allow_checksum_mismatch
    entry["allow_checksum_mismatch"] = "yes"
    (tmp_path / "models.json").write_text(json.dumps({"version": 1, "models": {"m": entry}}))
    with pytest.raises(RegistryError, match="allow_checksum_mismatch: must be true or false"):
        Registry.open(tmp_path)


def test_files_without_a_sha256_are_not_checked(tmp_path: Path) -> None:
    (tmp_path / "w.ckpt").write_bytes(b"anything")
    entry = {"arch": "demucs", "weights": ["w.ckpt"]}
    (tmp_path / "models.json").write_text(json.dumps({"version": 1, "models": {"m": entry}}))
    assert Registry.open(tmp_path).resolve("m").name == "m"


def test_remembered_digest_skips_rehash_until_the_file_changes(
    tmp_path: Path, package_bytes: bytes
) -> None:
    path = tmp_path / "w.th"
    path.write_bytes(package_bytes)
    real = hashlib.sha256(package_bytes).hexdigest()
    entry = ModelEntry(name="w", arch="demucs", weights=(path,), sha256={"w.th": real})
    ensure_checksums(entry)
    cache = json.loads((tmp_path / digests.CACHE_FILE).read_text())
    assert cache["files"]["w.th"]["sha256"] == real

    # A forged digest for the same size and mtime is believed: proof that nothing was
    # hashed again, and the reason `dsu models verify` always hashes in full.
    cache["files"]["w.th"]["sha256"] = "f" * 64
    (tmp_path / digests.CACHE_FILE).write_text(json.dumps(cache))
    digests.forget_all()
    with pytest.raises(ChecksumMismatch):
        ensure_checksums(entry)
    digests.forget_all()
    assert digests.rehash(path) == real
    ensure_checksums(entry)

    # Rewriting the file (another size, another mtime) makes it be hashed again.
    path.write_bytes(package_bytes + b"x")
    with pytest.raises(ChecksumMismatch, match=rf"\({len(package_bytes) + 1} bytes\)"):
        ensure_checksums(entry)


def test_verify_hashes_in_full_whatever_is_remembered(tmp_path: Path, package_bytes: bytes) -> None:
    path = _demucs_dir(tmp_path, package_bytes)
    digests.remember(path, "0" * 64)
    digests.forget_all()
    (result,) = verify(tmp_path)
    assert result.ok and result.checked
    assert Registry.open(tmp_path).resolve(SIG).weights == (path,)


def test_an_unwritable_digest_file_is_no_reason_to_fail(
    tmp_path: Path, package_bytes: bytes
) -> None:
    # A directory where the digest file would go: reading and writing it both fail (even
    # as root, unlike a read-only mode), and checking works from memory alone.
    path = _demucs_dir(tmp_path, package_bytes)
    (tmp_path / digests.CACHE_FILE).mkdir()
    digests.forget_all()
    assert Registry.open(tmp_path).resolve(SIG).weights == (path,)
    assert digests.digest(path) == hashlib.sha256(package_bytes).hexdigest()
    assert (tmp_path / digests.CACHE_FILE).is_dir()
