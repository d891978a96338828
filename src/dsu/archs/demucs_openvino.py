"""HTDemucs on the CPU through OpenVINO: the network between its STFT and its iSTFT.

HTDemucs' forward pass is a spectrogram, a U-Net of two branches (spectral and temporal)
joined by a cross-domain transformer, and a masked inverse spectrogram.
:class:`HTDemucsCore` is the middle part as a module of its own, so it exports to ONNX
with fixed shapes; the STFT, the normalisation and the iSTFT stay in torch, outside the
graph. :class:`OpenVinoHTDemucs` runs the core through OpenVINO and keeps the exported
graph on disk (``compiled_cache_dir() / "openvino"``), keyed by the weights and the chunk
shape, with OpenVINO's compiled form of it beside it, so only the first run of a model
pays for the export (a few seconds).

Why: OpenVINO fuses the normalisations, GELUs and GLUs into the convolutions around them,
which eager torch runs one by one: a 7.8 s chunk of the released HTDemucs takes ~17% less
time in fp32 with 2 threads, and ~40% less in bf16, at >100 dB (fp32) against torch
(bench/bench_demucs.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
from demucs.htdemucs import HTDemucs

from dsu.engine.backends import compiled_cache_dir, import_openvino
from dsu.errors import UnsupportedModel

log = logging.getLogger(__name__)

FORMAT = 1
"""Bumped whenever :class:`HTDemucsCore` changes, so older exported graphs are not reused."""


class HTDemucsCore(torch.nn.Module):
    """HTDemucs from its normalised inputs to its un-normalised outputs (eval mode).

    ``x [B, 2C, F, T]`` (the normalised magnitude planes, complex-as-channels) and
    ``xt [B, C, L]`` (the normalised waveform) -> ``(x [B, S*2C, F, T], xt [B, S*C, L])``,
    the spectral branch's mask input and the temporal branch's output, both before the
    track statistics are put back.
    """

    def __init__(self, net: HTDemucs) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        saved, saved_t, lengths, lengths_t = [], [], [], []
        for idx, encode in enumerate(net.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if idx < len(net.tencoder):
                lengths_t.append(xt.shape[-1])
                tenc = net.tencoder[idx]
                xt = tenc(xt)
                if tenc.empty:
                    inject = xt  # the branches merge: the time branch joins the spectral one
                else:
                    saved_t.append(xt)
            x = encode(x, inject)
            if idx == 0 and net.freq_emb is not None:
                frequencies = torch.arange(x.shape[-2], device=x.device)
                emb = net.freq_emb(frequencies).t()[None, :, :, None].expand_as(x)
                x = x + net.freq_emb_scale * emb
            saved.append(x)
        if net.crosstransformer:
            if net.bottom_channels:
                b, c, f, t = x.shape
                x = net.channel_upsampler(x.reshape(b, c, f * t)).reshape(b, -1, f, t)
                xt = net.channel_upsampler_t(xt)
            x, xt = net.crosstransformer(x, xt)
            if net.bottom_channels:
                b, c, f, t = x.shape
                x = net.channel_downsampler(x.reshape(b, c, f * t)).reshape(b, -1, f, t)
                xt = net.channel_downsampler_t(xt)
        offset = net.depth - len(net.tdecoder)
        for idx, decode in enumerate(net.decoder):
            x, pre = decode(x, saved.pop(-1), lengths.pop(-1))
            if idx >= offset:
                tdec = net.tdecoder[idx - offset]
                length_t = lengths_t.pop(-1)
                if tdec.empty:
                    xt, _ = tdec(pre[:, :, 0], None, length_t)
                else:
                    xt, _ = tdec(xt, saved_t.pop(-1), length_t)
        return x, xt


def split_forward(net: HTDemucs, mix: torch.Tensor, core: Any) -> torch.Tensor:
    """``HTDemucs.forward`` (eval mode) with ``core`` for the part between the STFT and
    the mask: ``[B, C, L] -> [B, S, C, L]``.

    Args:
        core: called as ``core(x, xt)`` with :class:`HTDemucsCore`'s inputs, returns its
            outputs.
    """
    given = length = mix.shape[-1]
    if net.use_train_segment:
        # An HTDemucs always sees its training segment: a short chunk is zero-padded.
        length = int(net.segment * net.samplerate)
        if given < length:
            mix = torch.nn.functional.pad(mix, (0, length - given))
    z = net._spec(mix)
    x = net._magnitude(z)
    batch, _, bins, frames = x.shape
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True)
    meant = mix.mean(dim=(1, 2), keepdim=True)
    stdt = mix.std(dim=(1, 2), keepdim=True)
    x, xt = core((x - mean) / (1e-5 + std), (mix - meant) / (1e-5 + stdt))
    sources = len(net.sources)
    x = x.view(batch, sources, -1, bins, frames) * std[:, None] + mean[:, None]
    x = net._ispec(net._mask(z, x), length)
    xt = xt.view(batch, sources, -1, length) * stdt[:, None] + meant[:, None]
    return (xt + x)[..., :given]


def weights_key(net: HTDemucs, shape: tuple[int, ...]) -> str:
    """A digest of everything the exported graph depends on: the network's arguments and
    weights, the input shape, this module's :data:`FORMAT` and the torch and OpenVINO
    versions."""
    ov = import_openvino()
    digest = hashlib.sha256()
    digest.update(repr((FORMAT, shape, torch.__version__, ov.__version__)).encode())
    digest.update(repr(getattr(net, "_init_args_kwargs", None)).encode())
    digest.update(repr(net.segment).encode())
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(repr((tensor.dtype, tuple(tensor.shape))).encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:32]


class OpenVinoHTDemucs:
    """An HTDemucs' forward pass with its core compiled by OpenVINO, one compiled graph
    per input shape and precision (``f32``, or ``bf16`` under a CPU bf16 autocast).

    Raises (on the first call for a shape):
        UnsupportedModel: the network does not export or OpenVINO cannot compile it.
    """

    def __init__(self, net: HTDemucs) -> None:
        self.net = net
        # (input shapes, precision hint) -> (compiled model, its infer request)
        self._compiled: dict[tuple[tuple[int, ...], str], tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def __call__(self, mix: torch.Tensor) -> torch.Tensor:
        """``[B, C, L] -> [B, S, C, L]`` (CPU tensors)."""
        hint = (
            "bf16"
            if torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
            else "f32"
        )
        with torch.autocast("cpu", enabled=False):
            return split_forward(self.net, mix.float(), lambda x, xt: self._core(x, xt, hint))

    def _core(
        self, x: torch.Tensor, xt: torch.Tensor, hint: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with self._lock:
            key = (tuple(x.shape) + tuple(xt.shape), hint)
            if key not in self._compiled:
                compiled = self._compile(x, xt, hint)
                self._compiled[key] = compiled, compiled.create_infer_request()
            compiled, request = self._compiled[key]
            out = request.infer([x.numpy(), xt.numpy()])
        return torch.from_numpy(out[compiled.outputs[0]]), torch.from_numpy(
            out[compiled.outputs[1]]
        )

    def _compile(self, x: torch.Tensor, xt: torch.Tensor, hint: str) -> Any:
        ov = import_openvino()
        folder = (
            compiled_cache_dir()
            / "openvino"
            / weights_key(self.net, tuple(x.shape) + tuple(xt.shape))
        )
        config = {
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",
        }
        xml = folder / "core.xml"
        if xml.is_file():
            core = ov.Core()
            # OpenVINO keeps the compiled form beside the graph: a later run compiles in
            # ~0.4 s instead of ~1 s (htdemucs, 2 threads).
            core.set_property({"CACHE_DIR": str(folder / "compiled")})
            try:
                return core.compile_model(str(xml), "CPU", config)
            except RuntimeError as exc:
                log.warning("rebuilding the damaged OpenVINO graph in %s (%s)", folder, exc)
                shutil.rmtree(folder, ignore_errors=True)
        graph = self._export(ov, x, xt, folder)
        try:
            return ov.Core().compile_model(graph, "CPU", config)
        except RuntimeError as exc:
            raise UnsupportedModel(f"OpenVINO cannot compile this HTDemucs ({exc})") from exc

    def _export(self, ov: Any, x: torch.Tensor, xt: torch.Tensor, folder: Path) -> Any:
        """Export the core to ONNX, read it into OpenVINO and save it under ``folder``
        (written whole or not at all; a cache that cannot be written is only logged)."""
        previous = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel has no ONNX form
        with tempfile.TemporaryDirectory(prefix="dsu-openvino-") as scratch:
            onnx_path = Path(scratch) / "core.onnx"
            try:
                with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        HTDemucsCore(self.net),
                        (x.clone(), xt.clone()),
                        str(onnx_path),
                        opset_version=17,
                        dynamo=False,
                    )
                graph = ov.Core().read_model(str(onnx_path))
            except Exception as exc:  # the exporter raises many types for one cause
                raise UnsupportedModel(
                    f"this HTDemucs does not export to OpenVINO ({type(exc).__name__}: {exc}); "
                    "run it with --backend torch"
                ) from exc
            finally:
                torch.backends.mha.set_fastpath_enabled(previous)
            _save(ov, graph, folder)
        return graph


def _save(ov: Any, graph: Any, folder: Path) -> None:
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        ov.save_model(graph, str(partial / "core.xml"), compress_to_fp16=False)
        try:
            os.replace(partial, folder)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)  # another process saved it first
    except (OSError, RuntimeError) as exc:
        log.warning(
            "cannot keep the OpenVINO graph in %s (%s); it is rebuilt next run", folder, exc
        )
