"""The worker process: a stdin reader, a FIFO of model work, one runner, one stdout.

Threads and ordering:

- The **reader** (a daemon thread) reads request lines. Requests that carry an ``id`` and
  need no model (``ping``, ``status``/``get_status``, ``list_models``, and any line that
  fails to parse but has a readable id) are answered at once, even during a separation.
  ``cancel`` is always answered at once (its target needs an id, so its client is
  id-aware).
- ``cancel`` is acknowledged (``cancel_requested``, with ``found``) before its target ends
  with ``cancelled``: a queued target at once, a running separation at its next check.
- Everything else goes to one FIFO run by the **runner** (the main thread), one request at
  a time: ``load_model``, ``separate``, ``unload_model``, ``exit``, and every request
  *without* an id, quick ones included. So a client that sends no ids gets its replies in
  request order, exactly as the seed's strictly sequential workers answered.
- stdout carries protocol lines only. At start the worker moves file descriptor 1 onto
  stderr, so any library's print, progress bar or warning (C code included) lands there,
  and writes protocol lines, under a lock, to a private duplicate of the real stdout.

Shutdown: ``exit`` answers ``exiting`` after the requests queued before it, then the
worker returns 0. At stdin EOF the reader stops; requests already queued still run (a
script may pipe its requests and close stdin) and the worker then returns 0. If stdout
is gone (the parent died), or on any of :data:`STOP_SIGNALS` (SIGTERM, SIGINT, SIGHUP,
SIGQUIT), the running request is cancelled (so its outputs' temporary files are removed),
queued ones are dropped, and the worker prints the seed's ``{"status": "shutdown"}`` line
(if stdout is still there) and returns 0 at its next cancel check, within one forward pass.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from dsu.errors import BadRequest, Cancelled, DSUError
from dsu.worker import protocol
from dsu.worker.commands import Commands
from dsu.worker.protocol import LineError, Request
from dsu.worker.settings import WorkerSettings

STOP_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
    if hasattr(signal, name)
)
"""Signals that end a worker gracefully; each would otherwise kill it mid-write (those
missing on Windows are left out)."""


class LineWriter:
    """Writes protocol lines to one file descriptor, one whole line at a time.

    After the first failed write (the reader of the pipe is gone) it drops every line and
    sets :attr:`broken`, which stops the worker.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self.broken = threading.Event()
        self.on_broken: Callable[[], None] | None = None

    def send(self, message: dict[str, Any]) -> bool:
        data = protocol.encode(message)
        with self._lock:
            if self.broken.is_set():
                return False
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:
                self.broken.set()
        if self.broken.is_set():
            if self.on_broken is not None:
                self.on_broken()
            return False
        return True


@dataclass(eq=False)
class Job:
    """One queued request; ``reply`` is set for a line whose answer is already known."""

    request: Request | None
    reply: dict[str, Any] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


