"""The standing bad-input corpus through every surface: the CLI, the worker, the service.

Every input of :mod:`corpus` (odd but valid audio, hostile files and paths), every engine
option at inf/nan/negative/huge, and outputs on a read-only or full filesystem must end
with a full-length correct output or a typed error: never a traceback, never a partial
file or an empty directory left behind, and the worker and the service keep answering.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import corpus
from corpus import Case, run_cli, stems_sum_db
from test_service_support import Server
from test_worker_support import read_reply, request, spawn

TYPED = {"bad_audio", "io_error", "bad_request"}
# Lossy inputs: without a gapless header a decoder also returns the encoder's priming and
# padding (a few MP3 frames of 1152 samples); it must never return less than the stream.
LOSSY_SHORT, LOSSY_LONG = 2304, 4608
BAD_VALUES: dict[str, list[object]] = {
    "shifts": [float("inf"), float("nan"), -1, 1e9, 2.5],
    "overlap": [float("nan"), float("inf"), -0.1, 1.0, 7],
    "segment": [float("inf"), float("nan"), 0.00001, -1, 0, 1e9],
    "batch_size": [0, -1, 1e9, float("nan"), 1.5],
}


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    built = corpus.build(tmp_path_factory.mktemp("corpus"))
    assert len(built) >= 80 - sum(len(v) for v in BAD_VALUES.values())
    return built


def _frames(path: Path) -> tuple[np.ndarray, int]:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return data.T, rate


def _leftovers(root: Path) -> list[str]:
    """Partial files and empty directories under ``root``."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and (path.name.startswith(".") or "partial" in path.name):
            found.append(f"partial file {path}")
        if path.is_dir() and not any(path.iterdir()):
            found.append(f"empty directory {path}")
    return found


def _length_ok(case: Case, frames: int) -> bool:
    assert case.frames is not None
    if case.mixture is not None:
        return frames == case.frames
    return case.frames - LOSSY_SHORT <= frames <= case.frames + LOSSY_LONG


def _check_stems(case: Case, stems: dict[str, np.ndarray], rate: int) -> list[str]:
    """What is wrong with the stems of a good case (empty when nothing)."""
    problems = []
    assert case.frames is not None
    if set(stems) != {"vocals", "instrumental"}:
        return [f"{case.name}: stems {sorted(stems)}"]
    if rate != case.samplerate:
        problems.append(f"{case.name}: written at {rate} Hz, input {case.samplerate} Hz")
    for stem, data in stems.items():
        if not _length_ok(case, data.shape[-1]):
            problems.append(f"{case.name}: {stem} has {data.shape[-1]} frames of {case.frames}")
        if not np.isfinite(data).all():
            problems.append(f"{case.name}: {stem} has non-finite samples")
    mixture = case.mixture
    # center's stems add up to the mixture at its own rate (44.1 kHz: content above
    # 22 kHz of a faster input is gone) and where 16-bit stems need not clip.
    if mixture is not None and not problems and case.samplerate <= 44100:
        total = list(stems.values())
        mono = mixture.mean(0, keepdims=True) if mixture.shape[0] == 1 else mixture
        peak = float(np.abs(mono).max())
        if 1e-3 < peak <= 0.5 and stems_sum_db(total, mono) < 25:
            problems.append(f"{case.name}: stems do not add up to the mixture")
    return problems


# --- the CLI --------------------------------------------------------------------------


