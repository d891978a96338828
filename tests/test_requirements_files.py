"""``requirements/<platform>.txt`` are current: generated from this ``pyproject.toml``
and the Makefile's torch pin (the digest in each header), and pinning every dependency of
the runtime extras at a version its range admits. No network: a stale file fails here,
``make requirements`` rewrites it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packaging"))

import requirements as generator  # noqa: E402

# What each uv target is, as PEP 508 markers see it.
MARKER_ENV = {
    "x86_64-manylinux_2_28": {"sys_platform": "linux", "platform_system": "Linux",
                              "platform_machine": "x86_64"},
    "aarch64-apple-darwin": {"sys_platform": "darwin", "platform_system": "Darwin",
                             "platform_machine": "arm64"},
    "x86_64-apple-darwin": {"sys_platform": "darwin", "platform_system": "Darwin",
                            "platform_machine": "x86_64"},
}  # fmt: skip


def makefile_torch() -> str:
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^TORCH\s*\?=\s*(\S+)", text, re.MULTILINE)
    assert match, "the Makefile names no TORCH pin"
    return match[1]


def pins(path: Path) -> tuple[list[str], dict[str, Version]]:
    """A file's option and comment lines, and its ``name==version`` pins."""
    head, pinned = [], {}
    for line in path.read_text().splitlines():
        if line.startswith(("#", "--")):
            head.append(line)
        elif line.strip():
            name, _, version = line.partition("==")
            pinned[re.sub(r"[-_.]+", "-", name).lower()] = Version(version)
    return head, pinned


def runtime_requirements() -> list[Requirement]:
    """pyproject's dependencies and those of the runtime extras, DSU's own extras
    (``dsu[service]``) left out: they are the same lists again."""
    project = generator.pyproject()
    lines = list(project["dependencies"])
    for extra in generator.EXTRAS:
        lines += project["optional-dependencies"][extra]
    return [r for r in map(Requirement, lines) if r.name != "dsu"]


def test_every_platform_has_its_file() -> None:
    names = {p.name for p in generator.PLATFORMS}
    assert names == {"cpu", "cuda", "mac-intel", "mac-mps"}
    assert {p.stem for p in (ROOT / "requirements").glob("*.txt")} == names


@pytest.mark.parametrize("platform", generator.PLATFORMS, ids=lambda p: p.name)
def test_file_is_current(platform: generator.Platform) -> None:
    path = ROOT / "requirements" / f"{platform.name}.txt"
    head, pinned = pins(path)
    digest = generator.inputs_digest(platform, makefile_torch())
    assert f"# inputs-sha256: {digest}" in head, (
        f"{path.name} is stale: pyproject.toml or the Makefile's TORCH changed; "
        "run `make requirements`"
    )
    assert [line for line in head if line.startswith("--")] == list(platform.indexes)

    env = {"python_version": generator.PYTHON, "extra": "", **MARKER_ENV[platform.target]}
    for requirement in runtime_requirements():
        if requirement.marker is not None and not requirement.marker.evaluate(env):
            continue
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name == "torch" and not platform.emit_torch:
            assert "torch" not in pinned
            continue
        assert name in pinned, f"{path.name} does not pin {requirement}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{path.name} pins {name}=={pinned[name]}, outside {requirement}"
        )

    torch = Version(makefile_torch().partition("==")[2])
    if platform.emit_torch:
        assert pinned["torch"].release == torch.release
        assert pinned["torch"].local == platform.torch_local
