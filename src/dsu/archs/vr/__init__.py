"""UVR's VR architecture (``arch: vr``): v5 cascaded ASPP nets and v5.1 ``CascadedNet``.

A model is one ``.pth`` state dict. What it needs beside its weights — its band
parameters and primary stem — comes from the entry's ``options`` in ``models.json``
(``vr_model_param``, ``primary_stem``, and for v5.1 ``nout``/``nout_lstm``) or else from
UVR's hash-keyed model data shipped with DSU (``model_data.json``, keyed by the MD5 of the
checkpoint's last 10,000 KiB). The network variant and its widths come from the
checkpoint's own tensors, never from its file size.

UVR's settings are entry options or :func:`load` keywords, with audio-separator's names
and defaults: ``window_size`` 512, ``aggression`` 5, ``tta`` off, ``post_process`` off
(threshold 0.2), ``high_end_process`` off. Stems are the primary stem then the secondary
one, lower-cased with ``_`` for spaces (``instrumental``, ``vocals``; ``no_echo``, ``echo``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from dsu.archs.msst import load_strict
from dsu.archs.vr.cascaded import CascadedNet, v51_widths
from dsu.archs.vr.model import (
    DEFAULT_AGGRESSION,
    DEFAULT_POST_PROCESS_THRESHOLD,
    DEFAULT_WINDOW_SIZE,
    VrModel,
    VrOptions,
)
from dsu.archs.vr.nets import CascadedASPPNet, v5_shape
from dsu.archs.vr.params import (
    MODEL_DATA_KEYS,
    NON_ACCOMPANIMENT_STEMS,
    ModelData,
    load_params,
    shipped_model_data,
    shipped_params,
    uvr_hash,
)
from dsu.errors import BadRequest, RegistryError
from dsu.registry.checkpoint import read_torch
from dsu.registry.entry import ModelEntry

__all__ = ["CascadedASPPNet", "CascadedNet", "VrModel", "VrOptions", "load", "stem_name"]

V5_KEY = "stg1_low_band_net.enc1.conv1.conv.0.weight"
V51_KEY = "stg1_low_band_net.0.enc1.conv.0.weight"
"""A tensor only a v5 / only a v5.1 checkpoint has."""

SETTING_KEYS: frozenset[str] = frozenset(
    {
        "window_size",
        "aggression",
        "tta",
        "post_process",
        "post_process_threshold",
        "high_end_process",
    }
)
"""``models.json`` options that are UVR settings rather than model data."""


def stem_name(uvr_stem: str) -> str:
    """DSU's name of a UVR stem: ``"No Echo"`` -> ``"no_echo"``."""
    return uvr_stem.strip().lower().replace(" ", "_")


def model_data(entry: ModelEntry) -> ModelData:
    """The entry's model data: its ``options`` when they name ``vr_model_param``, else the
    shipped table's record for the checkpoint's UVR hash.

    Raises:
        RegistryError: neither has it; the message says what to add to ``models.json``.
    """
    given = {k: v for k, v in entry.options.items() if k in MODEL_DATA_KEYS}
    if "vr_model_param" in given:
        return ModelData.from_dict(given, f"{entry.name} (models.json options)")
    digest = uvr_hash(entry.weights[0])
    record = shipped_model_data().get(digest)
    if record is None:
        raise RegistryError(
            f"{entry.name}: no VR model data for {entry.weights[0].name} (UVR hash {digest}). "
            'Add it to the entry in models.json: "options": {"vr_model_param": "<band '
            'parameters>", "primary_stem": "Vocals" or "Instrumental" or ...} (and "nout", '
            '"nout_lstm" for a v5.1 model), with the band parameters one of '
            f"{', '.join(shipped_params())}"
        )
    return ModelData.from_dict(record, f"VR model data {digest}")