class Worker:
    """One worker: call :meth:`serve` from the main thread.

    Args:
        settings: the worker's configuration.
        stdin: binary stream of request lines.
        out: where protocol lines go.
    """

    def __init__(self, settings: WorkerSettings, stdin: BinaryIO, out: LineWriter) -> None:
        self.settings = settings
        self._stdin = stdin
        self._out = out
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._running: Job | None = None
        self._input_closed = False
        self._stopping = False
        self.commands = Commands(settings, out.send, self._queue_state)
        out.on_broken = self.stop

    def serve(self) -> int:
        """Announce ``ready``, then serve until ``exit``, EOF or a dead parent. Returns 0."""
        self._out.send(self.commands.ready())
        threading.Thread(target=self.commands.warm_up, name="dsu-warm", daemon=True).start()
        threading.Thread(target=self._read_loop, name="dsu-reader", daemon=True).start()
        self._run_loop()
        if self._stopping:
            # The seed's last words when a signal (not `exit`) ends a worker.
            self._out.send({"status": protocol.SHUTDOWN, "reason": "signal_or_parent_died"})
        return 0

    def stop(self) -> None:
        """Cancel the running request, drop queued ones, end :meth:`serve` (any thread)."""
        with self._cond:
            self._stopping = True
            self._queue.clear()
            if self._running is not None:
                self._running.cancel.set()
            self._cond.notify_all()

    def install_signal_handlers(self) -> None:
        """Every signal of :data:`STOP_SIGNALS` stops the worker gracefully (main thread
        only)."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda *_: self.stop())

    # reader thread

    def _read_loop(self) -> None:
        try:
            while True:
                raw = self._read_line()
                if raw is None or not self._handle_line(raw):
                    break
        except Exception:
            traceback.print_exc(file=sys.stderr)
        finally:
            with self._cond:
                self._input_closed = True
                self._cond.notify_all()

    def _read_line(self) -> bytes | None:
        """The next line without its newline, None at EOF.

        A line over the size limit is skipped up to its newline and answered with an error
        here (in order, as it has no readable id); it reads as an empty line.
        """
        limit = protocol.MAX_LINE_BYTES
        raw = self._stdin.readline(limit + 1)
        if not raw:
            return None
        if len(raw) > limit and not raw.endswith(b"\n"):
            while True:
                rest = self._stdin.readline(limit)
                if not rest or rest.endswith(b"\n"):
                    break
            error = BadRequest(f"line longer than {limit} bytes")
            self._enqueue(Job(None, reply=protocol.error_reply(error)))
            return b""
        return raw.rstrip(b"\n")

    def _handle_line(self, raw: bytes) -> bool:
        """Answer or queue one line; False once no further line must be read (``exit``)."""
        line = raw.strip()
        if not line:
            return True
        try:
            request = protocol.parse_line(line)
        except LineError as exc:
            reply = protocol.error_reply(exc.error, exc.request_id)
            if exc.request_id is not None:
                self._out.send(reply)
            else:
                self._enqueue(Job(None, reply=reply))
            return True
        if request.cmd == "cancel":
            self._cancel(request)
        elif request.cmd in protocol.CONTROL_COMMANDS and request.id is not None:
            self._out.send(self._answer(request, Job(request)))
        else:
            self._enqueue(Job(request))
        return request.cmd != "exit"

    def _enqueue(self, job: Job) -> None:
        with self._cond:
            if not self._stopping:
                self._queue.append(job)
                self._cond.notify_all()

    def _cancel(self, request: Request) -> None:
        """Answer ``cancel``: its acknowledgement first, then the target's ``cancelled``."""
        target = request.fields.get("target")
        if target is None or isinstance(target, bool) or not isinstance(target, str | int):
            error = BadRequest("'cancel' needs the field 'target': the id of a request")
            self._out.send(protocol.error_reply(error, request.id))
            return
        with self._cond:
            dropped = [
                job for job in self._queue if job.request is not None and job.request.id == target
            ]
            for job in dropped:
                self._queue.remove(job)
            running = self._running
            signalled = (
                running is not None
                and running.request is not None
                and running.request.id == target
                and running.request.cmd == "separate"
            )
            # Sent before the running request learns of the cancel, so that its
            # `cancelled` reply cannot overtake the acknowledgement.
            found = bool(dropped) or signalled
            self._out.send(request.reply(protocol.CANCEL_REQUESTED, target=target, found=found))
            if signalled and running is not None:
                running.cancel.set()
        for job in dropped:
            assert job.request is not None
            self._out.send(self._cancelled(job.request, "cancelled before it started"))

    # runner (main thread)

    def _run_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._input_closed and not self._stopping:
                    self._cond.wait()
                if self._stopping or not self._queue:
                    return
                job = self._queue.popleft()
                self._running = job
            try:
                finished = self._run(job)
            finally:
                with self._cond:
                    self._running = None
            if finished:
                return

    def _run(self, job: Job) -> bool:
        """Run one job and send its reply; True when it was ``exit``."""
        if job.reply is not None:
            self._out.send(job.reply)
            return False
        request = job.request
        assert request is not None
        if request.cmd == "exit":
            self._out.send(request.reply(protocol.EXITING))
            return True
        self._out.send(self._answer(request, job))
        return False

    def _answer(self, request: Request, job: Job) -> dict[str, Any]:
        """The terminal reply of a request; any exception becomes an error reply."""
        try:
            return self.commands.handle(request, job.cancel)
        except Cancelled as exc:
            return self._cancelled(request, exc.message)
        except DSUError as exc:
            return protocol.error_reply(exc, request.id)
        except Exception as exc:
            code, _ = protocol.error_code_and_message(exc)
            if code == "internal":
                traceback.print_exc(file=sys.stderr)
            return protocol.error_reply(exc, request.id)

    @staticmethod
    def _cancelled(request: Request, message: str) -> dict[str, Any]:
        return request.reply(protocol.CANCELLED, code="cancelled", message=message)

    def _queue_state(self) -> dict[str, Any]:
        """Queue length and the model work in progress (a queued quick command, such as
        the ``status`` asking, is not reported as running)."""
        with self._cond:
            job = self._running
            request = job.request if job is not None else None
            busy = request is not None and request.cmd in protocol.QUEUED_COMMANDS
            return {
                "queue_length": len(self._queue),
                "running": {"cmd": request.cmd, "id": request.id} if busy and request else None,
            }


def redirect_stdout() -> int:
    """Point fd 1 (and ``sys.stdout``) at stderr; return a private fd of the real stdout."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol_fd


def run_worker(settings: WorkerSettings) -> int:
    """Serve the protocol on this process's stdin and stdout; the exit status."""
    writer = LineWriter(redirect_stdout())
    worker = Worker(settings, sys.stdin.buffer, writer)
    with contextlib.suppress(ValueError):
        worker.install_signal_handlers()
    return worker.serve()
