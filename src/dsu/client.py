"""Drive a ``dsu worker`` process from Python.

:class:`WorkerClient` spawns ``python -m dsu worker``, waits for ``ready``, and sends
requests with automatic ids, so several can be in flight while one thread waits::

    with WorkerClient(models_dir="models") as worker:
        worker.request("load_model", model="htdemucs")
        reply = worker.request("separate", input="song.wav", output="out",
                               on_progress=lambda event: print(event["progress"]))
        print(reply["stems"])

Errors come back as :class:`WorkerError` with the protocol's stable ``code``. If the
worker dies, pending requests fail with code ``worker_exited`` and the next request starts
a fresh process. :class:`WorkerProcess` is the raw layer: one process, lines in and out.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dsu.worker.protocol import EVENT_STATUSES

ProgressHandler = Callable[[dict[str, Any]], None]


class WorkerError(Exception):
    """A request ended with ``{"status": "error"}`` (or the worker could not answer).

    Attributes:
        code: the protocol's stable code (``bad_request``, ``model_not_found``, ...), or a
            client-side one: ``worker_exited``, ``timeout``.
        message: the worker's message.
        reply: the whole reply line, when there was one.
    """

    def __init__(self, code: str, message: str, reply: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reply = reply


class WorkerExited(WorkerError):
    """The worker process ended before answering."""

    def __init__(self, message: str) -> None:
        super().__init__("worker_exited", message)


class WorkerTimeout(WorkerError, TimeoutError):
    """No reply within the timeout (the request is cancelled on the worker)."""

    def __init__(self, message: str) -> None:
        super().__init__("timeout", message)


def worker_command(args: Sequence[str] = (), python: str | None = None) -> list[str]:
    """The command line that starts a worker with this interpreter (or ``python``)."""
    return [python or sys.executable, "-m", "dsu", "worker", *args]


class WorkerProcess:
    """One worker process: write request lines, read reply lines.

    stderr is drained by a thread into :meth:`stderr_text` (last 500 lines), so a chatty
    library never blocks the worker on a full pipe.

    Args:
        command: the argv to spawn.
        env: extra environment variables on top of this process's.
        cwd: working directory of the worker.
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        full_env = {**os.environ, **(env or {})}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            bufsize=0,
        )
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=500)
        self._write_lock = threading.Lock()
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line.decode("utf-8", "replace").rstrip("\n"))

    def stderr_text(self) -> str:
        return "\n".join(self._stderr)

    def send_line(self, line: bytes | str) -> None:
        """Write one raw line (a newline is added)."""
        data = line.encode("utf-8") if isinstance(line, str) else line
        assert self.proc.stdin is not None
        with self._write_lock:
            try:
                self.proc.stdin.write(data + b"\n")
            except (BrokenPipeError, ValueError, OSError) as exc:
                raise WorkerExited(f"cannot write to the worker: {exc}") from None

    def send(self, message: Mapping[str, Any]) -> None:
        self.send_line(json.dumps(message))

    def read_line(self, timeout: float | None = None) -> bytes | None:
        """The next raw stdout line (with its newline), None at EOF.

        Raises:
            WorkerTimeout: nothing arrived within ``timeout`` seconds.
        """
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise WorkerTimeout(f"no line from the worker within {timeout} s") from None

    def read(self, timeout: float | None = None) -> dict[str, Any]:
        """The next stdout line, parsed.

        Raises:
            WorkerExited: stdout closed.
            WorkerTimeout: nothing arrived in time.
            ValueError: the line is not a JSON object.
        """
        line = self.read_line(timeout)
        if line is None:
            self._lines.put(None)
            raise WorkerExited(f"the worker closed its stdout (exit code {self.proc.poll()})")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError(f"not a JSON object: {line!r}")
        return message

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        with self._write_lock, contextlib.suppress(OSError):
            self.proc.stdin.close()

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()