def _options(entry: ModelEntry, overrides: Mapping[str, Any]) -> VrOptions:
    raw = {k: v for k, v in entry.options.items() if k in SETTING_KEYS}
    raw.update({k: v for k, v in overrides.items() if k in SETTING_KEYS and v is not None})
    window = raw.get("window_size", DEFAULT_WINDOW_SIZE)
    aggression = raw.get("aggression", DEFAULT_AGGRESSION)
    threshold = raw.get("post_process_threshold", DEFAULT_POST_PROCESS_THRESHOLD)
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0 or window % 16:
        raise BadRequest(
            f"{entry.name}: window_size must be a positive multiple of 16 (UVR: "
            f"320, 512 or 1024), got {window!r}"
        )
    if (
        isinstance(aggression, bool)
        or not isinstance(aggression, int)
        or not (-100 <= aggression <= 100)
    ):
        raise BadRequest(
            f"{entry.name}: aggression must be an integer in -100..100, got {aggression!r}"
        )
    if not isinstance(threshold, int | float) or not 0 < threshold < 1:
        raise BadRequest(
            f"{entry.name}: post_process_threshold must lie in (0, 1), got {threshold!r}"
        )
    return VrOptions(
        window_size=window,
        aggression=aggression,
        tta=bool(raw.get("tta", False)),
        post_process=bool(raw.get("post_process", False)),
        post_process_threshold=float(threshold),
        high_end_process=bool(raw.get("high_end_process", False)),
    )


def build_net(
    state: Mapping[str, torch.Tensor], bins: int, data: ModelData, source: str
) -> tuple[torch.nn.Module, bool]:
    """The network a state dict holds and whether it is v5.1, from its tensors.

    Raises:
        RegistryError: not a VR checkpoint, or its widths contradict the model data or the
            band parameters.
    """
    if V51_KEY in state:
        nout, nout_lstm = v51_widths(state)
        if (data.nout, data.nout_lstm) not in ((None, None), (nout, nout_lstm)):
            raise RegistryError(
                f"{source}: the model data says nout={data.nout}, nout_lstm={data.nout_lstm} "
                f"but the checkpoint holds nout={nout}, nout_lstm={nout_lstm}; fix the entry"
            )
        lstm_in = state["stg3_full_band_net.lstm_dec2.lstm.weight_ih_l0"].shape[1]
        if lstm_in != bins // 2:
            raise RegistryError(
                f"{source}: this v5.1 checkpoint needs band parameters with bins = "
                f"{lstm_in * 2}, not {bins} ({data.vr_model_param}); fix vr_model_param"
            )
        return CascadedNet(bins, nout, nout_lstm), True
    if V5_KEY in state:
        return CascadedASPPNet(bins, v5_shape(state)), False
    raise RegistryError(
        f"{source}: not a UVR VR checkpoint (neither a v5 nets nor a v5.1 CascadedNet "
        "state dict); check the file and the entry's arch"
    )


def load(entry: ModelEntry, *, tta: bool | None = None, **options: Any) -> VrModel:
    """Build a VR model from a registry entry, on the CPU, in fp32.

    Args:
        entry: one ``.pth`` state dict; ``options`` may carry the model data and settings.
        tta: UVR's test-time augmentation; overrides ``entry.options["tta"]``.
        **options: ``window_size``, ``aggression``, ``post_process``,
            ``post_process_threshold``, ``high_end_process`` override the entry's; other
            keys are meant for other families and ignored.

    Raises:
        RegistryError: not one weights file; no model data; a checkpoint that does not fit.
        BadRequest: a setting out of range.
    """
    if len(entry.weights) != 1:
        raise RegistryError(
            f"{entry.name}: a VR model has exactly one .pth file, got {len(entry.weights)}"
        )
    path = entry.weights[0]
    data = model_data(entry)
    params = load_params(data.vr_model_param)
    settings = _options(entry, {**options, "tta": tta})
    state = read_torch(path)
    if not isinstance(state, Mapping):
        raise RegistryError(f"{path}: a VR checkpoint is a state dict, got {type(state).__name__}")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    net, v51 = build_net(state, params.bins, data, str(path))
    load_strict(net, state, path)
    stems = (stem_name(data.primary_stem), stem_name(data.secondary_stem))
    if entry.stems and sorted(s.lower() for s in entry.stems) != sorted(stems):
        raise RegistryError(
            f"{entry.name}: models.json lists stems {list(entry.stems)} but the model data "
            f"gives {list(stems)}; fix the entry's 'stems'"
        )
    try:
        return VrModel(
            net,
            params,
            v51,
            stems,
            invert_aggression=data.primary_stem in NON_ACCOMPANIMENT_STEMS,
            options=settings,
        )
    except ValueError as exc:
        raise BadRequest(f"{entry.name}: {exc}") from None
