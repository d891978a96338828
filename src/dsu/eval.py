"""Evaluation: separate every track of a dataset (or read saved estimates) and score it.

Metric sets (``metric=``):

- ``sdr``: plain SDR (MDX challenge / MSST) and SI-SDR over the whole track;
- ``museval``: BSSEval v4 as museval/SiSEC report it, the median over 1 s windows of
  SDR, SIR, ISR and SAR;
- ``all``: both.

Which reference an estimated stem is scored against: the reference of the same name;
else, for ``accompaniment``, ``instrumental``, ``no_vocals`` (a vocals model's other
stem), the sum of every reference except ``vocals``; more generally ``no_<stem>``
against the sum of every reference except ``<stem>`` (what ``--two-stems`` writes).
Stems with no reference (``hpss``'s ``harmonic``) are listed as skipped.

BSSEval scores the stems of a track jointly (SIR and SAR depend on which references are
in the set), following museval's ``eval_mus_track``: when both ``vocals`` and an
accompaniment stem are scored, that pair is evaluated on its own and the other stems
together; a stem scored alone has no interference, so its SIR is infinite (``null`` in
JSON). A reference or estimate that is silent throughout is left out of the joint set
and gets no BSSEval score (museval refuses such input).

Aggregates per model and stem are the median and the mean over tracks (SiSEC reports
the median of the per-track medians; MSST the mean of plain SDR).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dsu.datasets import MIXTURE, Track, TrackAudio, audio_files, is_stem_file
from dsu.errors import BadAudio, BadRequest, DSUError
from dsu.metrics import museval_scores, sdr, si_sdr

if TYPE_CHECKING:
    from dsu.api import Separator

METRICS = ("sdr", "museval", "all")
ACCOMPANIMENT_STEMS = ("accompaniment", "instrumental", "no_vocals")
BSSEVAL_NAMES = ("SDR", "SIR", "ISR", "SAR")

Scores = dict[str, Any]
"""One stem's scores: ``sdr``, ``si_sdr`` (floats) and/or ``museval`` ({SDR, SIR, ISR, SAR})."""


def reference_for(stem: str, references: dict[str, np.ndarray]) -> np.ndarray | None:
    """The reference an estimated ``stem`` is scored against, or None (see module doc).

    Args:
        stem: an estimate's stem name.
        references: the track's true stems, ``[C, T]`` each.
    """
    if stem in references:
        return references[stem]
    left_out = "vocals" if stem in ACCOMPANIMENT_STEMS else None
    if stem.startswith("no_"):
        left_out = stem[3:]
    if left_out is None or left_out not in references:
        return None
    parts = [
        data
        for name, data in references.items()
        if name != left_out and name not in ACCOMPANIMENT_STEMS and not name.startswith("no_")
    ]
    return np.sum(parts, axis=0, dtype=np.float32) if parts else None


