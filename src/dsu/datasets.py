"""Evaluation datasets: tracks with their true stems, found in a folder.

A **track** is either

- a folder holding ``mixture.<ext>`` and one audio file per stem, ``<stem>.<ext>``
  (MUSDB18-HQ's ``mixture.wav, drums.wav, bass.wav, other.wav, vocals.wav``; any stem
  names and any format :func:`dsu.audio.read` decodes), or
- a Native Instruments ``.stem.mp4`` (MUSDB18's format): five streams, mixture, drums,
  bass, other, vocals.

A **dataset** is a folder searched recursively for tracks (hidden entries skipped, a
track folder not searched further): MUSDB18 (``train/*.stem.mp4``, ``test/*.stem.mp4``),
MUSDB18-HQ (``train/<track>/*.wav``, ``test/<track>/*.wav``), or any folder of tracks.
A track's ``subset`` is the folder path between the dataset root and the track
(``"test"``, ``""`` at the top); its ``key``, ``subset/name``, is unique in the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsu.errors import BadAudio, BadRequest

STEM_FILE_SUFFIXES = (".stem.mp4", ".stem.m4a")
AUDIO_SUFFIXES = (".wav", ".wave", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aif", ".aiff")
MIXTURE = "mixture"
# Stems whose length differs from the mixture's by more than this are a wrong file, not
# codec padding; shorter differences are cut or zero-padded away.
MAX_LENGTH_MISMATCH_S = 0.5
_MAX_DEPTH = 6


@dataclass(frozen=True)
class TrackAudio:
    """A decoded track.

    Attributes:
        mixture: ``[C, T]`` float32.
        stems: reference stem name -> ``[C, T]`` float32, same C and T as the mixture.
        samplerate: Hz.
    """

    mixture: np.ndarray
    stems: dict[str, np.ndarray]
    samplerate: int


@dataclass(frozen=True)
class Track:
    """One track of a dataset: a stem folder or a ``.stem.mp4`` file.

    Attributes:
        name: the folder's name, or the file's name without ``.stem.mp4``.
        path: the folder or the file.
        subset: folder path from the dataset root to the track (``""`` at the top).
    """

    name: str
    path: Path
    subset: str = ""

    @property
    def key(self) -> str:
        """``subset/name``: unique within a dataset."""
        return f"{self.subset}/{self.name}" if self.subset else self.name

    @property
    def is_stem_file(self) -> bool:
        return self.path.is_file()

    def load(self) -> TrackAudio:
        """Decode the mixture and every reference stem.

        Stems are brought to the mixture's channel count (a mono stem is repeated) and
        length (cut or zero-padded, at most :data:`MAX_LENGTH_MISMATCH_S` apart).
        """
        if self.is_stem_file:
            from dsu.audio.stems_mp4 import read_stem_mp4

            streams, rate = read_stem_mp4(self.path)
            mixture = streams.pop(MIXTURE)
            return TrackAudio(mixture, _conform(streams, mixture, rate), rate)

        from dsu import audio

        files = audio_files(self.path)
        if MIXTURE not in files:
            raise BadAudio(self.path, "no mixture.<ext> in this track folder")
        mixture, rate = audio.read(files[MIXTURE])
        stems: dict[str, np.ndarray] = {}
        for name, path in files.items():
            if name == MIXTURE:
                continue
            data, stem_rate = audio.read(path)
            if stem_rate != rate:
                raise BadAudio(path, f"is {stem_rate} Hz but the mixture is {rate} Hz")
            stems[name] = data
        return TrackAudio(mixture, _conform(stems, mixture, rate, files), rate)


def is_stem_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(STEM_FILE_SUFFIXES)


def is_track_folder(path: Path) -> bool:
    """A folder with ``mixture.<ext>`` and at least one other audio file."""
    if not path.is_dir():
        return False
    files = audio_files(path)
    return MIXTURE in files and len(files) > 1


def find_tracks(root: str | Path, subset: str | None = None) -> list[Track]:
    """Every track under ``root`` (or ``root`` itself when it is one), sorted by key.

    Args:
        root: a dataset folder, a track folder or a ``.stem.mp4``.
        subset: keep only tracks whose subset is this folder or lies under it
            (``"test"`` for MUSDB's test set).

    Raises:
        BadRequest: ``root`` does not exist, or holds no track.
    """
    root = Path(root)
    if not root.exists():
        raise BadRequest(f"dataset {root} does not exist")
    if is_stem_file(root):
        return [Track(_stem_file_name(root), root)]
    if is_track_folder(root):
        return [Track(root.name, root)]
    tracks: list[Track] = []
    _walk(root, root, 0, tracks)
    if subset is not None:
        prefix = subset.strip("/")
        tracks = [t for t in tracks if t.subset == prefix or t.subset.startswith(prefix + "/")]
    if not tracks:
        where = f"{root} (subset {subset!r})" if subset is not None else str(root)
        raise BadRequest(
            f"no tracks in {where}: a track is a folder with mixture.<ext> and one file per "
            "stem, or a .stem.mp4 file"
        )
    return sorted(tracks, key=lambda t: t.key)


def _walk(root: Path, folder: Path, depth: int, out: list[Track]) -> None:
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise BadRequest(f"cannot list {folder}: {e}") from e
    subset = folder.relative_to(root).as_posix()
    subset = "" if subset == "." else subset
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if is_stem_file(entry):
            out.append(Track(_stem_file_name(entry), entry, subset))
        elif is_track_folder(entry):
            out.append(Track(entry.name, entry, subset))
        elif entry.is_dir() and depth < _MAX_DEPTH:
            _walk(root, entry, depth + 1, out)


def _stem_file_name(path: Path) -> str:
    lower = path.name.lower()
    for suffix in STEM_FILE_SUFFIXES:
        if lower.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def audio_files(folder: Path) -> dict[str, Path]:
    """Audio files of a folder by lower-cased name without extension (``Vocals.WAV`` ->
    ``vocals``); hidden files (DSU's ``.<name>.partial-*`` temp files) and stem files skipped.
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() in AUDIO_SUFFIXES and not is_stem_file(path):
            found.setdefault(path.stem.lower(), path)
    return found


def _conform(
    stems: dict[str, np.ndarray],
    mixture: np.ndarray,
    samplerate: int,
    files: dict[str, Path] | None = None,
) -> dict[str, np.ndarray]:
    """Stems with the mixture's channel count and length."""
    channels, length = mixture.shape
    out: dict[str, np.ndarray] = {}
    for name, data in stems.items():
        where = files[name] if files else name
        if data.shape[0] != channels:
            if data.shape[0] != 1:
                raise BadAudio(
                    where, f"has {data.shape[0]} channels but the mixture has {channels}"
                )
            data = np.repeat(data, channels, axis=0)
        if abs(data.shape[1] - length) > MAX_LENGTH_MISMATCH_S * samplerate:
            raise BadAudio(
                where,
                f"is {data.shape[1] / samplerate:.2f} s long but the mixture is "
                f"{length / samplerate:.2f} s",
            )
        if data.shape[1] >= length:
            data = data[:, :length]
        else:
            data = np.pad(data, ((0, 0), (0, length - data.shape[1])))
        out[name] = np.ascontiguousarray(data, dtype=np.float32)
    return out