def test_cli_corpus(cases: list[Case], tmp_path: Path) -> None:
    """All inputs in one run: good ones separated to full length, bad ones refused once
    each with a typed message, exit 1, nothing partial or empty left."""
    out = tmp_path / "out"
    result = run_cli(["separate", *[str(c.path) for c in cases], "-m", "center", "-o", str(out)])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 1, result.stderr[-3000:]
    bad = [c for c in cases if not c.good]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad), "\n".join(errors)
    directories = sorted(p for p in out.iterdir() if p.is_dir())
    good = [c for c in cases if c.good]
    assert len(directories) == len(good), [d.name for d in directories]
    problems: list[str] = []
    unclaimed = list(directories)
    for case in good:
        match = None
        stem = case.path.name.split(".")[0]
        # Prefer the folders named after the input: lossy cases' lengths overlap.
        for directory in sorted(unclaimed, key=lambda d: not d.name.startswith(stem)):
            stems = {p.stem: _frames(p) for p in directory.iterdir() if p.suffix == ".wav"}
            if set(stems) != {"vocals", "instrumental"}:
                continue
            rates = {s[1] for s in stems.values()}
            if rates == {case.samplerate} and all(
                _length_ok(case, s[0].shape[-1]) for s in stems.values()
            ):
                match = directory
                problems += _check_stems(case, {k: v[0] for k, v in stems.items()}, case.samplerate)
                break
        if match is None:
            problems.append(f"{case.name}: no output directory of its length and rate")
        else:
            unclaimed.remove(match)
    assert not problems, "\n".join(problems)
    assert not _leftovers(out), _leftovers(out)


@pytest.mark.parametrize(
    ("flag", "value"),
    [(k, v) for k, values in BAD_VALUES.items() for v in values],
    ids=lambda v: str(v),
)
def test_cli_bad_option_values(flag: str, value: object, cases: list[Case], tmp_path: Path):
    """A bad number is a usage error: exit 2, no traceback, nothing written."""
    source = next(c for c in cases if c.name == "mono").path
    out = tmp_path / "out"
    option = "--" + flag.replace("_", "-")
    result = run_cli(["separate", str(source), "-m", "center", "-o", str(out), option, str(value)])
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.rglob("*"))


# --- output on a read-only or a full filesystem ---------------------------------------


