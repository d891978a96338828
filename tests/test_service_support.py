"""Shared pieces of the service tests: a real ``dsu serve`` subprocess on 127.0.0.1, a real
HTTP server for audio URLs and webhooks, and reading returned audio. No tests live here."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# The queue backend every Server runs on: `pytest --service-queue celery` (conftest.py).
QUEUE = "local"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return x.T, sr


class Server:
    """``python -m dsu serve`` as a real subprocess on 127.0.0.1 with its own data dir.

    On the ``celery`` queue (``queue``, default :data:`QUEUE`) the server is the API plus
    a ``dsu celery-worker``, on a ``redis-server`` of its own in the data dir: killing it
    kills the API and the worker (a machine lost), and Redis outlives them; a Server
    started again on the same data dir and env finds Redis and its jobs where they were.
    """

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
        queue: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.queue = queue or QUEUE
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "DSU_WEBHOOK_SECRET": SECRET,
            "DSU_MODELS_DIR": str(data_dir / "models"),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "server.log"
        self.redis: Any = None
        self.worker: Any = None

    def _start_celery(self) -> None:
        """Redis (unless it runs already) and one worker, sharing the API's env and data."""
        from redis_support import CeleryWorker, RedisServer

        url = self.env.get("DSU_REDIS_URL")
        port = int(url.rsplit(":", 1)[1].split("/")[0]) if url else None
        self.redis = RedisServer(self.data_dir / "redis", port)
        if not self.redis.answers():
            self.redis.start()
        self.env.update({"DSU_QUEUE": "celery", "DSU_REDIS_URL": self.redis.url})
        self.worker = CeleryWorker(
            "w1", self.data_dir / "data", self.env, self.data_dir / "worker.log"
        ).start()

    def start(
        self,
        timeout: float = 90.0,
        ready: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
    ) -> Server:
        """Start it and wait until ``/health`` answers as ``ready`` says (default: 200)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.queue == "celery":
            self._start_celery()
        log = open(self.log, "ab")  # noqa: SIM115 - the child writes it until it exits
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dsu",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir / "data"),
                "--log-level",
                "info",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()[-4000:]}")
            try:
                if ready(httpx.get(f"{self.url}/health", timeout=2)):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server did not start:\n{self.log.read_text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (the API's, and on celery its worker's)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self.worker is not None:
            self.worker.kill()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.worker is not None:
            self.worker.stop()
        if self.redis is not None:
            self.redis.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kwargs)

    def wait_job(
        self,
        job_id: str,
        statuses: tuple[str, ...] = ("completed", "failed"),
        timeout: float = 120.0,
        predicate: Callable[[dict], bool] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = httpx.get(f"{self.url}/jobs/{job_id}", timeout=10, headers=headers)
            if r.status_code == 200:
                job = r.json()
                if job["status"] in statuses and (predicate is None or predicate(job)):
                    return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not reach {statuses}: {r.status_code} {r.text}")


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up early (the service closing a refused download) are normal."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Route = Callable[["BaseHTTPRequestHandler"], tuple[int, dict[str, str], bytes]]


@dataclass
class LocalHTTP:
    """A real threaded HTTP server on 127.0.0.1 serving ``routes`` and recording requests.

    A route is ``(status, headers, body)`` or a callable returning one; a list of them is
    served in turn (the last one repeats).
    """

    routes: dict[str, Any] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self
        self._cond = threading.Condition()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                with outer._cond:
                    outer.received.append(
                        Received(
                            self.command,
                            path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                        )
                    )
                    outer._cond.notify_all()
                route = outer.routes.get(path, (404, {}, b"not found"))
                if isinstance(route, list):
                    route = route.pop(0) if len(route) > 1 else route[0]
                status, headers, payload = route(self) if callable(route) else route
                if status == 0:  # a route that has sent its response itself
                    return
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_HEAD = _serve

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def wait_for(self, path: str, count: int = 1, timeout: float = 60.0) -> list[Received]:
        """Block until ``count`` requests to ``path`` arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [r for r in self.received if r.path == path]
                if len(hits) >= count:
                    return hits
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{count} request(s) to {path} not received: {hits}")
                self._cond.wait(remaining)

    def hits(self, path: str) -> list[Received]:
        with self._cond:
            return [r for r in self.received if r.path == path]
