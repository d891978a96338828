"""``dsu models list|pull|scan|verify``: manage a models directory (DESIGN §2).

Exit codes: 0 success; 1 a download or checksum failed, or ``verify`` found a problem;
2 a usage error (unknown model, invalid ``models.json``, refused overwrite).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from dsu.errors import BadRequest, ChecksumMismatch, DownloadError, DSUError
from dsu.registry.catalog import CATEGORIES

Handler = Callable[[argparse.Namespace], int]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``models`` and its actions; each sets ``args.func`` to its handler."""
    parser = subparsers.add_parser(
        "models",
        help="list, pull, scan and verify models",
        description="Manage a models directory: models.json, configs/, weights/.",
    )
    parser.set_defaults(func=functools.partial(_usage, parser))
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--models-dir",
        type=Path,
        help="models directory (default: DSU_MODELS_DIR, else ~/.cache/dsu/models)",
    )

    p = actions.add_parser(
        "list",
        parents=[common],
        help="models of the directory, built-ins, and catalog models to pull",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--category", choices=CATEGORIES, help="only models for this use (catalog category)"
    )
    p.add_argument(
        "--arch", metavar="ARCH", help="only models of this architecture (e.g. mel_band_roformer)"
    )
    p.add_argument("--stem", metavar="STEM", help="only models that output this stem (e.g. drums)")
    p.add_argument("--installed", action="store_true", help="only models in the models directory")
    p.set_defaults(func=cmd_list)

    p = actions.add_parser(
        "pull", parents=[common], help="download catalog models (checksummed, resumable)"
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="catalog model names")
    p.add_argument(
        "--mirror",
        metavar="DIR_OR_URL",
        help="fetch the files by name from this directory or base URL "
        "(default: DSU_MODELS_MIRROR, else the official URLs)",
    )
    p.add_argument(
        "--catalog", type=Path, metavar="FILE", help="an extra catalog JSON file to pull from"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pull)

    p = actions.add_parser(
        "scan",
        parents=[common],
        help="write DIR/models.json for a directory of checkpoints (Demucs, MSST, UVR)",
    )
    p.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="default: --models-dir")
    p.add_argument("--force", action="store_true", help="overwrite an existing models.json")
    p.set_defaults(func=cmd_scan)

    p = actions.add_parser(
        "verify", parents=[common], help="check that model files are present and intact"
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="models to check (default: all)")
    p.set_defaults(func=cmd_verify)
    return parser


def _guarded(handler: Handler) -> Handler:
    """Print user errors as one ``error:`` line; downloads and checksums exit 1, others 2."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (DownloadError, ChecksumMismatch) as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        except DSUError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2

    return run


def _usage(parser: argparse.ArgumentParser, _args: argparse.Namespace) -> int:
    parser.print_help(sys.stderr)
    return 2


@_guarded
def cmd_list(args: argparse.Namespace) -> int:
    from dsu.registry import Registry

    registry = Registry.open(args.models_dir)
    infos = registry.listing()
    if args.arch is not None:
        archs = sorted({info.arch for info in infos})
        if args.arch not in archs:
            raise BadRequest(
                f"--arch {args.arch!r}: no model of that architecture; choose from "
                f"{', '.join(archs)}"
            )
    stem = args.stem.lower() if args.stem else None
    infos = [
        info
        for info in infos
        if (args.category is None or info.category == args.category)
        and (args.arch is None or info.arch == args.arch)
        and (stem is None or stem in (s.lower() for s in info.stems))
        and (not args.installed or info.installed)
    ]
    if args.json:
        document = {
            "models_dir": str(registry.root),
            "default": registry.default,
            "count": len(infos),
            "models": [info.to_json() for info in infos],
        }
        print(json.dumps(document, indent=2))
        return 0
    rows = [("NAME", "ARCH", "CATEGORY", "STEMS", "STATUS", "SIZE", "LICENSE")]
    for info in infos:
        status = {"available": "available (pull)", "incomplete": "incomplete (verify)"}.get(
            info.status, info.status
        )
        if info.requires:
            status += f", needs dsu[{info.requires}]"
        name = f"{info.name} *" if info.default else info.name
        size = f"{info.size / 1e6:.0f} MB" if info.size else "-"
        rows.append(
            (
                name,
                info.arch,
                info.category or "-",
                ",".join(info.stems) or "-",
                status,
                size,
                info.license or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    installed = sum(info.installed for info in infos)
    print(
        f"\n{len(infos)} models, {installed} installed or built in; models directory: "
        f"{registry.root}   (* = default)"
    )
    return 0


@_guarded
def cmd_pull(args: argparse.Namespace) -> int:
    from dsu.registry import Catalog, builtin_catalog, default_models_dir, pull

    root = (args.models_dir or default_models_dir()).absolute()
    catalog = builtin_catalog()
    if args.catalog is not None:
        catalog = catalog.merged(Catalog.load(args.catalog))
    for name in args.names:
        bar = None if args.quiet else _PullProgress(name)
        try:
            entry = pull(name, root, mirror=args.mirror, progress=bar, catalog=catalog)
        finally:
            if bar is not None:
                bar.close()
        print(f"{entry.name}: installed in {root} ({len(entry.weights)} weight files)")
    return 0


@_guarded
def cmd_scan(args: argparse.Namespace) -> int:
    from dsu.registry import Registry, default_models_dir, scan_to_file

    folder = args.dir or args.models_dir or default_models_dir()
    target = scan_to_file(folder, force=args.force)
    names = Registry.open(folder).listing()
    found = [info for info in names if info.status in ("installed", "incomplete")]
    print(f"wrote {target}: {len(found)} models")
    for info in found:
        print(f"  {info.name:<24} {info.arch:<18} {','.join(info.stems)}")
    return 0


@_guarded
def cmd_verify(args: argparse.Namespace) -> int:
    from dsu.registry import default_models_dir, verify

    folder = args.models_dir or default_models_dir()
    results = verify(folder, args.names or None)
    if not results:
        print(f"nothing to verify in {folder}")
        return 0
    for result in results:
        if not result.ok:
            label = "FAILED"
        else:
            label = "ok" if result.checked else "ok (no checksum recorded)"
        line = f"{label:<26} {result.name:<24} {result.file}"
        print(f"{line}: {result.problem}" if result.problem else line)
    failed = sum(not r.ok for r in results)
    print(f"{len(results)} files, {failed} problems")
    return 1 if failed else 0


class _PullProgress:
    """Byte progress of a pull on stderr: a redrawn line on a terminal, else one line per
    finished file."""

    def __init__(self, name: str, stream: TextIO = sys.stderr) -> None:
        self.name = name
        self.stream = stream
        self._tty = stream.isatty()
        self._last = 0.0
        self._drawn = False

    def __call__(self, file_name: str, done: int, total: int | None) -> None:
        finished = total is not None and done >= total
        if self._tty:
            now = time.monotonic()
            if now - self._last < 0.1 and not finished:
                return
            self._last = now
            size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
            self.stream.write(f"\rpull {self.name}: {file_name} {size}   ")
            self._drawn = True
        elif finished:
            self.stream.write(f"pull {self.name}: {file_name} {done / 1e6:.1f} MB\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
