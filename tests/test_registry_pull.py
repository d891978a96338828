"""``pull`` and the downloader against a real HTTP server on 127.0.0.1.

The catalogs here are test-only: every URL points at the local server (or at a closed
port, where a mirror must be used instead), so no real URL is ever contacted.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from dsu.errors import ChecksumMismatch, DownloadError, ModelNotFound
from dsu.registry import Catalog, Registry, pull, scan_to_file, verify
from dsu.registry.download import fetch, part_path
from tiny_demucs import tiny_net, write_package

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, connecting fails at once


class FileServer:
    """A real threaded HTTP/1.1 server serving in-memory files, with ``Range`` support.

    Args:
        files: URL path (without the leading ``/``) -> bytes.
        ranges: honour ``Range: bytes=N-`` (206); False answers 200 with the whole file.
        drop_once: paths whose first whole-file answer announces the full length, sends
            half of the bytes and closes the connection.
    """

    def __init__(
        self, files: dict[str, bytes], *, ranges: bool = True, drop_once: tuple[str, ...] = ()
    ) -> None:
        self.files = files
        self.ranges = ranges
        self.drop_once = set(drop_once)
        self.requests: list[tuple[str, str | None]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner.serve(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/{path}"

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.lstrip("/")
        wanted = handler.headers.get("Range")
        self.requests.append((path, wanted))
        data = self.files.get(path)
        if data is None:
            handler.send_error(404, "Not Found")
            return
        start = 0
        if wanted and self.ranges:
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1])
            if start >= len(data):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(data)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            handler.send_response(200)
        body = data[start:]
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Accept-Ranges", "bytes" if self.ranges else "none")
        handler.end_headers()
        if start == 0 and path in self.drop_once:
            self.drop_once.discard(path)
            handler.wfile.write(body[: len(body) // 2])
            handler.close_connection = True
            return
        handler.wfile.write(body)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Two tiny real Demucs packages (4 stems), by their Demucs file names."""
    folder = tmp_path_factory.mktemp("packages")
    paths = [write_package(tiny_net("demucs", seed), folder, f"feed000{seed}") for seed in (1, 2)]
    return {path.name: path.read_bytes() for path in paths}


def tiny_catalog(files: dict[str, bytes], url: str | FileServer) -> Catalog:
    """A test catalog with one two-member bag ``tiny`` (alias ``tn``) served from ``url``."""
    return Catalog.from_dict(tiny_catalog_document(files, url), "test catalog")


def tiny_catalog_document(files: dict[str, bytes], url: str | FileServer) -> dict:
    """The catalog JSON document of :func:`tiny_catalog`."""
    names = list(files)
    base = url.url("") if isinstance(url, FileServer) else url.rstrip("/") + "/"
    entry = {
        "arch": "demucs",
        "weights": names,
        "url": {n: base + n for n in names},
        "sha256": {n: n.split("-")[1].removesuffix(".th") for n in names},
        "stems": ["drums", "bass", "other", "vocals"],
        "bag": {
            "models": [n.split("-")[0] for n in names],
            "weights": [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]],
            "segment": 1,
        },
        "license": "MIT",
        "description": "test bag",
        "aliases": ["tn"],
    }
    return {"version": 1, "models": {"tiny": entry}}


def test_pull_installs_verified_files_and_registers_the_model(
    tmp_path: Path, packages: dict[str, bytes]
) -> None:
    root = tmp_path / "models"
    with FileServer(dict(packages)) as server:
        seen: list[tuple[str, int, int | None]] = []
        entry = pull(
            "tn", root, catalog=tiny_catalog(packages, server), progress=lambda *a: seen.append(a)
        )
        assert sorted(p for p, _ in server.requests) == sorted(packages)
        pulled_again = pull("tiny", root, catalog=tiny_catalog(packages, server))
        assert len(server.requests) == len(packages)  # present and verified: not fetched again
    assert pulled_again == entry
    names = list(packages)
    assert entry.name == "tiny"
    assert entry.weights == tuple(root / "weights" / n for n in names)
    assert entry.config == root / "configs" / "tiny.yaml"
    for name, data in packages.items():
        assert (root / "weights" / name).read_bytes() == data
        assert (name, len(data), len(data)) in seen
    bag = yaml.safe_load(entry.config.read_text())
    assert bag["models"] == ["feed0001", "feed0002"] and bag["segment"] == 1
    document = json.loads((root / "models.json").read_text())
    assert document["default"] == "tiny"
    assert document["models"]["tiny"]["weights"] == [f"weights/{n}" for n in names]
    assert document["models"]["tiny"]["options"]["segment"] == 1
    assert not list(root.rglob("*.part"))
    assert all(r.ok and r.checked for r in verify(root) if r.file.startswith("weights/"))
    assert Registry.open(root).resolve("tn").stems == ("drums", "bass", "other", "vocals")


