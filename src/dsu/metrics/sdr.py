"""Whole-signal SDR and SI-SDR, one number per stem over all its channels.

``sdr`` is the MDX-challenge definition that MSST (``utils/metrics.py``) and Demucs
(``new_sdr``) report: ``10·log10((Σ ref² + eps) / (Σ (ref − est)² + eps))`` summed over
channels and samples. MSST uses ``eps = 1e-8`` and the MDX starter kit ``1e-7``; the choice
only shows on (near-)silent stems.

``si_sdr`` is the scale-invariant SDR (Le Roux et al., 2019) of the stem flattened over
its channels, without mean removal (as MSST computes it): the reference is scaled by the
least-squares gain ``<est, ref> / <ref, ref>`` before the ratio is taken.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-8


def _pair(references: np.ndarray, estimates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 ``[S, C, T]``; ``[T]`` and ``[C, T]`` are one stem."""
    ref = np.asarray(references, dtype=np.float64)
    est = np.asarray(estimates, dtype=np.float64)
    if ref.shape != est.shape:
        raise ValueError(f"reference {ref.shape} and estimate {est.shape} differ in shape")
    if ref.ndim == 1:
        ref, est = ref[None, None], est[None, None]
    elif ref.ndim == 2:
        ref, est = ref[None], est[None]
    elif ref.ndim != 3:
        raise ValueError(f"expected [T], [C, T] or [S, C, T] arrays, got {ref.ndim} dimensions")
    return ref, est


def sdr(references: np.ndarray, estimates: np.ndarray, eps: float = EPS) -> np.ndarray | float:
    """Plain SDR in dB.

    Args:
        references: ``[S, C, T]`` true stems (or one stem ``[C, T]`` / ``[T]``).
        estimates: same shape as ``references``.
        eps: added to both energies so silent stems give a finite number.

    Returns:
        ``[S]`` dB for ``[S, C, T]`` input, a float for a single stem.
    """
    ref, est = _pair(references, estimates)
    num = np.sum(ref**2, axis=(1, 2)) + eps
    den = np.sum((ref - est) ** 2, axis=(1, 2)) + eps
    out = 10.0 * np.log10(num / den)
    return out if np.ndim(references) == 3 else float(out[0])


def si_sdr(references: np.ndarray, estimates: np.ndarray, eps: float = EPS) -> np.ndarray | float:
    """Scale-invariant SDR in dB, per stem over all its channels.

    Args:
        references: ``[S, C, T]`` true stems (or one stem ``[C, T]`` / ``[T]``).
        estimates: same shape as ``references``.
        eps: keeps the gain and the ratio finite for silent stems.

    Returns:
        ``[S]`` dB for ``[S, C, T]`` input, a float for a single stem.
    """
    ref, est = _pair(references, estimates)
    gain = (np.sum(ref * est, axis=(1, 2)) + eps) / (np.sum(ref**2, axis=(1, 2)) + eps)
    target = gain[:, None, None] * ref
    num = np.sum(target**2, axis=(1, 2)) + eps
    den = np.sum((target - est) ** 2, axis=(1, 2)) + eps
    out = 10.0 * np.log10(num / den)
    return out if np.ndim(references) == 3 else float(out[0])
