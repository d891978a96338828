"""``dsu.client.WorkerClient`` against real worker processes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dsu.client import WorkerClient, WorkerError, WorkerExited, WorkerTimeout
from helpers import CENTRED, write_noise
from test_worker_support import LONG_SECONDS, LONG_WORK


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("client")
    write_noise(root / "short.wav", 1.0, **CENTRED)
    write_noise(root / "long.wav", LONG_SECONDS, seed=3, **CENTRED)
    (root / "models").mkdir()
    return root


@pytest.fixture(scope="module")
def client(media: Path):
    with WorkerClient(models_dir=media / "models", device="cpu") as worker:
        yield worker


def test_ready_and_quick_requests(client: WorkerClient) -> None:
    assert client.ready is not None and client.ready["status"] == "ready"
    assert client.ready["device"] == "cpu"
    pong = client.request("ping")
    assert pong["status"] == "pong" and pong["id"].startswith("py-")
    assert "center" in client.request("list_models")["models"]


def test_separate_with_progress(client: WorkerClient, media: Path) -> None:
    events = []
    reply = client.request(
        "separate",
        input=str(media / "short.wav"),
        output=str(media / "out"),
        model="center",
        on_progress=events.append,
    )
    assert reply["status"] == "done"
    assert sorted(reply["stems"]) == ["instrumental", "vocals"]
    assert all(Path(p).is_file() for p in reply["stems"].values())
    assert events and all(e["status"] == "progress" and e["id"] == reply["id"] for e in events)


def test_error_reply_raises_typed_error(client: WorkerClient) -> None:
    with pytest.raises(WorkerError) as caught:
        client.request("load_model", model="no-such-model")
    assert caught.value.code == "model_not_found"
    assert caught.value.reply is not None and caught.value.reply["status"] == "error"
    with pytest.raises(WorkerError) as caught:
        client.request("frobnicate")
    assert caught.value.code == "unknown_command"


def test_cancel_from_another_thread(client: WorkerClient, media: Path) -> None:
    started = threading.Event()
    pending = client.submit(
        "separate",
        input=str(media / "long.wav"),
        output=str(media / "cancelled"),
        **LONG_WORK,
        on_progress=lambda event: started.set(),
    )
    assert started.wait(60)
    ack = client.cancel(pending.id)
    assert ack is not None and ack["found"] is True
    with pytest.raises(WorkerError) as caught:
        pending.result(60)
    assert caught.value.code == "cancelled"
    assert not (media / "cancelled").exists() or not any((media / "cancelled").iterdir())
    assert client.request("ping")["status"] == "pong"


def test_timeout_cancels_the_request(client: WorkerClient, media: Path) -> None:
    with pytest.raises(WorkerTimeout):
        client.request(
            "separate",
            input=str(media / "long.wav"),
            output=str(media / "timed-out"),
            **LONG_WORK,
            timeout=1.0,
        )
    deadline = time.monotonic() + 30
    while client.request("status")["running"] is not None:
        assert time.monotonic() < deadline, "the timed-out request should have been cancelled"
        time.sleep(0.1)
    assert client.request("ping")["status"] == "pong"


def test_restart_after_a_crash(media: Path) -> None:
    with WorkerClient(models_dir=media / "models") as worker:
        first_pid = worker.process.pid if worker.process else None
        started = threading.Event()
        pending = worker.submit(
            "separate",
            input=str(media / "long.wav"),
            output=str(media / "crash"),
            **LONG_WORK,
            on_progress=lambda event: started.set(),
        )
        assert started.wait(60)
        assert worker.process is not None
        worker.process.proc.kill()
        with pytest.raises(WorkerExited):
            pending.result(30)
        pong = worker.request("ping")
        assert pong["status"] == "pong"
        assert worker.process is not None and worker.process.pid != first_pid
        assert worker.restarts == 1


def test_close_ends_the_process_cleanly(media: Path) -> None:
    worker = WorkerClient(models_dir=media / "models")
    worker.start()
    process = worker.process
    assert process is not None
    assert worker.close() == 0
    assert not process.alive()
    assert worker.close() is None


def test_bad_command_line_fails_to_start(media: Path) -> None:
    worker = WorkerClient(["--max-loaded-models", "0"], models_dir=media / "models")
    with pytest.raises(WorkerExited) as caught:
        worker.start()
    assert "max-loaded-models" in caught.value.message