def _mount_tmpfs(target: Path, options: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A full (64 KiB) and a read-only tmpfs; skipped where mounting is not permitted."""
    full, readonly = tmp_path / "full", tmp_path / "readonly"
    if not _mount_tmpfs(full, "size=64k"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    if not _mount_tmpfs(readonly, "ro,size=64k"):
        subprocess.run(["umount", str(full)], check=False)
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        yield {"full": full, "readonly": readonly}
    finally:
        for mount in (full, readonly):
            subprocess.run(["umount", "-l", str(mount)], check=False)


def test_outputs_on_full_and_read_only_filesystems(cases: list[Case], small_fs: dict) -> None:
    source = next(c for c in cases if c.name == "multi-chunk").path
    for kind, expected in (("full", "no space left"), ("readonly", "read-only")):
        target = small_fs[kind] / "out"
        result = run_cli(["separate", str(source), "-m", "center", "-o", str(target)])
        assert result.returncode in (1, 2), result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert expected in result.stderr.lower(), result.stderr[-2000:]
        assert not _leftovers(small_fs[kind]), _leftovers(small_fs[kind])

    process, _ = spawn()
    try:
        for index, kind in enumerate(("full", "readonly")):
            reply = request(
                process,
                {
                    "cmd": "separate",
                    "input": str(source),
                    "output": str(small_fs[kind] / f"w{index}"),
                    "model": "center",
                },
            )
            assert reply["status"] == "error" and reply["code"] == "io_error", reply
            assert request(process, {"cmd": "ping"})["status"] == "pong"
            assert not _leftovers(small_fs[kind]), _leftovers(small_fs[kind])
    finally:
        process.kill()


# --- the worker -----------------------------------------------------------------------


def test_worker_corpus(cases: list[Case], tmp_path: Path) -> None:
    process, _ = spawn()
    problems: list[str] = []
    try:
        for index, case in enumerate(cases):
            out = tmp_path / f"w{index}"
            process.send(
                {
                    "cmd": "separate",
                    "input": str(case.path),
                    "output": str(out),
                    "model": "center",
                    "id": index,
                }
            )
            reply, _ = read_reply(process)
            text = json.dumps(reply)
            if "Traceback" in text:
                problems.append(f"{case.name}: traceback in the reply")
            if case.good:
                if reply.get("status") != "done":
                    problems.append(f"{case.name}: {reply}")
                    continue
                stems = {stem: _frames(Path(path)) for stem, path in reply["stems"].items()}
                rate = next(iter(stems.values()))[1]
                problems += _check_stems(case, {k: v[0] for k, v in stems.items()}, rate)
            else:
                if reply.get("status") != "error" or reply.get("code") not in TYPED:
                    problems.append(f"{case.name}: expected a typed error, got {reply}")
                if out.exists():
                    problems.append(f"{case.name}: left {out} behind")
            pong = request(process, {"cmd": "ping"})
            assert pong["status"] == "pong", f"worker stopped answering after {case.name}"
        problems += _leftovers(tmp_path)
        assert "Traceback" not in process.stderr_text()
    finally:
        process.kill()
    assert not problems, "\n".join(problems)


def test_worker_bad_option_values(cases: list[Case], tmp_path: Path) -> None:
    """Every bad number, and values of the wrong type, get bad_request; the worker lives on."""
    source = next(c for c in cases if c.name == "mono").path
    process, _ = spawn()
    problems = []
    try:
        values = {k: [*v, "many", True, [1], {"a": 1}] for k, v in BAD_VALUES.items()}
        values["device"] = ["tpu", "cuda:99", 3]
        for field, bad in values.items():
            for value in bad:
                out = tmp_path / f"{field}-{value!s}"
                message = {
                    "cmd": "separate",
                    "input": str(source),
                    "output": str(out),
                    "model": "center",
                    field: value,
                }
                # allow_nan: the worker must cope with what Python's json module writes.
                process.send_line(json.dumps(message, allow_nan=True))
                reply, _ = read_reply(process)
                if reply.get("status") != "error" or reply.get("code") != "bad_request":
                    problems.append(f"{field}={value!r}: {reply}")
                if out.exists():
                    problems.append(f"{field}={value!r}: left {out}")
                assert request(process, {"cmd": "ping"})["status"] == "pong"
    finally:
        process.kill()
    assert not problems, "\n".join(problems)


# --- the service ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("corpus-service"), {"DEMUCS_MODEL": "center"})
    server.start()
    yield server
    server.stop()


def test_service_corpus(cases: list[Case], service: Server) -> None:
    problems: list[str] = []
    with service.client() as client:
        for case in cases:
            if not case.path.is_file() or (case.path.is_symlink() and not case.path.exists()):
                continue  # a path, not content: the service takes no server paths
            upload = {"file": (case.path.name, case.path.read_bytes(), "application/octet-stream")}
            r = client.post(
                "/separate-sync", files=upload, data={"model": "center", "output_format": "wav"}
            )
            if "Traceback" in r.text:
                problems.append(f"{case.name}: traceback in the response")
            if case.good:
                if r.status_code != 200:
                    problems.append(f"{case.name}: HTTP {r.status_code} {r.text[:300]}")
                    continue
                body = r.json()
                stems = {}
                for stem in ("vocals", "instrumental"):
                    data = base64.b64decode(body[f"{stem}_base64"])
                    array, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
                    stems[stem] = array.T
                problems += _check_stems(case, stems, rate)
            else:
                error = (
                    r.json().get("error", {})
                    if r.headers.get("content-type", "").startswith("application/json")
                    else {}
                )
                if r.status_code not in (400, 413, 415, 422) or error.get("code") not in TYPED:
                    problems.append(f"{case.name}: HTTP {r.status_code} {r.text[:300]}")
            assert client.get("/health").status_code == 200, f"unhealthy after {case.name}"
    assert service.alive()
    log = service.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert not problems, "\n".join(problems)