def test_pulled_bag_separates(tmp_path: Path, packages: dict[str, bytes]) -> None:
    from dsu import Separator

    with FileServer(dict(packages)) as server:
        pull("tiny", tmp_path, catalog=tiny_catalog(packages, server))
    separator = Separator("tiny", models_dir=tmp_path, device="cpu")
    mix = np.random.default_rng(0).standard_normal((2, 22050)).astype(np.float32) * 0.1
    result = separator.separate(mix, 44100)
    assert sorted(result.stems) == ["bass", "drums", "other", "vocals"]
    assert all(
        stem.shape == mix.shape and np.isfinite(stem).all() for stem in result.stems.values()
    )


def test_checksum_mismatch_leaves_nothing(tmp_path: Path, packages: dict[str, bytes]) -> None:
    root = tmp_path / "models"
    root.mkdir()
    original = {"version": 1, "default": "center", "models": {}}
    (root / "models.json").write_text(json.dumps(original))
    corrupted = {name: data[:-1] + bytes([data[-1] ^ 1]) for name, data in packages.items()}
    first = next(iter(packages))
    with FileServer(corrupted) as server, pytest.raises(ChecksumMismatch) as caught:
        pull("tiny", root, catalog=tiny_catalog(packages, server))
    message = caught.value.message
    expected = first.split("-")[1].removesuffix(".th")
    assert first in message
    assert f"expected {expected}" in message
    assert f"got {sha(corrupted[first])}" in message
    assert not (root / "weights" / first).exists()
    assert not part_path(root / "weights" / first).exists()
    assert json.loads((root / "models.json").read_text()) == original
    with pytest.raises(ModelNotFound):
        Registry.open(root).resolve("tiny")


def test_interrupted_transfer_resumes_with_range(
    tmp_path: Path, packages: dict[str, bytes]
) -> None:
    name, data = next(iter(packages.items()))
    dest = tmp_path / name
    with FileServer({name: data}, drop_once=(name,)) as server:
        with pytest.raises(DownloadError, match=r"interrupted.*resume"):
            fetch(server.url(name), dest, sha(data), retries=1)
        part = part_path(dest)
        assert part.stat().st_size == len(data) // 2
        assert not dest.exists()  # a partial download is never taken for the file
        fetch(server.url(name), dest, sha(data), retries=1)
    assert server.requests == [(name, None), (name, f"bytes={len(data) // 2}-")]
    assert dest.read_bytes() == data
    assert not part.exists()


def test_pull_retries_and_resumes_by_itself(tmp_path: Path, packages: dict[str, bytes]) -> None:
    first = next(iter(packages))
    with FileServer(dict(packages), drop_once=(first,)) as server:
        pull("tiny", tmp_path, catalog=tiny_catalog(packages, server))
    assert server.requests[:2] == [(first, None), (first, f"bytes={len(packages[first]) // 2}-")]
    assert (tmp_path / "weights" / first).read_bytes() == packages[first]


def test_server_without_range_support_restarts_from_zero(
    tmp_path: Path, packages: dict[str, bytes]
) -> None:
    name, data = next(iter(packages.items()))
    dest = tmp_path / name
    part_path(dest).write_bytes(b"stale bytes from another attempt")
    with FileServer({name: data}, ranges=False) as server:
        fetch(server.url(name), dest, sha(data))
    assert server.requests == [(name, "bytes=32-")]
    assert dest.read_bytes() == data


def test_complete_part_is_verified_and_taken(tmp_path: Path, packages: dict[str, bytes]) -> None:
    name, data = next(iter(packages.items()))
    dest = tmp_path / name
    part_path(dest).write_bytes(data)  # e.g. killed between the last byte and the rename
    with FileServer({name: data}) as server:
        fetch(server.url(name), dest, name.split("-")[1].removesuffix(".th"))
    assert server.requests == [(name, f"bytes={len(data)}-")]
    assert dest.read_bytes() == data


