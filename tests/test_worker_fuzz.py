"""Fuzz the worker with thousands of random and malformed lines.

Properties: every non-blank line gets exactly one terminal reply, every stdout line is a
JSON object, and the worker never dies. Lines are sent in batches; after each batch a
queued sentinel request (``unload_model`` with an id) is answered only after every earlier
line, so the replies counted before it belong to that batch.
"""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsu.client import WorkerProcess
from helpers import CENTRED, write_noise
from test_worker_support import spawn

COMMANDS = [
    "ping",
    "status",
    "get_status",
    "list_models",
    "load_model",
    "unload_model",
    "separate",
    "cancel",
    "",
    "PING",
    "shutdown",
]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=4,
)
ids = st.none() | st.integers(-5, 10**6) | st.text(string.ascii_letters, max_size=6) | json_values


def _requests(paths: list[str]) -> st.SearchStrategy[bytes]:
    fields = {
        "id": ids,
        "model": st.sampled_from(["center", "hpss", "nope", ""]) | json_values,
        "input": st.sampled_from(paths) | json_values,
        "output": st.sampled_from(paths) | json_values,
        "target": ids,
        "stems": st.lists(st.sampled_from(["vocals", "drums", ""]), max_size=3) | json_values,
        "two_stems": st.sampled_from(["vocals", "x"]) | json_values,
        "format": st.sampled_from(["wav", "flac", "mp3", "exe"]) | json_values,
        "overlap": st.floats(allow_nan=True) | json_values,
        "shifts": st.integers(-3, 3) | json_values,
        "batch_size": st.integers(-1, 4) | json_values,
    }
    request = st.fixed_dictionaries(
        {"cmd": st.sampled_from(COMMANDS) | json_values},
        optional=fields,
    )
    return request.map(lambda r: json.dumps(r).encode())


def _separation(paths: list[str]) -> st.SearchStrategy[bytes]:
    """A well-formed separation, so real work interleaves with the junk."""
    separation = st.fixed_dictionaries(
        {
            "cmd": st.just("separate"),
            "input": st.just(paths[0]),
            "output": st.just(paths[1]),
            "model": st.sampled_from(["center", "hpss"]),
        },
        optional={"id": ids, "two_stems": st.sampled_from(["vocals", "harmonic"])},
    )
    return separation.map(lambda r: json.dumps(r).encode())


def _lines(paths: list[str]) -> st.SearchStrategy[bytes]:
    raw = st.binary(max_size=120)
    text = st.text(max_size=120).map(lambda t: t.encode("utf-8", "surrogatepass"))
    values = json_values.map(lambda v: json.dumps(v).encode())
    requests = _requests(paths)
    truncated = st.tuples(requests, st.integers(0, 60)).map(lambda p: p[0][: p[1]])
    line = st.one_of(requests, requests, truncated, values, text, raw)
    # One request per line; `exit` would end the worker (it has its own tests).
    return line.map(lambda b: b.replace(b"\n", b" ")).filter(lambda b: b"exit" not in b)


def _terminal_replies(worker: WorkerProcess, sentinel: str) -> list[dict[str, Any]]:
    replies = []
    while True:
        message = worker.read(timeout=120)  # raises if a stdout line is not JSON
        assert isinstance(message, dict) and isinstance(message.get("status"), str), message
        if message.get("id") == sentinel:
            return replies
        if message["status"] != "progress":
            replies.append(message)


def test_random_lines_each_get_one_reply(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    audio = write_noise(root / "tiny.wav", 0.2, **CENTRED)
    paths = [str(audio), str(root / "out"), str(root / "missing.wav"), "/etc/hostname", ""]
    worker, _ = spawn(["--models-dir", str(root / "models"), "--allowed-root", str(root)])
    sent = {"lines": 0, "batches": 0}

    # About one batch in five carries a real separation, at a random place.
    extra = st.one_of(*[st.none()] * 4, st.tuples(_separation(paths), st.integers(0, 60)))

    @settings(
        max_examples=50,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(_lines(paths), min_size=40, max_size=60), extra)
    def batch(lines: list[bytes], separation: tuple[bytes, int] | None) -> None:
        if separation is not None:
            lines = [*lines]
            lines.insert(separation[1], separation[0])
        sentinel = f"sentinel-{sent['batches']}"
        sent["batches"] += 1
        for line in lines:
            worker.send_line(line)
        worker.send({"cmd": "unload_model", "model": "__sentinel__", "id": sentinel})
        replies = _terminal_replies(worker, sentinel)
        expected = sum(1 for line in lines if line.strip())
        sent["lines"] += len(lines)
        assert len(replies) == expected, (lines, replies)
        for reply in replies:
            if reply["status"] == "error":
                assert reply["code"] in {
                    "bad_request",
                    "unknown_command",
                    "model_not_found",
                    "bad_audio",
                    "io_error",
                    "cancelled",
                }, reply
        assert worker.alive()

    try:
        batch()
        assert sent["lines"] >= 2000, sent
        worker.send({"cmd": "ping", "id": "still-here"})
        assert worker.read(timeout=30)["status"] == "pong"
        assert worker.alive()
    finally:
        worker.kill()
