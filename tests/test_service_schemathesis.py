"""Schemathesis against the live server's OpenAPI schema: no request, however odd, gets a
5xx. Bounded (a fixed seed, a few examples per operation) so it ends well within a minute."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from test_service_support import Server

pytestmark = pytest.mark.slow


def test_no_request_crashes_the_server(tmp_path: Path) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is part of the test extras: pip install -e .[test]"
    server = Server(tmp_path, {"DSU_MAX_UPLOAD_MB": "2", "DSU_MAX_QUEUE": "4"}).start()
    try:
        out = subprocess.run(
            [
                cli,
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "15",
                "--workers",
                "2",
                "--seed",
                "1",
                "--generation-database",
                "none",
                "--request-timeout",
                "30",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
        assert " passed" in out.stdout and "failed" not in out.stdout.split("SUMMARY")[-1]
        assert server.alive() and httpx.get(f"{server.url}/health").status_code == 200
    finally:
        server.stop()
    assert "unhandled error" not in server.log.read_text()  # no handler raised
