"""``dsu``: dispatch to the subcommand modules.

Only the module of the subcommand being run is imported, and none of them imports torch
at import time, so ``dsu worker`` answers ``ready`` before heavy libraries load.

Exit status: 0 done, 1 some inputs failed (the subcommand says which), 2 a usage error
(nothing was done) or a missing optional package, 128 + N when signal N ended the run
(130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import re
import signal
import sys
from types import FrameType

from dsu import __version__
from dsu.errors import DSUError

SUBCOMMANDS = {
    "separate": "dsu.cli.separate",
    "models": "dsu.cli.models",
    "worker": "dsu.cli.worker",
    "serve": "dsu.cli.serve",
    "celery-worker": "dsu.cli.celery_worker",
    "eval": "dsu.cli.eval",
    "restore": "dsu.cli.restore",
    "presets": "dsu.cli.presets",
}

# The signals that end a run; SIGHUP does not exist on Windows.
END_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)

# Subcommands that shut down their own way on a signal (the worker finishes its protocol
# exchange, the service drains through uvicorn, a Celery worker through its warm
# shutdown) rather than by an exception in the middle.
_OWN_SHUTDOWN = frozenset({"worker", "serve", "celery-worker"})


class Interrupted(KeyboardInterrupt):
    """A signal ended the run. A KeyboardInterrupt, so that every cleanup written for
    Ctrl-C (temp files aborted, empty directories removed) runs for SIGTERM and SIGHUP too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    # Later signals are ignored so that they cannot cut the cleanup short.
    for sig in END_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def end_runs_on_signals() -> None:
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`Interrupted` in the main thread; a
    signal the caller chose to ignore (``nohup``, a background job) stays ignored."""
    for sig in END_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _raise_interrupted)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, or just ``only`` (faster start-up)."""
    parser = argparse.ArgumentParser(
        prog="dsu", description="DSU: music source separation with every open model family."
    )
    parser.add_argument("--version", action="version", version=f"dsu {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module).add_parser(subparsers)
    return parser


def install_hint(module: str | None) -> str | None:
    """What to install for a missing ``module``, from DSU's own requirements: ``pip install
    'dsu[service]'`` for a package of an extra, ``pip install --force-reinstall dsu`` for
    a core one; None when DSU does not require it (then its absence is a bug)."""
    if not module:
        return None
    try:
        requirements = importlib.metadata.requires("dsu") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    wanted = _normalize(module.partition(".")[0])
    extras = []
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        if name is None or wanted not in (n := _normalize(name[0]), n.removeprefix("python_")):
            continue
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        if extra is None:
            return "pip install --force-reinstall dsu"
        extras.append(extra[1])
    # The test extra lists everything; a user wants the extra that is about the feature.
    extras.sort(key=lambda e: e == "test")
    return f"pip install 'dsu[{extras[0]}]'" if extras else None


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def main(argv: list[str] | None = None) -> int:
    """Run ``dsu`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    only = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    try:
        parser = build_parser(only)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        if args.command not in _OWN_SHUTDOWN:
            end_runs_on_signals()
        return int(args.func(args) or 0)
    except DSUError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        name = "interrupted" if signum == signal.SIGINT else f"stopped by {exc}"
        print(name, file=sys.stderr)
        return 128 + signum
    except ModuleNotFoundError as exc:
        hint = install_hint(exc.name)
        if hint is None:
            raise
        command = f"dsu {only}" if only else "dsu"
        print(
            f"error: {command} needs the Python package {exc.name!r}, which is not "
            f"installed: {hint}",
            file=sys.stderr,
        )
        return 2
