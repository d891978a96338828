"""Separations through a real worker: clean stdout, concurrency, cancel, failures, safety.

Long requests are 120 s of noise through the weight-free ``hpss`` model with 8 shifts (tens
of seconds of work on 2 cores), cancelled long before they would finish.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import soundfile as sf

from dsu.client import WorkerProcess, worker_command
from helpers import CENTRED, write_noise
from test_worker_support import (
    LONG_SECONDS,
    LONG_WORK,
    read_reply,
    request,
    spawn,
    write_models_json,
)
from tiny_demucs import write_models_dir


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    write_noise(root / "short.wav", 2.0, **CENTRED)
    write_noise(root / "long.wav", LONG_SECONDS, seed=1, **CENTRED)
    (root / "not-audio.wav").write_text("this is text, not audio\n")
    models = write_models_dir(root / "models", {"tiny": {"nets": [("demucs", 0)]}})
    (models / "weights" / "broken.pt").write_bytes(b"\x80\x02 definitely not a checkpoint")
    manifest = json.loads((models / "models.json").read_text())
    manifest["models"]["broken"] = {
        "arch": "tdc_unet",
        "weights": "weights/broken.pt",
        "stems": ["vocals", "accompaniment"],
    }
    write_models_json(models, manifest["models"], default="tiny")
    return root


@pytest.fixture(scope="module")
def worker(media: Path):
    process, _ = spawn(["--models-dir", str(media / "models")])
    yield process
    process.kill()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*")) if directory.exists() else []


def test_every_stdout_line_is_protocol_json(worker: WorkerProcess, media: Path) -> None:
    """Through a full separation with each kind of model, stdout carries JSON lines only."""
    for model in ("center", "tiny"):
        output = media / f"clean-{model}"
        worker.send(
            {
                "cmd": "separate",
                "id": model,
                "input": str(media / "short.wav"),
                "output": str(output),
                "model": model,
            }
        )
        lines = []
        while True:
            raw = worker.read_line(timeout=120)
            assert raw is not None and raw.endswith(b"\n")
            message = json.loads(raw)
            lines.append(message)
            assert isinstance(message, dict) and isinstance(message["status"], str)
            if message["status"] != "progress":
                break
        done = lines[-1]
        assert done["status"] == "done", done
        assert all(m["id"] == model for m in lines)
        for event in lines[:-1]:
            assert isinstance(event["stage"], str)
            assert 0.0 <= event["progress"] <= 1.0
        for path in done["stems"].values():
            assert sf.info(path).frames == 2 * 44100
    assert sorted(done["stems"]) == ["bass", "drums", "other", "vocals"]


def test_progress_events_are_throttled(worker: WorkerProcess, media: Path) -> None:
    worker.send(
        {
            "cmd": "separate",
            "id": "slow",
            "input": str(media / "long.wav"),
            "output": str(media / "throttle"),
            **LONG_WORK,
        }
    )
    times: dict[str, list[float]] = {}
    while len(times.get("separating", [])) < 4:
        event = worker.read(timeout=60)
        assert event["status"] == "progress", event
        times.setdefault(event["stage"], []).append(time.monotonic())
    request(worker, {"cmd": "cancel", "target": "slow", "id": "c-slow"})
    reply, _ = read_reply(worker)
    assert reply["status"] == "cancelled"
    assert "reading" in times, "each stage is reported"
    # A new stage is reported at once; within a stage, at most a few events per second.
    gaps = [b - a for stage in times.values() for a, b in itertools.pairwise(stage)]
    assert gaps and min(gaps) > 0.15, times
    assert _leftovers(media / "throttle") == []


def test_ping_status_and_cancel_during_separation(worker: WorkerProcess, media: Path) -> None:
    output = media / "cancelled"
    worker.send(
        {
            "cmd": "separate",
            "id": "long",
            "input": str(media / "long.wav"),
            "output": str(output),
            **LONG_WORK,
        }
    )
    event = worker.read(timeout=60)
    while event.get("stage") != "separating":
        event = worker.read(timeout=60)
    assert (event["status"], event["id"]) == ("progress", "long")

    worker.send({"cmd": "ping", "id": "p"})
    worker.send({"cmd": "status", "id": "s"})
    worker.send({"cmd": "list_models", "id": "l"})
    answers = {}
    while len(answers) < 3:
        message = worker.read(timeout=10)
        assert message["status"] != "done", "quick commands must not wait for the separation"
        if message["status"] != "progress":
            answers[message["id"]] = message
    assert answers["p"]["status"] == "pong"
    assert answers["s"]["running"] == {"cmd": "separate", "id": "long"}
    assert answers["l"]["status"] == "models"

    worker.send({"cmd": "cancel", "target": "long", "id": "c"})
    replies = {}
    while len(replies) < 2:
        message = worker.read(timeout=30)
        if message["status"] != "progress":
            replies[message["id"]] = message
    assert list(replies) == ["c", "long"], "the acknowledgement comes first"
    assert replies["c"] == {
        "status": "cancel_requested",
        "target": "long",
        "found": True,
        "id": "c",
    }
    assert replies["long"]["status"] == "cancelled"
    assert replies["long"]["code"] == "cancelled"
    assert _leftovers(output) == [], "a cancelled request leaves no partial file"
    assert request(worker, {"cmd": "ping", "id": "after"})["status"] == "pong"


def test_cancel_a_queued_request(worker: WorkerProcess, media: Path) -> None:
    running = {"cmd": "separate", "input": str(media / "long.wav"), **LONG_WORK}
    worker.send({**running, "id": "first", "output": str(media / "q1")})
    worker.send({**running, "id": "second", "output": str(media / "q2")})
    worker.send({"cmd": "cancel", "target": "second", "id": "c2"})
    replies = {}
    while "second" not in replies:
        message = worker.read(timeout=30)
        if message["status"] != "progress":
            replies[message["id"]] = message
    assert list(replies) == ["c2", "second"], "the acknowledgement comes first"
    assert replies["second"]["status"] == "cancelled"
    assert replies["c2"]["found"] is True
    assert "first" not in replies, "the running request goes on"
    worker.send({"cmd": "cancel", "target": "first", "id": "c1"})
    while "first" not in replies:  # c1's acknowledgement is read first
        message = worker.read(timeout=30)
        if message["status"] != "progress":
            replies[message["id"]] = message
    assert replies["first"]["status"] == "cancelled"
    assert _leftovers(media / "q1") == [] and _leftovers(media / "q2") == []


def test_model_failure_is_an_error_and_the_worker_lives_on(
    worker: WorkerProcess, media: Path
) -> None:
    reply = request(worker, {"cmd": "load_model", "model": "broken", "id": "b"})
    assert reply["status"] == "error" and reply["id"] == "b"
    assert reply["code"] in {"bad_request", "model_not_found", "io_error", "internal"}
    assert "\n" not in reply["message"]
    output = media / "after-broken"
    failed = request(
        worker,
        {
            "cmd": "separate",
            "input": str(media / "short.wav"),
            "output": str(output),
            "model": "broken",
        },
    )
    assert failed["status"] == "error"
    assert _leftovers(output) == []
    ok = request(
        worker,
        {
            "cmd": "separate",
            "input": str(media / "short.wav"),
            "output": str(output),
            "model": "center",
        },
    )
    assert ok["status"] == "done", ok
    assert sorted(ok["files"]) == ["instrumental.wav", "vocals.wav"]


def test_undecodable_input_is_bad_audio(worker: WorkerProcess, media: Path) -> None:
    reply = request(
        worker,
        {
            "cmd": "separate",
            "id": "bad",
            "input": str(media / "not-audio.wav"),
            "output": str(media / "bad-out"),
            "model": "center",
        },
    )
    assert (reply["status"], reply["code"]) == ("error", "bad_audio")
    assert "not-audio.wav" in reply["message"]
    assert _leftovers(media / "bad-out") == []


def test_allowed_root(tmp_path: Path, media: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    inside_input = write_noise(root / "in.wav", 0.5, **CENTRED)
    outside_input = write_noise(outside / "in.wav", 0.5, **CENTRED)
    (root / "link-in.wav").symlink_to(outside_input)
    (root / "link-dir").symlink_to(outside, target_is_directory=True)
    process, _ = spawn(
        ["--models-dir", str(media / "models"), "--allowed-root", str(root)],
    )
    try:
        refused = [
            (outside_input, root / "o1"),
            (root / "link-in.wav", root / "o2"),
            (root / ".." / "outside" / "in.wav", root / "o3"),
            (inside_input, outside / "o4"),
            (inside_input, root / "link-dir" / "o5"),
        ]
        for source, output in refused:
            reply = request(
                process,
                {"cmd": "separate", "input": str(source), "output": str(output), "model": "center"},
            )
            assert (reply["status"], reply["code"]) == ("error", "bad_request"), (source, output)
            assert "allowed roots" in reply["message"]
        assert sorted(p.name for p in outside.iterdir()) == ["in.wav"]
        ok = request(
            process,
            {
                "cmd": "separate",
                "input": str(inside_input),
                "output": str(root / "ok"),
                "model": "center",
            },
        )
        assert ok["status"] == "done", ok
        assert Path(ok["stems"]["vocals"]).parent == (root / "ok").resolve()
    finally:
        process.kill()


def test_stdin_eof_finishes_the_running_request_then_exits(media: Path) -> None:
    process, _ = spawn(["--models-dir", str(media / "models")])
    try:
        output = media / "eof"
        process.send(
            {
                "cmd": "separate",
                "id": "last",
                "input": str(media / "short.wav"),
                "output": str(output),
                "model": "center",
            }
        )
        process.close_stdin()
        reply, _ = read_reply(process)
        assert reply["status"] == "done" and reply["id"] == "last"
        assert process.wait(30) == 0
        assert process.read_line(timeout=5) is None
        assert sorted(p.name for p in output.iterdir()) == ["instrumental.wav", "vocals.wav"]
    finally:
        process.kill()


def test_dead_parent_stops_a_running_separation(media: Path, tmp_path: Path) -> None:
    """When the reader of stdout goes away, the worker cancels its work and exits 0."""
    proc = subprocess.Popen(
        worker_command(["--models-dir", str(media / "models")]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert json.loads(proc.stdout.readline())["status"] == "ready"
        message = {
            "cmd": "separate",
            "id": "orphan",
            "input": str(media / "long.wav"),
            "output": str(tmp_path / "orphan"),
            **LONG_WORK,
        }
        proc.stdin.write(json.dumps(message).encode() + b"\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["status"] == "progress"
        proc.stdout.close()
        started = time.monotonic()
        assert proc.wait(60) == 0
        assert time.monotonic() - started < 30, "a long separation must not run to the end"
        assert _leftovers(tmp_path / "orphan") == []
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_cancels_and_exits(media: Path, tmp_path: Path) -> None:
    process, _ = spawn(["--models-dir", str(media / "models")])
    try:
        process.send(
            {
                "cmd": "separate",
                "id": "t",
                "input": str(media / "long.wav"),
                "output": str(tmp_path / "term"),
                **LONG_WORK,
            }
        )
        assert process.read(timeout=60)["status"] == "progress"
        os.kill(process.pid, signal.SIGTERM)
        reply, _ = read_reply(process, timeout=60)
        assert (reply["status"], reply["id"]) == ("cancelled", "t")
        assert process.read(timeout=30) == {"status": "shutdown", "reason": "signal_or_parent_died"}
        assert process.wait(30) == 0
        assert _leftovers(tmp_path / "term") == []
    finally:
        process.kill()


def test_max_loaded_models_evicts_least_recently_used(media: Path) -> None:
    process, _ = spawn(["--models-dir", str(media / "models"), "--max-loaded-models", "2"])
    try:
        for name in ("center", "hpss", "center", "tiny"):
            assert (
                request(process, {"cmd": "load_model", "model": name})["status"] == "model_loaded"
            )
        status = request(process, {"cmd": "status"})
        # hpss was the least recently used when tiny arrived.
        assert [m["model"] for m in status["loaded_models"]] == ["tiny", "center"]
        tiny = status["loaded_models"][0]
        assert tiny["memory_mb"] > 0
        back = request(process, {"cmd": "load_model", "model": "hpss"})
        assert back["cached"] is False
        switch = request(process, {"cmd": "load_model", "model": "tiny"})
        assert switch["cached"] is True and switch["elapsed"] <= 0.010
    finally:
        process.kill()


def test_memory_budget_evicts_least_recently_used(media: Path) -> None:
    process, _ = spawn(["--models-dir", str(media / "models"), "--memory-budget", "0.01"])
    try:
        tiny = request(process, {"cmd": "load_model", "model": "tiny"})
        assert tiny["status"] == "model_loaded"
        assert request(process, {"cmd": "load_model", "model": "center"})["cached"] is False
        status = request(process, {"cmd": "status"})
        assert [m["model"] for m in status["loaded_models"]] == ["center"]
        assert status["memory"]["budget_mb"] == 0.01
    finally:
        process.kill()
