"""A real ``redis-server`` and real ``dsu celery-worker`` processes for the Celery backend's
tests. No tests live here."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> str:
    """The ``redis-server`` binary; ``make install-test`` installs it (Debian's package)."""
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail("redis-server is not installed: run `make install-test` (apt redis-server)")
    return found


class RedisServer:
    """``redis-server`` on 127.0.0.1 with its data (AOF, fsync on every write) in ``directory``.

    Started again on the same port and directory, it reloads everything it had written.
    """

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - the child writes it
        self.proc = subprocess.Popen(
            [
                redis_binary(),
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.directory),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--protected-mode", "yes",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 20
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.directory / "redis.log").read_text()[-2000:])
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL: only what reached the append-only file survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class CeleryWorker:
    """``python -m dsu celery-worker`` as a real subprocess."""

    def __init__(self, name: str, data_dir: Path, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.data_dir = data_dir
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CeleryWorker:
        handle = open(self.log, "ab")  # noqa: SIM115 - the child writes it until it exits
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "dsu", "celery-worker",
                "--name", self.name,
                "--data-dir", str(self.data_dir),
                "--log-level", "info",
            ],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )  # fmt: skip
        handle.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs; its job's lease is left to run out."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
