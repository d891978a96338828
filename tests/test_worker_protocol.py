"""Protocol conformance of ``dsu worker``: every command, with and without ids.

Each test drives a real worker process over its stdin/stdout (DESIGN §3).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import soundfile as sf

from dsu.client import WorkerProcess
from helpers import CENTRED, write_noise
from test_worker_support import read_reply, request, spawn, worker_argv


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("protocol")
    write_noise(root / "short.wav", 1.0, **CENTRED)
    (root / "models").mkdir()
    return root


@pytest.fixture(scope="module")
def worker(files: Path):
    process, _ = spawn(["--models-dir", str(files / "models")])
    yield process
    process.kill()


def test_ready_is_the_first_line_within_budget(files: Path) -> None:
    started = time.monotonic()
    process = WorkerProcess(worker_argv(["--models-dir", str(files / "models")]))
    try:
        ready = process.read(timeout=30)
        waited = time.monotonic() - started
        assert ready["status"] == "ready"
        assert ready["protocol"] == 1
        assert ready["device"] == "cpu"
        assert isinstance(ready["version"], str)
        assert {"center", "hpss", "demucs"} <= set(ready["architectures"])
        # The budget: ready within 1.5 s of spawn, before torch is imported.
        assert waited < 1.5, f"ready took {waited:.2f} s"
        process.send({"cmd": "exit"})
        assert process.read(timeout=30) == {"status": "exiting"}
        assert process.wait(30) == 0
    finally:
        process.kill()


@pytest.mark.parametrize("request_id", [None, 7, "abc-1"])
def test_ping(worker: WorkerProcess, request_id) -> None:
    message = {"cmd": "ping"} if request_id is None else {"cmd": "ping", "id": request_id}
    reply = request(worker, message)
    expected = {"status": "pong", "model_loaded": reply.get("model_loaded")}
    if request_id is not None:
        expected["id"] = request_id
    assert reply == expected


@pytest.mark.parametrize("cmd", ["status", "get_status"])
@pytest.mark.parametrize("request_id", [None, "s1"])
def test_status(worker: WorkerProcess, cmd: str, request_id) -> None:
    message = {"cmd": cmd} if request_id is None else {"cmd": cmd, "id": request_id}
    reply = request(worker, message)
    assert reply["status"] == "status"
    assert reply["ready"] is True
    assert reply["device"] == "cpu"
    assert reply.get("id") == request_id
    assert reply["memory"]["rss_mb"] > 0
    assert isinstance(reply["loaded_models"], list)
    assert isinstance(reply["queue_length"], int)
    assert "model_loaded" in reply


@pytest.mark.parametrize("request_id", [None, 3])
def test_list_models(worker: WorkerProcess, request_id) -> None:
    message = {"cmd": "list_models"}
    if request_id is not None:
        message["id"] = request_id
    reply = request(worker, message)
    assert reply["status"] == "models"
    assert reply.get("id") == request_id
    assert {"center", "hpss"} <= set(reply["models"])
    details = {d["name"]: d for d in reply["details"]}
    assert details["center"]["arch"] == "center"
    assert details["center"]["stems"] == ["vocals", "instrumental"]


def test_load_switch_and_unload(worker: WorkerProcess) -> None:
    first = request(worker, {"cmd": "load_model", "model": "center"})
    assert first["status"] == "model_loaded"
    assert first["model"] == "center"
    assert first["stems"] == ["vocals", "instrumental"]
    assert "id" not in first
    hpss = request(worker, {"cmd": "load_model", "model": "hpss", "id": "h"})
    assert (hpss["status"], hpss["model"], hpss["id"]) == ("model_loaded", "hpss", "h")
    again = request(worker, {"cmd": "load_model", "model": "center", "id": "c"})
    assert again["cached"] is True
    assert again["elapsed"] <= 0.010, "switching to a loaded model must not reload it"
    assert request(worker, {"cmd": "ping"})["model_loaded"] == "center"

    status = request(worker, {"cmd": "status", "id": "st"})
    assert [m["model"] for m in status["loaded_models"]] == ["center", "hpss"]

    unloaded = request(worker, {"cmd": "unload_model", "model": "center", "id": "u"})
    assert unloaded == {
        "status": "unloaded",
        "model": "center",
        "models": ["center"],
        "was_loaded": True,
        "id": "u",
    }
    assert request(worker, {"cmd": "ping"})["model_loaded"] == "hpss"
    everything = request(worker, {"cmd": "unload_model"})
    assert everything["models"] == ["hpss"]
    assert request(worker, {"cmd": "ping"})["model_loaded"] is None
    assert request(worker, {"cmd": "status"})["loaded_models"] == []


@pytest.mark.parametrize("request_id", [None, 11])
def test_separate(worker: WorkerProcess, files: Path, request_id) -> None:
    output = files / f"out-{request_id}"
    message = {
        "cmd": "separate",
        "input": str(files / "short.wav"),
        "output": str(output),
        "model": "center",
    }
    if request_id is not None:
        message["id"] = request_id
    worker.send(message)
    reply, events = read_reply(worker)
    assert reply["status"] == "done", reply
    assert reply.get("id") == request_id
    assert all(e.get("id") == request_id for e in events)
    assert sorted(reply["files"]) == ["instrumental.wav", "vocals.wav"]
    assert reply["output_dir"] == str(output.resolve())
    assert reply["total_elapsed"] >= reply["elapsed"] > 0
    assert reply["clipped"] == {}  # quiet noise: nothing beyond full scale
    for stem in ("vocals", "instrumental"):
        path = Path(reply["stems"][stem])
        assert path == output.resolve() / f"{stem}.wav"
        info = sf.info(str(path))
        assert (info.frames, info.samplerate, info.channels) == (44100, 44100, 2)
    assert sorted(p.name for p in output.iterdir()) == ["instrumental.wav", "vocals.wav"]


def test_separate_options(worker: WorkerProcess, files: Path) -> None:
    output = files / "opts"
    reply = request(
        worker,
        {
            "cmd": "separate",
            "id": "o",
            "input": str(files / "short.wav"),
            "output_dir": str(output),  # the seed's spelling of "output"
            "model": "center",
            "two_stems": "vocals",
            "format": "flac",
            "bit_depth": 24,
            "overlap": 0.5,
            "batch_size": 2,
        },
    )
    assert reply["status"] == "done", reply
    assert sorted(reply["files"]) == ["no_vocals.flac", "vocals.flac"]
    assert sf.info(reply["stems"]["vocals"]).subtype == "PCM_24"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"cmd": "teleport"}, "unknown_command"),
        ({"model": "center"}, "bad_request"),
        ({"cmd": 5}, "bad_request"),
        ({"cmd": "load_model", "model": "no-such-model"}, "model_not_found"),
        ({"cmd": "load_model", "model": 12}, "bad_request"),
        ({"cmd": "separate", "output": "/tmp/x"}, "bad_request"),
        ({"cmd": "separate", "input": "/nonexistent/a.wav", "output": "/tmp/x"}, "io_error"),
        ({"cmd": "cancel"}, "bad_request"),
    ],
)
@pytest.mark.parametrize("with_id", [False, True])
def test_errors_carry_stable_codes(worker: WorkerProcess, message, code, with_id) -> None:
    if with_id:
        message = {**message, "id": "e1"}
    reply = request(worker, message)
    assert reply["status"] == "error"
    assert reply["code"] == code
    assert isinstance(reply["message"], str) and reply["message"]
    assert reply.get("id") == ("e1" if with_id else None)


def test_separate_validation(worker: WorkerProcess, files: Path) -> None:
    base = {"cmd": "separate", "input": str(files / "short.wav"), "output": str(files / "v")}
    cases = [
        ({"stems": ["drums"]}, "bad_request"),
        ({"overlap": 1.5}, "bad_request"),
        ({"shifts": "two"}, "bad_request"),
        ({"batch_size": 1.5}, "bad_request"),
        ({"format": "exe"}, "bad_request"),
    ]
    for extra, code in cases:
        reply = request(worker, {**base, **extra, "model": "center"})
        assert (reply["status"], reply["code"]) == ("error", code), (extra, reply)
    assert not (files / "v").exists() or not any((files / "v").iterdir())


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1, 2]",
        b'"ping"',
        b"{",
        b'{"cmd": "ping", "x": NaN}',
        b'{"cmd": "ping", "x": 1e999}',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
)
def test_malformed_lines_get_bad_request(worker: WorkerProcess, line: bytes) -> None:
    worker.send_line(line)
    reply, _ = read_reply(worker)
    assert reply == {"status": "error", "code": "bad_request", "message": reply["message"]}
    assert request(worker, {"cmd": "ping", "id": "alive"})["status"] == "pong"


def test_overlong_line_is_refused_and_skipped(worker: WorkerProcess) -> None:
    worker.send_line(b'{"cmd": "ping", "pad": "' + b"x" * (2 << 20) + b'"}')
    reply, _ = read_reply(worker)
    assert (reply["status"], reply["code"]) == ("error", "bad_request")
    assert "longer than" in reply["message"]
    pong = request(worker, {"cmd": "ping", "id": 2})
    assert (pong["status"], pong["id"]) == ("pong", 2)


def test_invalid_id_is_refused_but_echoed(worker: WorkerProcess) -> None:
    for bad in ([1], {"a": 1}, True, 1.5):
        reply = request(worker, {"cmd": "ping", "id": bad})
        assert (reply["status"], reply["code"], reply["id"]) == ("error", "bad_request", bad)


def test_blank_lines_get_no_reply(worker: WorkerProcess) -> None:
    for blank in (b"", b"   ", b"\t\r"):
        worker.send_line(blank)
    worker.send({"cmd": "ping", "id": "after-blank"})
    assert worker.read(timeout=30)["id"] == "after-blank"


def test_requests_without_id_are_answered_in_order(worker: WorkerProcess, files: Path) -> None:
    lines = [
        {"cmd": "separate", "input": str(files / "short.wav"), "output": str(files / "ord")},
        {"cmd": "ping"},
        {"cmd": "list_models"},
        "garbage",
        {"cmd": "load_model", "model": "nope"},
        {"cmd": "status"},
    ]
    for line in lines:
        worker.send_line(line if isinstance(line, str) else json.dumps(line))
    statuses = [read_reply(worker)[0] for _ in lines]
    assert [s["status"] for s in statuses] == ["done", "pong", "models", "error", "error", "status"]
    assert statuses[4]["code"] == "model_not_found"


def test_cancel_unknown_target_is_acknowledged(worker: WorkerProcess) -> None:
    reply = request(worker, {"cmd": "cancel", "target": "nothing-runs", "id": "c"})
    assert reply == {
        "status": "cancel_requested",
        "target": "nothing-runs",
        "found": False,
        "id": "c",
    }


@pytest.mark.parametrize("request_id", [None, "bye"])
def test_exit(files: Path, request_id) -> None:
    process, _ = spawn(["--models-dir", str(files / "models")])
    try:
        message = {"cmd": "exit"} if request_id is None else {"cmd": "exit", "id": request_id}
        process.send(message)
        expected = (
            {"status": "exiting"} if request_id is None else {"status": "exiting", "id": "bye"}
        )
        assert process.read(timeout=30) == expected
        assert process.wait(30) == 0
        assert process.read_line(timeout=5) is None
    finally:
        process.kill()
