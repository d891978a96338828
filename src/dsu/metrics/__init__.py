"""Separation quality metrics: plain SDR, SI-SDR and museval-compatible BSSEval v4.

All functions take stems as ``[S, C, T]`` arrays (``[C, T]`` for one stem) in the
DSU channel-first layout, not museval's ``[S, T, C]``.
"""

from __future__ import annotations

from dsu.metrics.bsseval import BSSEvalScores, bss_eval, museval_scores
from dsu.metrics.sdr import sdr, si_sdr

__all__ = ["BSSEvalScores", "bss_eval", "museval_scores", "sdr", "si_sdr"]