def score_track(
    estimates: dict[str, np.ndarray],
    references: dict[str, np.ndarray],
    samplerate: int,
    metric: str = "sdr",
    stems: Sequence[str] | None = None,
) -> tuple[dict[str, Scores], list[str]]:
    """Score one track's estimates against its references.

    Args:
        estimates: stem -> ``[C, T']`` (cut or zero-padded to the reference's length).
        references: stem -> ``[C, T]`` true stems.
        samplerate: Hz, of both.
        metric: ``sdr``, ``museval`` or ``all``.
        stems: score only these stems (default every estimate).

    Returns:
        ``({stem: scores}, skipped stems that have no reference)``.
    """
    if metric not in METRICS:
        raise BadRequest(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    names = [s for s in estimates if stems is None or s in stems]
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    skipped: list[str] = []
    for name in names:
        ref = reference_for(name, references)
        if ref is None:
            skipped.append(name)
            continue
        pairs[name] = (ref, _fit(estimates[name], ref, name))
    scores: dict[str, Scores] = {name: {} for name in pairs}
    if metric in ("sdr", "all"):
        for name, (ref, est) in pairs.items():
            scores[name]["sdr"] = _finite(sdr(ref, est))
            scores[name]["si_sdr"] = _finite(si_sdr(ref, est))
    if metric in ("museval", "all"):
        for name in pairs:
            scores[name]["museval"] = None
        for group in _bsseval_groups(pairs):
            refs = np.stack([pairs[n][0] for n in group])
            ests = np.stack([pairs[n][1] for n in group])
            medians = museval_scores(refs, ests, samplerate)
            for i, name in enumerate(group):
                scores[name]["museval"] = {k: _finite(medians[k][i]) for k in BSSEVAL_NAMES}
    return scores, skipped


@dataclass
class TrackResult:
    """One track scored for one model (or one estimates folder)."""

    key: str
    path: Path
    seconds: float = 0.0
    separation_s: float | None = None
    scores: dict[str, Scores] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": str(self.path), "seconds": round(self.seconds, 3)}
        if self.separation_s is not None:
            out["separation_s"] = round(self.separation_s, 3)
        if self.error is not None:
            out["error"] = self.error
        out["stems"] = self.scores
        return out


@dataclass
class ModelReport:
    """Every track's scores for one model, and their aggregates."""

    name: str
    stems: list[str] = field(default_factory=list)
    tracks: list[TrackResult] = field(default_factory=list)
    skipped_stems: list[str] = field(default_factory=list)

    def scored_stems(self) -> list[str]:
        seen: dict[str, None] = {}
        for track in self.tracks:
            seen.update(dict.fromkeys(track.scores))
        return list(seen)

    def aggregate(self, how: Callable[[list[float]], float]) -> dict[str, Scores]:
        """Per stem, ``how`` over the tracks of every score (tracks without it ignored)."""
        out: dict[str, Scores] = {}
        for stem in self.scored_stems():
            per_track = [t.scores[stem] for t in self.tracks if stem in t.scores]
            entry: Scores = {}
            for key in ("sdr", "si_sdr"):
                values = [s[key] for s in per_track if s.get(key) is not None]
                if values:
                    entry[key] = round(how(values), 4)
            bss = [s["museval"] for s in per_track if s.get("museval")]
            if bss:
                entry["museval"] = {}
                for k in BSSEVAL_NAMES:
                    values = [b[k] for b in bss if b.get(k) is not None]
                    entry["museval"][k] = round(how(values), 4) if values else None
            out[stem] = entry
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "stems": self.stems,
            "skipped_stems": self.skipped_stems,
            "tracks": {t.key: t.to_json() for t in self.tracks},
            "median": self.aggregate(lambda v: float(np.median(v))),
            "mean": self.aggregate(lambda v: float(np.mean(v))),
        }


Progress = Callable[[str, ModelReport, TrackResult, int, int], None]
"""``(phase, report, track result, index, total)``; phase ``start`` or ``done``."""


def evaluate_models(
    separators: Sequence[Separator],
    tracks: Sequence[Track],
    *,
    metric: str = "sdr",
    stems: Sequence[str] | None = None,
    save_estimates: Path | None = None,
    on_track: Progress | None = None,
) -> list[ModelReport]:
    """Separate every track with every model and score the stems.

    Each track is decoded once and separated by every model in turn, so comparing
    models costs one decode per track.

    Args:
        separators: the models, each already configured (device, overlap, ...).
        tracks: from :func:`dsu.datasets.find_tracks`.
        metric: ``sdr``, ``museval`` or ``all``.
        stems: score only these stems (default every stem a reference exists for).
        save_estimates: also write each model's stems as float wav to
            ``<dir>/<model>/<track key>/<stem>.wav`` (the layout ``--estimates`` reads).
        on_track: progress callback.
    """
    reports = [ModelReport(s.name, list(s.stems)) for s in separators]
    for index, track in enumerate(tracks):
        audio: TrackAudio | None = None
        load_error: str | None = None
        try:
            audio = track.load()
        except DSUError as e:
            load_error = e.message
        for separator, report in zip(separators, reports, strict=True):
            result = TrackResult(track.key, track.path)
            report.tracks.append(result)
            if on_track:
                on_track("start", report, result, index, len(tracks))
            if audio is None:
                result.error = load_error
            else:
                estimates = _separate_and_score(separator, audio, result, report, metric, stems)
                if save_estimates is not None and estimates is not None:
                    _save(save_estimates / report.name / track.key, estimates, audio.samplerate)
            if on_track:
                on_track("done", report, result, index, len(tracks))
    return reports


