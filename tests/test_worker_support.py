"""Helpers shared by the worker tests: spawning real workers and talking to them.

Holds no tests itself; the ``test_worker*`` modules import it (pytest puts ``tests/`` on
``sys.path``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsu.client import WorkerProcess, worker_command

REPLY_TIMEOUT = 120.0

RUNTIME = os.environ.get("DSU_RUNTIME")
"""A frozen runtime folder (``make test-dist`` sets it to ``dist/dsu``): the worker tests
then drive its launchers instead of this interpreter's."""


def worker_argv(args: Sequence[str] = ()) -> list[str]:
    """The command that starts ``dsu worker``: the frozen runtime's under ``DSU_RUNTIME``."""
    if RUNTIME:
        return [str(Path(RUNTIME) / "dsu"), "worker", *args]
    return worker_command(args)


def launcher_path(name: str) -> Path:
    """A launcher (``dsu-demucs``, ...): the frozen runtime's, else this environment's."""
    return Path(RUNTIME or Path(sys.executable).parent) / name


LONG_SECONDS = 120.0
LONG_WORK = {"model": "hpss", "shifts": 8}
"""Request fields that make a separation of a ``LONG_SECONDS`` input take a long time
(tens of seconds on 2 cores), for tests that act while it runs and then cancel it."""


def spawn(
    args: Sequence[str] = (), command: Sequence[str] | None = None, **kwargs: Any
) -> tuple[WorkerProcess, dict[str, Any]]:
    """Start a real worker process; returns it and its ready line."""
    process = WorkerProcess(command or worker_argv(args), **kwargs)
    ready = process.read(timeout=60)
    assert ready["status"] == "ready", ready
    return process, ready


def read_reply(
    process: WorkerProcess, timeout: float = REPLY_TIMEOUT
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read lines until a terminal reply; returns it and the progress events before it."""
    events = []
    deadline = time.monotonic() + timeout
    while True:
        message = process.read(timeout=max(deadline - time.monotonic(), 0.01))
        if message.get("status") == "progress":
            events.append(message)
            continue
        return message, events


def request(process: WorkerProcess, message: dict[str, Any], timeout: float = REPLY_TIMEOUT):
    """Send one request and return its terminal reply (progress events skipped)."""
    process.send(message)
    reply, _ = read_reply(process, timeout)
    return reply


def write_models_json(root: Path, models: dict[str, Any], default: str | None = None) -> Path:
    """A models directory with ``models.json`` (DESIGN §2)."""
    root.mkdir(parents=True, exist_ok=True)
    document = {"version": 1, "default": default, "models": models}
    (root / "models.json").write_text(json.dumps(document), encoding="utf-8")
    return root
