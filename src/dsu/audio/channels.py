"""Fitting a signal's channel count to what a model takes (mono or stereo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsu.errors import BadAudio


def conform_channels(
    x: np.ndarray, channels: int, *, downmix: bool, path: str | Path = "<array>"
) -> np.ndarray:
    """``[C_in, n]`` -> ``[channels, n]`` float32.

    - ``C_in == channels``: returned unchanged (the same array);
    - mono input: the channel is repeated;
    - to mono: the mean of all channels (more than two only with ``downmix``);
    - more than two channels to stereo, only with ``downmix``: left is the mean of the
      even-indexed channels, right the mean of the odd-indexed ones (for the usual
      L, R, C, LFE, Ls, Rs ... orders, that keeps each side's channels on its side).

    Anything else raises BadAudio naming ``path``: silently folding surround into stereo
    changes the mix a model sees, so the user has to ask for it.
    """
    if x.ndim != 2:
        raise ValueError(f"expected a [channels, frames] array, got shape {x.shape}")
    if channels <= 0:
        raise ValueError(f"channels must be positive, got {channels}")
    have = x.shape[0]
    if have == channels:
        return x
    if have == 1:
        return np.repeat(x, channels, axis=0).astype(np.float32, copy=False)
    if channels > 2:
        raise BadAudio(path, f"has {have} channels; the model takes {channels} channels")
    if have > 2 and not downmix:
        target = "mono" if channels == 1 else "stereo"
        raise BadAudio(
            path,
            f"has {have} channels; DSU separates mono or stereo: "
            f"pass --downmix to mix it down to {target}",
        )
    if channels == 1:
        return x.mean(axis=0, keepdims=True, dtype=np.float32)
    left = x[0::2].mean(axis=0, dtype=np.float32)
    right = x[1::2].mean(axis=0, dtype=np.float32)
    return np.stack([left, right])