def _separate_and_score(
    separator: Separator,
    audio: TrackAudio,
    result: TrackResult,
    report: ModelReport,
    metric: str,
    stems: Sequence[str] | None,
) -> dict[str, np.ndarray] | None:
    """Fill ``result``; returns the estimated stems, or None when the track failed."""
    result.seconds = audio.mixture.shape[1] / audio.samplerate
    try:
        started = time.perf_counter()
        separated = separator.separate(audio.mixture, audio.samplerate)
        result.separation_s = time.perf_counter() - started
        assert separated.stems is not None
        result.scores, skipped = score_track(
            separated.stems, audio.stems, audio.samplerate, metric, stems
        )
    except DSUError as e:
        result.error = e.message
        return None
    for name in skipped:
        if name not in report.skipped_stems:
            report.skipped_stems.append(name)
    return separated.stems


def _save(directory: Path, estimates: dict[str, np.ndarray], samplerate: int) -> None:
    """Float wav per stem, the layout :func:`find_estimates` reads back."""
    from dsu import audio

    for name, data in estimates.items():
        audio.write(directory / f"{name}.wav", data, samplerate, "wav", bit_depth=32)


def evaluate_estimates(
    estimates_root: Path,
    tracks: Sequence[Track],
    *,
    metric: str = "sdr",
    stems: Sequence[str] | None = None,
    name: str | None = None,
    on_track: Progress | None = None,
) -> ModelReport:
    """Score saved estimates against the tracks' references.

    Estimates of a track are found at ``<root>/<track key>/`` or ``<root>/<track name>/``
    (a folder of ``<stem>.<ext>`` files) or ``<root>/<key or name>.stem.mp4``; when the
    references are a single track, ``<root>`` itself may hold the stem files.
    """
    estimates_root = Path(estimates_root)
    if not estimates_root.is_dir():
        raise BadRequest(f"estimates folder {estimates_root} does not exist")
    report = ModelReport(name or estimates_root.name)
    for index, track in enumerate(tracks):
        result = TrackResult(track.key, track.path)
        report.tracks.append(result)
        if on_track:
            on_track("start", report, result, index, len(tracks))
        try:
            location = find_estimates(estimates_root, track, single=len(tracks) == 1)
            if location is None:
                raise BadRequest(f"no estimates for {track.key} under {estimates_root}")
            audio = track.load()
            result.seconds = audio.mixture.shape[1] / audio.samplerate
            estimates = load_estimates(location, audio.samplerate)
            result.scores, skipped = score_track(
                estimates, audio.stems, audio.samplerate, metric, stems
            )
            for stem in estimates:
                if stem not in report.stems:
                    report.stems.append(stem)
            report.skipped_stems.extend(s for s in skipped if s not in report.skipped_stems)
        except DSUError as e:
            result.error = e.message
        if on_track:
            on_track("done", report, result, index, len(tracks))
    return report


def find_estimates(root: Path, track: Track, *, single: bool = False) -> Path | None:
    """Where ``track``'s estimates lie under ``root`` (see :func:`evaluate_estimates`)."""
    candidates = [root / track.key, root / track.name]
    for base in (track.key, track.name):
        candidates += [root / f"{base}{suffix}" for suffix in (".stem.mp4", ".stem.m4a")]
    if single:
        candidates.append(root)
    for candidate in candidates:
        if is_stem_file(candidate) or (candidate.is_dir() and _stem_files(candidate)):
            return candidate
    return None