def test_part_longer_than_the_file_starts_over(tmp_path: Path, packages: dict[str, bytes]) -> None:
    name, data = next(iter(packages.items()))
    dest = tmp_path / name
    part_path(dest).write_bytes(data + b"junk from an older, longer file")
    with FileServer({name: data}) as server:
        fetch(server.url(name), dest, sha(data))
    assert server.requests == [(name, f"bytes={len(data) + 31}-"), (name, None)]
    assert dest.read_bytes() == data


def test_http_error_names_status_and_url(tmp_path: Path, packages: dict[str, bytes]) -> None:
    with FileServer({}) as server, pytest.raises(DownloadError) as caught:
        pull("tiny", tmp_path, catalog=tiny_catalog(packages, server))
    assert "HTTP 404" in caught.value.message
    assert server.url(next(iter(packages))) in caught.value.message
    assert not (tmp_path / "models.json").exists()


def test_unreachable_host_is_a_download_error(tmp_path: Path, packages: dict[str, bytes]) -> None:
    with pytest.raises(DownloadError, match="cannot connect"):
        pull("tiny", tmp_path, catalog=tiny_catalog(packages, CLOSED))


def test_mirror_directory(tmp_path: Path, packages: dict[str, bytes]) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, data in packages.items():
        (mirror / name).write_bytes(data)
    entry = pull("tiny", tmp_path / "models", mirror=mirror, catalog=tiny_catalog(packages, CLOSED))
    assert [p.read_bytes() for p in entry.weights] == list(packages.values())
    # Another models directory works as a mirror too (files under weights/).
    again = pull(
        "tiny",
        tmp_path / "copy",
        mirror=str(tmp_path / "models"),
        catalog=tiny_catalog(packages, CLOSED),
    )
    assert [p.read_bytes() for p in again.weights] == list(packages.values())


def test_corrupt_mirror_file_is_refused(tmp_path: Path, packages: dict[str, bytes]) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in packages:
        (mirror / name).write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatch, match="sha256 mismatch"):
        pull("tiny", tmp_path / "models", mirror=mirror, catalog=tiny_catalog(packages, CLOSED))
    assert not list((tmp_path / "models" / "weights").iterdir())


def test_mirror_base_url(tmp_path: Path, packages: dict[str, bytes]) -> None:
    served = {f"mirror/{name}": data for name, data in packages.items()}
    with FileServer(served) as server:
        pull("tiny", tmp_path, mirror=server.url("mirror/"), catalog=tiny_catalog(packages, CLOSED))
    assert sorted(p for p, _ in server.requests) == sorted(served)


def test_pull_into_a_plain_demucs_repo_keeps_its_models(
    tmp_path: Path, packages: dict[str, bytes]
) -> None:
    lone = write_package(tiny_net("htdemucs", 5, ["a", "b"]), tmp_path, "abcd0005")
    with FileServer(dict(packages)) as server:
        pull("tiny", tmp_path, catalog=tiny_catalog(packages, server))
    registry = Registry.open(tmp_path)
    assert not registry.scanned
    assert registry.resolve("abcd0005").weights == (lone,)
    assert registry.resolve("abcd0005").stems == ("a", "b")
    assert registry.resolve("tiny").name == "tiny"


def test_pull_keeps_existing_entries_and_default(
    tmp_path: Path, packages: dict[str, bytes]
) -> None:
    write_package(tiny_net("htdemucs", 5), tmp_path, "abcd0005")
    scan_to_file(tmp_path)
    with FileServer(dict(packages)) as server:
        pull("tiny", tmp_path, catalog=tiny_catalog(packages, server))
    document = json.loads((tmp_path / "models.json").read_text())
    assert sorted(document["models"]) == ["abcd0005", "tiny"]
    assert document["default"] == "abcd0005"


def test_unknown_catalog_name(tmp_path: Path, packages: dict[str, bytes]) -> None:
    with pytest.raises(ModelNotFound, match="did you mean tiny"):
        pull("tinny", tmp_path, catalog=tiny_catalog(packages, CLOSED))
