"""What goes into a DSU runtime bundle: the shared one, or one family's alone.

The shared runtime carries every ``dsu`` module and every launcher of ``pyproject.toml``'s
``[project.scripts]``. A family's bundle (what the seed shipped per family: one fat
executable each) carries the core modules and that family's package only, and no HTTP
service. Families come from :data:`dsu.archs.families.FAMILIES`, so a new family is
covered by its ``Family(...)`` line. Both kinds are trimmed the same way (:func:`kept`).

Imported by ``packaging/dsu.spec`` (PyInstaller) and ``packaging/size.py``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import tomllib

from dsu.archs.families import FAMILIES, Family

ROOT = Path(__file__).resolve().parents[1]

SERVICE_MODULES: tuple[str, ...] = ("dsu.service", "dsu.cli.serve")
"""The HTTP service: the shared runtime's, not a family worker's."""

TRIMMED_MODULES: tuple[str, ...] = (
    # torch.compile, ONNX export and TensorBoard: DSU runs eager models only.
    "torch._inductor",
    "torch.onnx",
    "torch.utils.tensorboard",
    # GUI, notebook and test stacks some libraries import optionally.
    "tkinter",
    "matplotlib",
    "IPython",
    "pytest",
    "PyInstaller",
    "Cython",
)
"""Modules no DSU command runs, left out of every bundle."""

TRIMMED_FILES: tuple[str, ...] = (
    # C/C++ headers, static and import libraries, CMake files: for building extensions.
    "*.h",
    "*.hpp",
    "*.cuh",
    "*.a",
    "*.lib",
    "*.cmake",
    "*/include/*",
    "torch/share/*",
    # torch's C++ test binaries, test models and protoc (torch_shm_manager stays: torch
    # starts it for tensors shared between processes).
    "torch/bin/*Test",
    "torch/bin/test_*",
    "torch/bin/protoc*",
    "torch/bin/*.pt",
    "torch/bin/*.ptl",
    "torch/bin/upgrader_models/*",
    "torch/lib/*_test.so",
    "torch/lib/libbackend_with_compiler.so",
    "torch/lib/libaoti_custom_ops.so",
    # Test suites shipped inside packages.
    "*/tests/*",
)
"""Files (bundle-relative destination paths) no DSU command reads."""


@dataclass(frozen=True)
class Plan:
    """One bundle's contents.

    Attributes:
        name: ``dsu`` for the shared runtime, else the family's id.
        launchers: the console scripts built as executables.
        excluded_dsu: ``dsu`` packages left out (other families', the service).
        excludes: third-party and ``dsu`` modules left out even when imported.
        data_excludes: ``dsu`` package-data globs (relative to ``src/dsu``) left out.
    """

    name: str
    launchers: tuple[str, ...]
    excluded_dsu: tuple[str, ...]
    excludes: tuple[str, ...]
    data_excludes: tuple[str, ...]

    def keep_dsu(self, module: str) -> bool:
        """Whether a ``dsu`` module (dotted name) belongs in the bundle."""
        return not any(_within(module, e) for e in self.excluded_dsu)


def family_id(family: Family) -> str:
    """A family's bundle name: the last part of its module (``dsu.archs.roformer`` ->
    ``roformer``)."""
    assert family.module is not None
    return family.module.rsplit(".", 1)[-1]


def bundle_families() -> tuple[Family, ...]:
    """The families that get a bundle of their own: every runnable, non-built-in one."""
    return tuple(f for f in FAMILIES if f.module is not None and not f.builtin)


def console_scripts() -> tuple[str, ...]:
    """The launcher names ``pyproject.toml`` declares, ``dsu`` first."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tuple(tomllib.load(file)["project"]["scripts"])


def plan(family: str | None = None) -> Plan:
    """The shared runtime's plan, or the plan of the family whose id is ``family``.

    Raises:
        ValueError: ``family`` names no bundle family.
    """
    if family is None:
        return Plan("dsu", console_scripts(), (), TRIMMED_MODULES, ())
    by_id = {family_id(f): f for f in bundle_families()}
    if family not in by_id:
        raise ValueError(f"unknown family {family!r}; one of: {', '.join(sorted(by_id))}")
    own = by_id[family]
    others = [f for f in bundle_families() if f is not own]
    other_modules = tuple(f.module for f in others if f.module)
    other_requires = tuple(m for f in others for m in f.requires if m not in own.requires)
    excluded = (*other_modules, *SERVICE_MODULES)
    data = tuple(_package_dir(m) + "/*" for m in excluded)
    return Plan(
        family,
        ("dsu",),
        excluded,
        (*TRIMMED_MODULES, *excluded, *other_requires),
        data,
    )


def kept(dest: str) -> bool:
    """Whether a collected file (its path inside the bundle) stays in it."""
    dest = dest.replace("\\", "/")
    return not any(fnmatch.fnmatch(dest, pattern) for pattern in TRIMMED_FILES)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _package_dir(module: str) -> str:
    """``dsu.archs.vr`` -> ``archs/vr`` (relative to the ``dsu`` package)."""
    return module.removeprefix("dsu.").replace(".", "/")
