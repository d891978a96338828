"""``make size``: the shared runtime's footprint against one bundle per family.

Builds one bundle per family with the same spec and trims (``DSU_BUNDLE_FAMILY=<id>``,
into ``dist/families/<id>/dsu``), then prints the shared bundle's size on disk and as a
compressed archive, each family bundle's size, their sum and the saving, and writes
them to ``dist/size.json``. Exits 1 when the shared bundle misses the acceptance bounds
(at most :data:`MAX_SHARED` bytes, at least :data:`MIN_SAVING` smaller than the sum).

Usage: ``python packaging/size.py [--no-build]`` after ``make runtime``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from bundle_plan import ROOT, bundle_families, family_id

SPEC = ROOT / "packaging" / "dsu.spec"
DIST = ROOT / "dist"
WORK = ROOT / "build" / "runtime"
MAX_SHARED = 1_500_000_000
MIN_SAVING = 0.75


def build_family(family: str) -> Path:
    """Build one family's bundle; returns its folder."""
    dist = DIST / "families" / family
    command = [
        sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
        "--distpath", str(dist), "--workpath", str(WORK / f"work-{family}"), str(SPEC),
    ]  # fmt: skip
    env = {**os.environ, "DSU_BUNDLE_FAMILY": family}
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return dist / "dsu"


def disk_size(folder: Path) -> int:
    """Bytes of every file under ``folder`` (links not followed)."""
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def archive_size(folder: Path) -> int:
    """Bytes of ``folder`` as a gzip-compressed tar (what an installer would carry)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dsu.tar.gz"
        with tarfile.open(path, "w:gz", compresslevel=6) as archive:
            archive.add(folder, arcname=folder.name)
        return path.stat().st_size


def gb(size: int) -> str:
    return f"{size / 1e9:6.2f} GB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument(
        "--no-build", action="store_true", help="measure the family bundles already built"
    )
    args = parser.parse_args(argv)
    shared = DIST / "dsu"
    if not shared.is_dir():
        raise SystemExit("no dist/dsu: run `make runtime` first")
    families = {}
    for family in map(family_id, bundle_families()):
        folder = DIST / "families" / family / "dsu"
        if not args.no_build:
            print(f"building the {family} bundle ...", file=sys.stderr, flush=True)
            folder = build_family(family)
        families[family] = disk_size(folder)
    report = {
        "shared_disk": disk_size(shared),
        "shared_archive": archive_size(shared),
        "families": families,
        "families_sum": sum(families.values()),
    }
    report["saving"] = 1 - report["shared_disk"] / report["families_sum"]
    (DIST / "size.json").write_text(json.dumps(report, indent=2) + "\n")

    print(f"shared runtime dist/dsu   {gb(report['shared_disk'])} on disk")
    print(f"  as .tar.gz              {gb(report['shared_archive'])}")
    for family, size in families.items():
        print(f"family bundle {family:<11} {gb(size)}")
    print(f"sum of {len(families)} family bundles {gb(report['families_sum'])}")
    print(f"saving                    {report['saving']:6.1%}")
    ok = report["shared_disk"] <= MAX_SHARED and report["saving"] >= MIN_SAVING
    if not ok:
        print(
            f"FAIL: want at most {gb(MAX_SHARED).strip()} and a saving of at least "
            f"{MIN_SAVING:.0%}",
            file=sys.stderr,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
