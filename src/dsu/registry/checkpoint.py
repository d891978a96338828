"""Read a PyTorch checkpoint file, or say in one line what is wrong with it.

``torch.load`` reports a damaged file as a pickle, zip or ``mmap`` error that names neither
the file nor the likely cause (a download that stopped early, an HTML error page saved
under the checkpoint's name, a Git LFS pointer). Every family loader reads its files through
:func:`read_torch`, so each of those ends as one :class:`~dsu.errors.CorruptCheckpoint` naming the
file, the problem and what to do. torch is imported only when a file is read.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

from dsu.errors import CorruptCheckpoint

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_LFS_POINTER = b"version https://git-lfs"
_HEAD = 64


def read_torch(path: Path, *, weights_only: bool = True) -> Any:
    """``torch.load(path, map_location="cpu")`` with user-facing errors.

    Args:
        path: the checkpoint.
        weights_only: torch's safe unpickler (tensors and plain containers only); a Demucs
            package stores its model class and needs False.

    Raises:
        CorruptCheckpoint: the file is missing, unreadable, empty, truncated or not a PyTorch
            checkpoint; the message names the file and the problem.
    """
    import torch

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    except MemoryError:
        raise
    except OSError as exc:
        raise CorruptCheckpoint(
            f"{path}: cannot read this checkpoint: {exc.strerror or exc}"
        ) from None
    except Exception as exc:
        raise CorruptCheckpoint(
            f"{path}: cannot load this checkpoint: {diagnose(path, exc)}; replace the file "
            "(`dsu models pull NAME` fetches a catalog model again, `dsu models verify` "
            "checks the whole directory)"
        ) from exc


def diagnose(path: Path, error: BaseException | None = None) -> str:
    """What is wrong with a file that ``torch.load`` refused, from its size and first bytes."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(_HEAD)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if size == 0:
        return "the file is empty (0 bytes): the download or copy never wrote it"
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            return (
                f"truncated: a PyTorch archive whose end is missing ({size} bytes; "
                "the download or copy stopped early)"
            )
        return f"a damaged PyTorch archive ({_short(error)})"
    if head.startswith(_LFS_POINTER):
        return "a Git LFS pointer, not the checkpoint itself (fetch it with `git lfs pull`)"
    if head.lstrip()[:1] == b"<":
        return "a web page or XML document, not a checkpoint (a failed download?)"
    if head[0] == _PICKLE_PROTO:
        return f"a truncated or damaged legacy PyTorch file ({size} bytes; {_short(error)})"
    return f"not a PyTorch checkpoint (it starts with bytes {head[:8].hex(' ')})"


def _short(error: BaseException | None) -> str:
    text = " ".join(str(error).split()) if error is not None else "unknown error"
    return text[:160]
