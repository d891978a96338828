"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


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
