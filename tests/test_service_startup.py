"""``dsu serve`` that cannot start says why and exits 2, without a traceback: missing
optional packages, a bad setting, a data dir it cannot write or that another running
server holds. Every case runs the real command in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import test_service_support
from test_service_support import ROOT, Server, free_port

pytestmark = pytest.mark.slow


def serve(
    data_dir: Path, *, block: tuple[str, ...] = (), **env: str
) -> subprocess.CompletedProcess:
    """Run ``dsu serve`` until it exits (it should, at once); ``block``: modules made
    unimportable first, as when they are not installed."""
    code = (
        "import sys\n"
        f"for name in {list(block)!r}:\n"
        "    sys.modules[name] = None  # import raises ModuleNotFoundError, as when absent\n"
        "from dsu.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["serve", "--host", "127.0.0.1", "--port", str(free_port()), "--data-dir", str(data_dir)]
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "DSU_MODELS_DIR": str(data_dir.parent / "models"), **env},
    )


def refused(out: subprocess.CompletedProcess) -> str:
    """stderr of a run that ended as a usage error should."""
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert out.stderr.startswith("error: "), out.stderr[-3000:]
    return out.stderr


@pytest.mark.parametrize("missing", ["uvicorn", "fastapi", "standardwebhooks"])
def test_missing_service_packages_say_what_to_install(tmp_path: Path, missing: str) -> None:
    stderr = refused(serve(tmp_path / "data", block=(missing,)))
    assert "pip install 'dsu[service]'" in stderr and missing in stderr
    assert not (tmp_path / "data").exists()  # refused before touching anything


def test_a_bad_precision_is_refused(tmp_path: Path) -> None:
    stderr = refused(serve(tmp_path / "data", DSU_PRECISION="fp64"))
    assert "DSU_PRECISION" in stderr and "fp32, fp16, bf16" in stderr


def unwritable_dirs(tmp_path: Path) -> list[Path]:
    """Data dirs this process cannot create or write, whoever it runs as."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    dirs = [blocker / "data"]
    if Path("/sys").is_dir():  # sysfs refuses new directories, even to root
        dirs.append(Path("/sys/dsu-test-data"))
    if os.geteuid() != 0:  # permission bits stop everyone but root
        locked = tmp_path / "read-only"
        locked.mkdir(mode=0o555)
        dirs.append(locked)
    return dirs


def test_an_unwritable_data_dir_is_refused(tmp_path: Path) -> None:
    for data_dir in unwritable_dirs(tmp_path):
        stderr = refused(serve(data_dir))
        assert "cannot write the data dir" in stderr and str(data_dir) in stderr, stderr


def test_a_data_dir_held_by_a_running_server_is_refused(tmp_path: Path) -> None:
    if test_service_support.QUEUE == "celery":
        pytest.skip("the celery backend's data dir is shared by its API and workers by design")
    first = Server(tmp_path).start()
    try:
        stderr = refused(serve(first.data_dir / "data"))
        assert f"another dsu serve (pid {first.proc.pid})" in stderr, stderr
        assert first.alive()
    finally:
        first.stop()
