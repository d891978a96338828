"""audio-separator 0.47.1's RoFormer separation (``MDXCSeparator.demix``) on an array.

Its ``demix`` is called as audio-separator runs it, without the file I/O set-up of
``Separator`` (which downloads models): the attributes ``demix`` reads are set by hand.
Shared by the framing parity test and ``bench/bench_roformer.py``.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import torch
from ml_collections import ConfigDict

with warnings.catch_warnings():
    # rotary_embedding_torch decorates with the deprecated torch.cuda.amp.autocast.
    warnings.simplefilter("ignore", FutureWarning)
    from audio_separator.separator.architectures.mdxc_separator import MDXCSeparator


def uvr_demix(
    config: dict[str, Any], net: torch.nn.Module, mix: np.ndarray, num_overlap: int
) -> np.ndarray:
    """The target stem ``[C, T]`` audio-separator's RoFormer path returns for ``mix``.

    Args:
        config: the MSST YAML as a dict; ``inference.dim_t`` sets the chunk
            (``stft_hop_length * (dim_t - 1)`` samples) and ``training.target_instrument``
            must be set.
        net: audio-separator's own RoFormer with the weights loaded.
        num_overlap: audio-separator's ``overlap`` (chunks covering each sample).
    """
    separator = object.__new__(MDXCSeparator)
    separator.logger = logging.getLogger("audio-separator")
    separator.override_model_segment_size = False
    separator.pitch_shift = 0
    separator.is_roformer = True
    separator.model_data_cfgdict = ConfigDict(config)
    separator.overlap = num_overlap
    separator.model_run = net
    separator.is_primary_stem_main_target = False
    with torch.inference_mode():
        return np.asarray(separator.demix(mix))
