"""Fetch one model file: resumable, verified, atomic.

The bytes go to ``.<name>.part`` beside the target. An interrupted HTTP transfer keeps the
part and the next attempt asks for the rest with a ``Range`` request (starting over when
the server ignores it). The sha256 (full digest or prefix) is checked before the part is
renamed to its final name, so a file under its final name is always a complete, verified
one; a mismatch deletes the part. So is the byte count, where the catalog knows it. A
file whose publisher gives no sha256 is still only renamed once complete, and its digest
is returned so that the registry can record it.
Only the standard library is used, so the core install can pull models.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from dsu import __version__
from dsu.errors import ChecksumMismatch, DownloadError
from dsu.registry import digests
from dsu.registry.checksum import CHUNK, file_sha256, matches

Progress = Callable[[str, int, int | None], None]
"""``progress(file_name, bytes_done, bytes_total_or_None)``."""

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


class _Interrupted(Exception):
    """The transfer stopped early; what arrived is kept in the part file."""


def part_path(dest: Path) -> Path:
    """Where the bytes of ``dest`` accumulate until verified."""
    return dest.with_name(f".{dest.name}.part")


def fetch(
    source: str | Path,
    dest: Path,
    expected_sha256: str | None,
    *,
    timeout: float = 30.0,
    retries: int = 3,
    progress: Progress | None = None,
    expected_size: int | None = None,
) -> str:
    """Fetch ``source`` (an http(s) URL or a local file) to ``dest``, verified.

    Args:
        source: where the bytes are.
        dest: the final path; its folder must exist.
        expected_sha256: full hex digest or a hex prefix; None when the publisher gives
            none (the file is then installed unchecked, and its digest returned).
        timeout: seconds to wait for the server at any one point.
        retries: attempts; each one resumes where the last one stopped.
        progress: called as bytes arrive.
        expected_size: the file's byte count, where known (checked before the digest).

    Returns:
        The full sha256 of the installed file (also remembered by
        :mod:`dsu.registry.digests`, so loading it next does not hash it again).

    Raises:
        DownloadError: HTTP error (with status and URL), unreachable host, or a transfer
            still incomplete after ``retries`` attempts (the part is kept for next time).
        ChecksumMismatch: the bytes are complete but their size or digest is wrong (part
            deleted).
    """
    part = part_path(dest)
    if isinstance(source, Path):
        _copy_local(source, part, dest.name, progress)
    else:
        _download(source, part, dest.name, timeout=timeout, retries=retries, progress=progress)
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"{dest.name}: size mismatch: expected {expected_size} bytes, got {size} "
            f"(from {source}); the download was deleted"
        )
    actual = file_sha256(part)
    if expected_sha256 is not None and not matches(actual, expected_sha256):
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"{dest.name}: sha256 mismatch: expected {expected_sha256}, got {actual} "
            f"(from {source}); the download was deleted"
        )
    os.replace(part, dest)
    digests.remember(dest, actual)
    return actual


def _download(
    url: str, part: Path, name: str, *, timeout: float, retries: int, progress: Progress | None
) -> None:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: unsupported URL scheme {scheme!r} (use http, https or a path)")
    last: _Interrupted | None = None
    for _ in range(max(1, retries)):
        try:
            _attempt(url, part, name, timeout, progress)
            return
        except _Interrupted as exc:
            last = exc
    done = part.stat().st_size if part.exists() else 0
    raise DownloadError(
        f"{url}: transfer interrupted {max(1, retries)} times ({last}); {done} bytes kept in "
        f"{part}, run the command again to resume"
    )


def _attempt(url: str, part: Path, name: str, timeout: float, progress: Progress | None) -> None:
    """One HTTP request: resume the part if it exists, return when all bytes arrived."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"dsu/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = _opener(url).open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            # Nothing left past our offset: either the part is already complete (the digest
            # check decides) or it is longer than the file, then start over.
            total = _total_from_content_range(exc.headers.get("Content-Range"))
            if total == offset:
                return
            part.unlink()
            raise _Interrupted("the partial file did not match the server's; restarting") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise _Interrupted(f"timed out after {timeout:g} s") from None
        raise DownloadError(f"{url}: cannot connect: {exc.reason}") from None
    except (TimeoutError, http.client.HTTPException, ConnectionError) as exc:
        raise _Interrupted(f"{type(exc).__name__}: {exc}") from None

    with response:
        start = 0
        if offset and response.status == 206:
            start = _start_from_content_range(response.headers.get("Content-Range"))
        if start != offset:
            if response.status == 206:
                part.unlink()
                raise _Interrupted("the server answered with an unexpected range; restarting")
            # A 200 answer: the server ignores Range and sends the whole file again.
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        done = start
        with open(part, "ab" if start else "wb") as out:
            try:
                while block := response.read(CHUNK):
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(name, done, total)
            except (OSError, http.client.HTTPException) as exc:
                raise _Interrupted(f"{type(exc).__name__} after {done} bytes") from None
    if total is not None and done < total:
        raise _Interrupted(f"connection closed after {done} of {total} bytes")


def _copy_local(source: Path, part: Path, name: str, progress: Progress | None) -> None:
    """Copy a mirror file into the part (no resume: a local copy is fast and cannot drop)."""
    try:
        total = source.stat().st_size
        with open(source, "rb") as src, open(part, "wb") as out:
            done = 0
            while block := src.read(CHUNK):
                out.write(block)
                done += len(block)
                if progress:
                    progress(name, done, total)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{source}: cannot copy from the mirror: {exc.strerror}") from None


def _opener(url: str) -> urllib.request.OpenerDirector:
    """The default opener, except that loopback URLs never go through a proxy."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _start_from_content_range(value: str | None) -> int:
    found = _CONTENT_RANGE.fullmatch((value or "").strip())
    return int(found[1]) if found and found[1] is not None else -1


def _total_from_content_range(value: str | None) -> int | None:
    found = _CONTENT_RANGE.fullmatch((value or "").strip())
    return int(found[2]) if found and found[2] != "*" else None