def load_estimates(location: Path, samplerate: int) -> dict[str, np.ndarray]:
    """Estimated stems from a folder of ``<stem>.<ext>`` or a ``.stem.mp4``, at ``samplerate``."""
    from dsu import audio

    if is_stem_file(location):
        from dsu.audio.stems_mp4 import read_stem_mp4

        streams, rate = read_stem_mp4(location)
        streams.pop("mixture")
        loaded = {name: (data, rate) for name, data in streams.items()}
    else:
        loaded = {name: audio.read(path) for name, path in _stem_files(location).items()}
    return {name: audio.resample(data, rate, samplerate) for name, (data, rate) in loaded.items()}


def _stem_files(folder: Path) -> dict[str, Path]:
    return {name: path for name, path in audio_files(folder).items() if name != MIXTURE}


def _fit(estimate: np.ndarray, reference: np.ndarray, name: str) -> np.ndarray:
    """The estimate with the reference's channels (mono repeated) and length (cut/padded)."""
    est = np.asarray(estimate, dtype=np.float32)
    if est.ndim == 1:
        est = est[None]
    channels, length = reference.shape
    if est.shape[0] != channels:
        if est.shape[0] != 1:
            raise BadAudio(name, f"estimate has {est.shape[0]} channels, reference {channels}")
        est = np.repeat(est, channels, axis=0)
    if est.shape[1] >= length:
        return est[:, :length]
    return np.pad(est, ((0, 0), (0, length - est.shape[1])))


def _silent(x: np.ndarray) -> bool:
    """museval's test: the channel sum is zero at every sample."""
    return not np.any(x.sum(axis=0))


def _bsseval_groups(pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[list[str]]:
    """Stem sets scored jointly, as museval's ``eval_mus_track`` forms them."""
    names = [n for n, (ref, est) in pairs.items() if not (_silent(ref) or _silent(est))]
    accompaniment = next((n for n in names if n in ACCOMPANIMENT_STEMS), None)
    if accompaniment is None or "vocals" not in names:
        return [names] if names else []
    rest = [n for n in names if n != accompaniment and n not in ACCOMPANIMENT_STEMS]
    groups = [["vocals", accompaniment]]
    if len(rest) > 1:
        # vocals stays in the set as museval keeps it, its score comes from the pair
        groups.insert(0, rest)
    return groups


def _finite(value: float | np.floating) -> float | None:
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None


def format_table(reports: Iterable[ModelReport], metric: str) -> str:
    """Per-track and median SDR per stem, one block per metric, as aligned text."""
    reports = list(reports)
    stems: dict[str, None] = {}
    for report in reports:
        stems.update(dict.fromkeys(report.scored_stems()))
    columns = list(stems)
    views: list[tuple[str, Callable[[Scores], float | None]]] = []
    if metric in ("sdr", "all"):
        views.append(("SDR (dB, whole track)", lambda s: s.get("sdr")))
    if metric in ("museval", "all"):
        views.append(
            (
                "museval SDR (dB, median of 1 s windows)",
                lambda s: (s.get("museval") or {}).get("SDR"),
            )
        )
    key_width = max([len(t.key) for r in reports for t in r.tracks] + [len("median")])
    model_width = max([len(r.name) for r in reports] + [len("model")])
    widths = [max(len(c), 7) for c in columns]

    def row(key: str, model: str, cells: list[str]) -> str:
        return f"{key:<{key_width}}  {model:<{model_width}}" + "".join(
            f"  {c:>{w}}" for c, w in zip(cells, widths, strict=True)
        )

    blocks = []
    for title, pick in views:
        lines = [title, row("track", "model", columns)]
        rows = []
        for report in reports:
            for t in report.tracks:
                cells = [
                    "error" if t.error else _cell(pick(t.scores[c]) if c in t.scores else None)
                    for c in columns
                ]
                rows.append(row(t.key, report.name, cells))
        lines += sorted(rows)
        for report in reports:
            med = report.aggregate(lambda v: float(np.median(v)))
            lines.append(
                row(
                    "median",
                    report.name,
                    [_cell(pick(med[c]) if c in med else None) for c in columns],
                )
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
