"""The data dir of one server: checked writable and locked before the server starts.

Exactly one server process may use a data dir (its in-process worker owns the queue).
``dsu serve`` claims the dir before uvicorn starts, so a read-only dir or one held by a
running server ends the command with a message (exit 2) rather than a traceback from the
application's start-up.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO

from dsu.errors import DSUError

LOCK_NAME = "server.lock"


class DataDirError(DSUError):
    """The data dir cannot be created or written."""

    code = "bad_request"


class DataDirBusy(DSUError):
    """Another server process holds the data dir."""

    code = "bad_request"


class DataDirLock:
    """An exclusive lock on ``<data_dir>/server.lock``, held until :meth:`release`.

    The kernel drops it when the process dies, however it dies, so a restarted server
    gets it back at once.
    """

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path = path
        self._handle: IO[str] | None = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def claim_data_dir(data_dir: Path, exclusive: bool = True) -> DataDirLock:
    """Create ``data_dir`` if needed, check that it is writable, and lock it.

    ``exclusive`` False checks without locking: the ``celery`` backend's data dir is
    shared by its API processes and workers.

    Raises:
        DataDirError: it cannot be created or written (read-only, no permission).
        DataDirBusy: another running server holds it.
    """
    where = "the data dir (--data-dir or DSU_DATA_DIR)"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        # access() can say yes where the filesystem is mounted read-only: write for real.
        with tempfile.TemporaryFile(dir=data_dir):
            pass
        handle = open(data_dir / LOCK_NAME, "a+")  # noqa: SIM115 - held open on purpose
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DataDirError(
            f"cannot write {where} {data_dir}: {reason}; point it at a directory this "
            "user can write"
        ) from None
    if not exclusive:
        return DataDirLock(data_dir, handle)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one server per data dir by convention
        return DataDirLock(data_dir, handle)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        pid = f" (pid {holder})" if holder.isdigit() else ""
        raise DataDirBusy(
            f"another dsu serve{pid} is using {where} {data_dir}; stop it, or give each "
            "server its own data dir"
        ) from None
    # Whoever finds the dir busy can say which process holds it.
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return DataDirLock(data_dir, handle)
