"""BS-RoFormer (Lu et al., 2023, "Music Source Separation with Band-Split RoPE
Transformer", arXiv:2309.02612).

The spectrum is cut into contiguous, disjoint bands of ``freqs_per_bands`` bins; each
band becomes one token per frame; time and frequency transformers alternate over the
``[T, bands]`` token grid; each stem's mask estimator turns the tokens back into a
complex mask per bin. With ``use_pope`` the rotary positions are replaced by PoPE
("BS PolarFormer"); with ``use_shared_bias`` all attention layers share one pair of
projection biases (the "SW" and "Logic" checkpoints).

State dict: exactly MSST's / UVR's ``BSRoformer`` (``layers.<i>.<j>.layers.<k>...``,
``final_norm``, ``band_split.to_features.<b>``, ``mask_estimators.<s>.to_freqs.<b>``).
"""

from __future__ import annotations

from itertools import accumulate, pairwise

from dsu.archs.roformer.config import BSRoformerConfig
from dsu.archs.roformer.core import BandRoformer


class BSRoformer(BandRoformer):
    """BS-RoFormer.

    Shapes: ``forward(raw_audio [B, C, L]) -> [B, N, C, L]`` (``[B, C, L]`` for one
    stem), ``C = 2`` when ``stereo`` else 1.
    """

    def __init__(self, config: BSRoformerConfig) -> None:
        if sum(config.freqs_per_bands) != config.freq_bins:
            raise ValueError(
                f"freqs_per_bands covers {sum(config.freqs_per_bands)} bins, "
                f"the STFT has {config.freq_bins}"
            )
        starts = [0, *accumulate(config.freqs_per_bands)]
        bands = [range(start, end) for start, end in pairwise(starts)]
        super().__init__(
            config, bands, norm_output=False, final_norm=True, shared_bias=config.use_shared_bias
        )
