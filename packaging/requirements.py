"""Write ``requirements/<platform>.txt``: DSU's runtime pinned for each platform build.

Usage: ``python packaging/requirements.py --torch torch==2.13.0`` (``make requirements``),
with ``uv`` installed (the ``dev`` extra). Each file pins ``pyproject.toml``'s
dependencies and the runtime extras (:data:`EXTRAS`) for one platform, names the index
its torch wheel comes from, and records in its header the digest of the inputs it was
resolved from, so a test can tell a stale file without the network.

PyPI's torch is the CUDA build on Linux and the MPS build on Apple silicon. The CPU build
lives on the PyTorch index, and Intel Macs have no torch wheel this recent at all; for
those two the resolver is given a metadata-only stand-in wheel carrying the dependency
list of the torch this interpreter runs (the CPU build the Makefile installs).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "requirements"
PYTHON = "3.11"
EXTRAS: tuple[str, ...] = ("quantized", "onnx", "service")
"""The extras of the runtime (CLI, worker, service, every family); ``test`` and
``celery`` are installed on top where wanted."""

PYPI = "https://pypi.org/simple"


@dataclass(frozen=True)
class Platform:
    """One platform build.

    Attributes:
        name: the file's name, ``requirements/<name>.txt``.
        summary: who installs it.
        target: uv's ``--python-platform``.
        indexes: pip index options, first line first.
        torch_local: a local version for the torch stand-in (``cpu``), or None for
            PyPI's own torch.
        stand_in: resolve against the stand-in torch wheel.
        emit_torch: whether the file pins torch (False: torch is installed separately,
            and the pin overrides every package's own torch range).
        macos: the minimum macOS the wheels must support.
    """

    name: str
    summary: str
    target: str
    indexes: tuple[str, ...]
    torch_local: str | None = None
    stand_in: bool = False
    emit_torch: bool = True
    macos: str | None = None


PLATFORMS: tuple[Platform, ...] = (
    Platform(
        "cpu",
        "Linux x86-64 and Windows without a GPU (the bundle's build)",
        "x86_64-manylinux_2_28",
        ("--index-url https://download.pytorch.org/whl/cpu", f"--extra-index-url {PYPI}"),
        torch_local="cpu",
        stand_in=True,
    ),
    Platform(
        "cuda",
        "Linux x86-64 with an NVIDIA GPU (PyPI's torch is the CUDA build); on Windows "
        "add the PyTorch CUDA index of the same CUDA version",
        "x86_64-manylinux_2_28",
        (f"--index-url {PYPI}",),
    ),
    Platform(
        "mac-mps",
        "macOS 14+ on Apple silicon (Metal, --device mps)",
        "aarch64-apple-darwin",
        (f"--index-url {PYPI}",),
        macos="14.0",
    ),
    Platform(
        "mac-intel",
        "macOS on Intel: PyTorch's last Intel-Mac wheel is 2.2 (demucs caps torch below "
        "2.3 there); install a recent torch first (e.g. conda-forge's pytorch), then "
        "`pip install --no-deps -r` this file",
        "x86_64-apple-darwin",
        (f"--index-url {PYPI}",),
        stand_in=True,
        emit_torch=False,
        macos="13.0",
    ),
)


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]


def inputs(platform: Platform, torch: str) -> dict:
    """Everything a platform's file is resolved from."""
    project = pyproject()
    extras = project["optional-dependencies"]
    return {
        "dependencies": project["dependencies"],
        "extras": {name: extras[name] for name in EXTRAS},
        "torch": torch,
        "python": PYTHON,
        "platform": asdict(platform),
    }


def inputs_digest(platform: Platform, torch: str) -> str:
    """The sha256 a platform's header records."""
    text = json.dumps(inputs(platform, torch), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def header(platform: Platform, torch: str) -> list[str]:
    summary = textwrap.wrap(f"DSU runtime, {platform.name}: {platform.summary}.", 86)
    return [
        *(f"# {line}" for line in summary),
        "# Generated from pyproject.toml by `make requirements` (packaging/requirements.py);",
        f"# extras {','.join(EXTRAS)}, Python {PYTHON}, {torch}. Do not edit by hand.",
        f"# inputs-sha256: {inputs_digest(platform, torch)}",
        *platform.indexes,
    ]


def write_stand_in(folder: Path, version: str) -> None:
    """A wheel with torch's metadata and no code, for the resolver only."""
    requires = importlib.metadata.requires("torch") or []
    dist_info = f"torch-{version}.dist-info"
    metadata = "\n".join(
        ["Metadata-Version: 2.1", "Name: torch", f"Version: {version}"]
        + [f"Requires-Dist: {r}" for r in requires]
    )
    wheel = "Wheel-Version: 1.0\nGenerator: dsu\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    with zipfile.ZipFile(folder / f"torch-{version}-py3-none-any.whl", "w") as archive:
        archive.writestr(f"{dist_info}/METADATA", metadata + "\n")
        archive.writestr(f"{dist_info}/WHEEL", wheel)
        archive.writestr(f"{dist_info}/RECORD", "")


def compile_platform(platform: Platform, torch: str) -> str:
    """Resolve one platform with uv; returns the file's text."""
    version = torch.partition("==")[2]
    if platform.torch_local:
        version = f"{version}+{platform.torch_local}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pin = folder / "torch.txt"
        pin.write_text(f"torch=={version}\n")
        command = [
            sys.executable, "-m", "uv", "pip", "compile", str(ROOT / "pyproject.toml"),
            *(f"--extra={extra}" for extra in EXTRAS),
            f"--python-version={PYTHON}", f"--python-platform={platform.target}",
            "--constraint" if platform.emit_torch else "--override", str(pin),
            "--no-header", "--no-annotate",
        ]  # fmt: skip
        if platform.stand_in:
            write_stand_in(folder, version)
            command.append(f"--find-links={folder}")
        if not platform.emit_torch:
            command.append("--no-emit-package=torch")
        env = {**os.environ}
        if platform.macos:
            env["MACOSX_DEPLOYMENT_TARGET"] = platform.macos
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"uv could not resolve {platform.name}:\n{result.stderr}")
    pins = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
    return "\n".join([*header(platform, torch), *pins]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--torch", required=True, help="the torch pin, e.g. torch==2.13.0")
    parser.add_argument("--platform", action="append", help="only these (default: all)")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    for platform in PLATFORMS:
        if args.platform and platform.name not in args.platform:
            continue
        (OUT / f"{platform.name}.txt").write_text(compile_platform(platform, args.torch))
        print(f"requirements/{platform.name}.txt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
