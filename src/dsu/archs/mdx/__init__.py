"""UVR's MDX-Net models (``arch: mdx``): ``.onnx`` graphs run through ONNX Runtime.

A model is one ``.onnx`` file. Its parameters (FFT size, bins, frames, ``compensate``,
primary stem) are found as UVR finds them: ``models.json`` may give them in the entry's
``"options": {"model_data": {...}}`` (UVR's key names, as ``dsu models scan`` writes them);
otherwise the file's UVR hash (:func:`dsu.registry.scan.uvr_hash`) keys the table of UVR's
models shipped with DSU (:mod:`dsu.archs.mdx.params`). Stems are ``[primary, secondary]``:
``vocals``/``instrumental``, or ``X``/``no_X``.

Entry options: ``model_data`` (above) and ``denoise`` (run the network on the negated
spectrogram too and average, UVR's "denoise"; default off).
"""

from __future__ import annotations

from typing import Any

from dsu.archs.mdx.model import MdxModel
from dsu.archs.mdx.onnx_runtime import OnnxNet, import_onnxruntime
from dsu.archs.mdx.params import REQUIRED_KEYS, MdxParams, shipped_model_data, stem_name
from dsu.errors import RegistryError
from dsu.registry.entry import ModelEntry
from dsu.registry.scan import uvr_hash

__all__ = ["MdxModel", "MdxParams", "OnnxNet", "find_params", "load"]

ONNX_SUFFIX = ".onnx"


def find_params(entry: ModelEntry) -> MdxParams:
    """The entry's MDX-Net parameters: its ``options.model_data``, else the shipped table
    entry for its file's UVR hash.

    Raises:
        RegistryError: the parameters are malformed (the key named), or neither place
            knows the file (the message says how to give them).
    """
    raw = entry.options.get("model_data")
    if raw is not None:
        where = f"models.json: models.{entry.name}.options.model_data"
        return MdxParams.from_model_data(raw, where)
    path = entry.weights[0]
    digest = uvr_hash(path)
    known = shipped_model_data().get(digest)
    if known is None:
        example = ", ".join(f'"{key}": ...' for key in REQUIRED_KEYS)
        raise RegistryError(
            f"{path}: no MDX-Net parameters for this file (UVR hash {digest}): DSU's table of "
            "UVR models does not know it and its models.json entry gives none; add them to "
            f'the entry as "options": {{"model_data": {{{example}, "primary_stem": "Vocals"}}}} '
            "(UVR's model data keys), or put UVR's model_data.json beside it and run "
            "'dsu models scan'"
        )
    return MdxParams.from_model_data(known, f"DSU's UVR model data, hash {digest}")


def load(entry: ModelEntry, *, denoise: bool | None = None, **_: Any) -> MdxModel:
    """Build an MDX-Net model from a registry entry, on the CPU provider.

    Args:
        entry: one ``.onnx`` file; parameters as :func:`find_params` finds them.
        denoise: UVR's denoise; overrides ``entry.options["denoise"]`` (default off).
        **_: options meant for other families (the family table passes the same to all).

    Raises:
        UnsupportedModel: onnxruntime is not installed.
        RegistryError: not one ``.onnx`` file; parameters missing or malformed; a graph
            whose input does not fit them; stems that differ from the entry's.
        CorruptCheckpoint: the file is missing or not a readable ONNX model.
    """
    import_onnxruntime()
    if len(entry.weights) != 1 or entry.weights[0].suffix.lower() != ONNX_SUFFIX:
        raise RegistryError(
            f"{entry.name}: an MDX-Net model is exactly one {ONNX_SUFFIX} file, got "
            f"{[path.name for path in entry.weights]}"
        )
    params = find_params(entry)
    net = OnnxNet(entry.weights[0])
    _check_graph(net, params)
    if denoise is None:
        denoise = entry.options.get("denoise", False)
    if not isinstance(denoise, bool):
        raise RegistryError(
            f"models.json: models.{entry.name}.options.denoise must be true or false, "
            f"got {denoise!r}"
        )
    model = MdxModel(net, params, denoise=denoise)
    if entry.stems and [stem_name(name) for name in entry.stems] != model.stems:
        raise RegistryError(
            f"{entry.name}: models.json lists stems {list(entry.stems)} but its model data "
            f"(primary stem {params.primary_stem!r}) gives {model.stems}; fix the entry's "
            "'stems'"
        )
    return model


def _check_graph(net: OnnxNet, params: MdxParams) -> None:
    """The graph's fixed input dimensions must be the ones its parameters give."""
    _, planes, bins, frames = net.input_shape
    for what, found, wanted in (
        ("spectrogram planes", planes, 4),
        ("frequency bins (mdx_dim_f_set)", bins, params.dim_f),
        ("frames (2 ** mdx_dim_t_set)", frames, params.dim_t),
    ):
        if found is not None and found != wanted:
            raise RegistryError(
                f"{net.path}: the ONNX graph takes {found} {what} where its model data gives "
                f"{wanted}; are these the parameters of this file?"
            )
