"""Audio I/O: decode any common format, resample, fit channels, encode stems atomically.

Import-light on purpose (numpy, soundfile and soxr; PyAV only when a file needs FFmpeg;
never torch), so the worker and the CLI can probe inputs before any model loads.
"""

from __future__ import annotations

from dsu.audio.channels import conform_channels
from dsu.audio.decode import AudioInfo, AudioReader, probe, read, read_ahead
from dsu.audio.encode import AudioWriter, write
from dsu.audio.formats import OUTPUT_FORMATS, extension_for
from dsu.audio.resample import Resampler, resample

__all__ = [
    "OUTPUT_FORMATS",
    "AudioInfo",
    "AudioReader",
    "AudioWriter",
    "Resampler",
    "conform_channels",
    "extension_for",
    "probe",
    "read",
    "read_ahead",
    "resample",
    "write",
]
