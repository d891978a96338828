"""The seed's per-family worker executables, as console entry points.

Which families each one serves is declared in :mod:`dsu.archs.families`.

``dsu-demucs --worker --models-dir DIR [--device D]`` is ``dsu worker --arch demucs ...``,
and likewise for the other launchers: each serves only its families, so a desktop app can
keep one warm process per family exactly as it did with the seed. The weight-free built-in
models (``center``, ``hpss``) are not a family of any launcher but may be added with
``--arch`` (e.g. ``dsu-demucs --worker --arch demucs,center``) for smoke tests; families a
launcher does not own are refused. A family this build cannot run yet stays listed, and
loading one of its models answers ``model_not_found`` naming the family.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dsu.archs.families import BUILTIN_ARCHS, launcher_archs
from dsu.cli import worker


def launch(prog: str, argv: Sequence[str] | None = None) -> int:
    """Parse a launcher's command line and run its worker."""
    families = launcher_archs(prog)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"DSU worker for the {', '.join(families)} families.\n\n{worker.DESCRIPTION}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--worker", action="store_true", help="run as a persistent JSON-lines worker"
    )
    worker.configure(parser, arch_default=",".join(families))
    args = parser.parse_args(argv)
    if not args.worker:
        parser.print_usage(sys.stderr)
        print(
            f"{prog}: error: pass --worker to start the worker "
            "(to separate files one by one use `dsu separate`)",
            file=sys.stderr,
        )
        return 2
    allowed = frozenset(families)
    if args.arch is None:
        args.arch = [",".join(families)]
    return worker.run(args, allowed_archs=allowed | BUILTIN_ARCHS)


def demucs() -> None:
    sys.exit(launch("dsu-demucs"))


def bsroformer() -> None:
    sys.exit(launch("dsu-bsroformer"))


def audio_separator() -> None:
    sys.exit(launch("dsu-audio-separator"))


def apollo() -> None:
    sys.exit(launch("dsu-apollo"))