class Pending:
    """A request in flight; :meth:`result` waits for its terminal reply."""

    def __init__(
        self, request_id: str, on_progress: ProgressHandler | None, process: WorkerProcess
    ) -> None:
        self.id = request_id
        self.on_progress = on_progress
        self.process = process
        self._done = threading.Event()
        self._reply: dict[str, Any] | None = None
        self._error: WorkerError | None = None

    def _finish(self, reply: dict[str, Any] | None, error: WorkerError | None = None) -> None:
        self._reply, self._error = reply, error
        self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """The reply; raises :class:`WorkerError` for an error or ``cancelled`` reply (code
        ``cancelled``) or a dead worker."""
        if not self._done.wait(timeout):
            raise WorkerTimeout(f"request {self.id} got no reply within {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._reply is not None
        if self._reply.get("status") in ("error", "cancelled"):
            raise WorkerError(
                str(self._reply.get("code", "internal")),
                str(self._reply.get("message", "")),
                self._reply,
            )
        return self._reply


class WorkerClient:
    """A worker process with request/reply matching, progress, cancel and restart.

    Args:
        args: extra command-line arguments for ``dsu worker``.
        models_dir: passed as ``--models-dir``.
        device: passed as ``--device``.
        env: extra environment variables for the worker.
        command: the full argv to spawn instead of ``python -m dsu worker`` (for example
            ``["dsu-demucs", "--worker"]``); ``args`` are appended.
        start_timeout: seconds to wait for ``ready``.
    """

    def __init__(
        self,
        args: Sequence[str] | None = None,
        *,
        models_dir: str | Path | None = None,
        device: str | None = None,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        extra = list(args or [])
        if models_dir is not None:
            extra += ["--models-dir", str(models_dir)]
        if device is not None:
            extra += ["--device", device]
        self.command = [*command, *extra] if command is not None else worker_command(extra)
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.ready: dict[str, Any] | None = None
        self.process: WorkerProcess | None = None
        self.restarts = -1
        self._ids = itertools.count(1)
        self._pending: dict[str, Pending] = {}
        self._lock = threading.RLock()

    def __enter__(self) -> WorkerClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> dict[str, Any]:
        """Spawn the worker if it is not running; its ``ready`` line."""
        with self._lock:
            if self.process is not None and self.process.alive() and self.ready is not None:
                return self.ready
            process = WorkerProcess(self.command, env=self.env)
            try:
                ready = process.read(timeout=self.start_timeout)
            except WorkerError:
                process.kill()
                raise WorkerExited(
                    f"worker did not start: {process.stderr_text()[-2000:]}"
                ) from None
            if ready.get("status") != "ready":
                process.kill()
                raise WorkerError("internal", f"expected a ready line, got {ready}", ready)
            self.process, self.ready = process, ready
            self.restarts += 1
            threading.Thread(target=self._dispatch, args=(process,), daemon=True).start()
            return ready

    def _dispatch(self, process: WorkerProcess) -> None:
        """Route the worker's lines to their pending requests until it exits."""
        while True:
            try:
                message = process.read()
            except WorkerExited:
                break
            except ValueError:
                continue
            pending = self._pending.get(str(message.get("id")))
            if pending is None:
                continue
            if message.get("status") in EVENT_STATUSES:
                if pending.on_progress is not None:
                    pending.on_progress(message)
                continue
            with self._lock:
                self._pending.pop(pending.id, None)
            pending._finish(message)
        code = process.proc.wait()
        with self._lock:
            orphans = [p for p in self._pending.values() if p.process is process]
            for pending in orphans:
                del self._pending[pending.id]
        for pending in orphans:
            pending._finish(None, WorkerExited(f"the worker exited (code {code}) before answering"))

    def submit(
        self, cmd: str, *, on_progress: ProgressHandler | None = None, **fields: Any
    ) -> Pending:
        """Send a request without waiting; restarts the worker first if it died."""
        with self._lock:
            self.start()
            process = self.process
            assert process is not None
            pending = Pending(f"py-{next(self._ids)}", on_progress, process)
            self._pending[pending.id] = pending
        try:
            process.send({"cmd": cmd, **fields, "id": pending.id})
        except WorkerExited as exc:
            with self._lock:
                self._pending.pop(pending.id, None)
            pending._finish(None, exc)
        return pending

    def request(
        self,
        cmd: str,
        *,
        timeout: float | None = None,
        on_progress: ProgressHandler | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Send a request and wait for its reply.

        Raises:
            WorkerError: an error reply (``code`` as in the protocol), or the worker died.
            WorkerTimeout: no reply within ``timeout``; the request is cancelled.
        """
        pending = self.submit(cmd, on_progress=on_progress, **fields)
        try:
            return pending.result(timeout)
        except WorkerTimeout:
            if not pending.done():
                self.cancel(pending.id, wait=False)
            raise

    def cancel(self, request_id: str, *, wait: bool = True) -> dict[str, Any] | None:
        """Ask the worker to cancel a request; the acknowledgement (when ``wait``)."""
        pending = self.submit("cancel", target=request_id)
        return pending.result(30) if wait else None

    def close(self, timeout: float = 10.0) -> int | None:
        """Send ``exit``, wait for the process, kill it if it lingers; its exit code."""
        with self._lock:
            process, self.process, self.ready = self.process, None, None
        if process is None:
            return None
        if process.alive():
            try:
                process.send({"cmd": "exit", "id": f"py-{next(self._ids)}"})
                process.close_stdin()
                return process.wait(timeout)
            except (WorkerError, subprocess.TimeoutExpired):
                pass
        process.kill()
        return process.proc.returncode
