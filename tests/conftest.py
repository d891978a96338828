"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--service-queue",
        choices=("local", "celery"),
        default="local",
        help="queue backend of the service tests' servers (celery: Redis + a worker)",
    )


def pytest_configure(config: pytest.Config) -> None:
    import test_service_support

    test_service_support.QUEUE = config.getoption("--service-queue")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout: real audio and models. Skips when absent."""
    if not (SHARED / "audio").is_dir():
        pytest.skip(f"needs the shared test material at {SHARED} (absent on this machine)")
    return SHARED


@pytest.fixture(scope="session")
def mu_dir(shared_dir: Path) -> Path:
    """The real MUSDB18 excerpt 'Mu - Too Bright': mixture.wav and its four true stems."""
    return shared_dir / "audio" / "musdb18-mu-too-bright"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test: thread hand-offs would dominate a tiny network
    on a busy machine."""
    import torch  # here, so that collecting the torch-free tests does not load it

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def compiled_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Compiled graphs (the openvino backend's) go to a folder of the session's, not the
    user's ``~/.cache/dsu``; CLI and worker subprocesses inherit it."""
    import os

    before = os.environ.get("DSU_CACHE_DIR")
    os.environ["DSU_CACHE_DIR"] = str(tmp_path_factory.mktemp("dsu-cache"))
    yield
    if before is None:
        del os.environ["DSU_CACHE_DIR"]
    else:
        os.environ["DSU_CACHE_DIR"] = before
