"""The ``openvino`` backend: HTDemucs' network through OpenVINO on the CPU.

Parity against ``demucs.apply.apply_model`` on the same weights (the STFT and iSTFT stay
in torch), the exported graph kept on disk and read back, a damaged or unwritable cache,
and the choice of backend: ``auto``, an explicit request, and a machine without the
package.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dsu.archs import demucs as demucs_family
from dsu.engine import EngineOptions, separate_array
from dsu.engine.backends import resolve_backend
from dsu.errors import BadRequest, UnsupportedModel
from dsu.registry.entry import ModelEntry
from helpers import sdr
from test_demucs_parity import reference
from tiny_demucs import SOURCES, tiny_net, write_models_dir, write_package

pytest.importorskip("openvino", reason="the openvino extra (in the test extra) is not installed")


@pytest.fixture(scope="module")
def mix() -> torch.Tensor:
    torch.manual_seed(3)
    return 0.3 * torch.randn(2, 100_001)  # several 1 s chunks and a short last one


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DSU_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "compiled" / "openvino"


def load(tmp_path: Path, kind: str = "htdemucs", seed: int = 0) -> demucs_family.DemucsModel:
    path = write_package(tiny_net(kind, seed), tmp_path / "weights", f"{kind[:4]}{seed:04x}")
    model = demucs_family.load(ModelEntry("tiny", "demucs", weights=(path,), stems=tuple(SOURCES)))
    return model.to(torch.device("cpu"))


def graphs(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/core.xml"))


def test_openvino_matches_apply_model_and_keeps_its_graph(
    tmp_path: Path, cache: Path, mix: torch.Tensor
):
    model = load(tmp_path)
    expected = reference(tiny_net("htdemucs").eval(), mix)
    out = separate_array(model, mix, options=EngineOptions(backend="openvino"))
    assert sdr(expected, out) >= 60
    assert sdr(separate_array(model, mix, options=EngineOptions(backend="torch")), out) >= 60
    assert len(graphs(cache)) == 1
    # Batched chunks are another input shape: a graph of their own, the same separation.
    batched = separate_array(model, mix, options=EngineOptions(backend="openvino", batch_size=2))
    assert sdr(expected, batched) >= 60
    assert len(graphs(cache)) == 2


def test_a_later_load_reads_the_saved_graph_without_exporting(
    tmp_path: Path, cache: Path, mix: torch.Tensor, monkeypatch: pytest.MonkeyPatch
):
    first = separate_array(load(tmp_path), mix, options=EngineOptions(backend="openvino"))
    saved = graphs(cache)

    def no_export(*_: object, **__: object) -> None:
        raise AssertionError("the saved graph should have been read, not exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    again = separate_array(load(tmp_path), mix, options=EngineOptions(backend="openvino"))
    assert torch.equal(first, again)
    assert graphs(cache) == saved


def test_other_weights_get_a_graph_of_their_own(tmp_path: Path, cache: Path, mix: torch.Tensor):
    outs = [
        separate_array(load(tmp_path, seed=seed), mix, options=EngineOptions(backend="openvino"))
        for seed in (0, 1)
    ]
    assert len(graphs(cache)) == 2
    assert sdr(outs[0], outs[1]) < 20


def test_a_damaged_graph_is_rebuilt(tmp_path: Path, cache: Path, mix: torch.Tensor):
    expected = separate_array(load(tmp_path), mix, options=EngineOptions(backend="torch"))
    separate_array(load(tmp_path), mix, options=EngineOptions(backend="openvino"))
    (graph,) = graphs(cache)
    graph.write_text("<net>truncated")
    out = separate_array(load(tmp_path), mix, options=EngineOptions(backend="openvino"))
    assert sdr(expected, out) >= 60
    assert "truncated" not in graph.read_text()


def test_an_unwritable_cache_still_separates(
    tmp_path: Path, mix: torch.Tensor, monkeypatch: pytest.MonkeyPatch
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("DSU_CACHE_DIR", str(blocker))
    model = load(tmp_path)
    expected = separate_array(model, mix, options=EngineOptions(backend="torch"))
    assert (
        sdr(expected, separate_array(model, mix, options=EngineOptions(backend="openvino"))) >= 60
    )


def test_bf16_runs_the_graph_in_bf16(tmp_path: Path, cache: Path, mix: torch.Tensor):
    model = load(tmp_path)
    fp32 = separate_array(model, mix, options=EngineOptions(backend="openvino"))
    bf16 = separate_array(model, mix, options=EngineOptions(backend="openvino", precision="bf16"))
    assert 25 <= sdr(fp32, bf16) < 60  # close, but not fp32's result: the hint took effect
    assert len(graphs(cache)) == 1  # one graph; the precision is a compile setting


def test_auto_picks_openvino_for_htdemucs_in_bf16_on_the_cpu_only():
    assert resolve_backend("auto", ("openvino",), "cpu", "bf16") == "openvino"
    assert resolve_backend("auto", ("openvino",), "cpu", "fp32") == "torch"
    assert resolve_backend("auto", ("openvino",), "cuda", "bf16") == "torch"
    assert resolve_backend("auto", (), "cpu", "bf16") == "torch"
    assert resolve_backend("torch", ("openvino",), "cpu", "bf16") == "torch"
    assert resolve_backend("openvino", ("openvino",), "cpu", "fp32") == "openvino"
    assert resolve_backend("openvino", (), "cpu", "fp32") == "torch"  # the others: torch
    with pytest.raises(BadRequest, match="on the CPU"):
        resolve_backend("openvino", ("openvino",), "cuda", "fp32")


def test_auto_runs_openvino_in_bf16_and_torch_in_fp32(
    tmp_path: Path, cache: Path, mix: torch.Tensor
):
    model = load(tmp_path)
    separate_array(model, mix)
    assert graphs(cache) == []
    bf16 = separate_array(model, mix, options=EngineOptions(precision="bf16"))
    assert len(graphs(cache)) == 1
    explicit = separate_array(
        model, mix, options=EngineOptions(precision="bf16", backend="openvino")
    )
    assert torch.equal(bf16, explicit)


def test_a_network_that_does_not_export_falls_back_under_auto_only(
    tmp_path: Path, cache: Path, mix: torch.Tensor, monkeypatch: pytest.MonkeyPatch
):
    """An export failure (forced here) is an error when openvino was asked for, and a
    logged fall back to torch, tried once, under auto."""
    calls = []

    def failing_export(*_: object, **__: object) -> None:
        calls.append(1)
        raise RuntimeError("an operator with no ONNX form")

    monkeypatch.setattr(torch.onnx, "export", failing_export)
    model = load(tmp_path)
    with pytest.raises(UnsupportedModel, match=r"does not export to OpenVINO.*--backend torch"):
        separate_array(model, mix, options=EngineOptions(backend="openvino"))
    expected = separate_array(model, mix, options=EngineOptions(backend="torch", precision="bf16"))
    for _ in range(2):
        out = separate_array(model, mix, options=EngineOptions(precision="bf16"))
        assert torch.equal(expected, out)
    assert len(calls) == 2  # the request, then auto's one try
    assert graphs(cache) == []


def test_only_htdemucs_offers_openvino_and_the_others_run_torch(
    tmp_path: Path, cache: Path, mix: torch.Tensor
):
    """So one worker, service or chain setting serves every family."""
    assert load(tmp_path, "htdemucs").backends == ("openvino",)
    for kind in ("hdemucs", "demucs"):
        model = load(tmp_path, kind)
        assert model.backends == ()
        asked = separate_array(model, mix, options=EngineOptions(backend="openvino"))
        assert torch.equal(asked, separate_array(model, mix))
    assert graphs(cache) == []


def test_an_unknown_backend_is_a_bad_request():
    with pytest.raises(BadRequest, match="backend must be one of auto, torch, openvino"):
        EngineOptions(backend="tensorrt")


def run_cli(
    tmp_path: Path, *args: str, block_openvino: bool = False
) -> subprocess.CompletedProcess:
    """``dsu ...`` in a fresh process; ``block_openvino`` makes ``import openvino`` fail
    there, as on a machine without the extra."""
    prelude = "import sys; sys.modules['openvino'] = None; " if block_openvino else "import sys; "
    code = prelude + "from dsu.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"DSU_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return write_models_dir(tmp_path / "models", {"tiny-ht": {"nets": [("htdemucs", 0)]}})


@pytest.fixture
def song(tmp_path: Path) -> Path:
    import soundfile as sf

    torch.manual_seed(4)
    path = tmp_path / "song.wav"
    sf.write(path, (0.2 * torch.randn(60_000, 2)).numpy(), 44100)
    return path


def test_without_the_package_auto_runs_torch_and_openvino_names_the_extra(
    tmp_path: Path, models_dir: Path, song: Path
):
    common = ["separate", str(song), "-m", "tiny-ht", "--models-dir", str(models_dir)]
    # bf16: where auto would pick openvino if it could import it.
    auto = run_cli(tmp_path, *common, "-o", "auto", "--precision", "bf16", block_openvino=True)
    assert auto.returncode == 0, auto.stderr
    assert len(list((tmp_path / "auto").rglob("*.wav"))) == 4
    asked = run_cli(tmp_path, *common, "-o", "asked", "--backend", "openvino", block_openvino=True)
    assert asked.returncode != 0
    assert "pip install 'dsu[openvino]'" in asked.stderr
    assert "Traceback" not in asked.stderr
    assert not (tmp_path / "asked").exists()


def test_the_cli_refuses_openvino_for_a_single_model_without_it(tmp_path: Path, song: Path):
    models = write_models_dir(tmp_path / "models", {"tiny-h": {"nets": [("hdemucs", 0)]}})
    done = run_cli(
        tmp_path, "separate", str(song), "-m", "tiny-h", "--models-dir", str(models),
        "-o", "out", "--backend", "openvino",
    )  # fmt: skip
    assert done.returncode != 0
    assert "--backend openvino runs HTDemucs models only" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_cli_runs_openvino_when_asked(tmp_path: Path, models_dir: Path, song: Path):
    outs = {}
    for backend in ("torch", "openvino"):
        done = run_cli(
            tmp_path,
            "separate",
            str(song),
            "-m",
            "tiny-ht",
            "--models-dir",
            str(models_dir),
            "-o",
            backend,
            "--backend",
            backend,
        )
        assert done.returncode == 0, done.stderr
        outs[backend] = sorted((tmp_path / backend).rglob("*.wav"))
    assert len(outs["openvino"]) == 4
    import soundfile as sf

    for a, b in zip(outs["torch"], outs["openvino"], strict=True):
        assert sdr(sf.read(a)[0], sf.read(b)[0]) >= 60
    assert list((tmp_path / "cache" / "compiled" / "openvino").glob("*/core.xml"))


def test_a_bad_backend_setting_is_refused_by_the_worker_and_the_service():
    from dsu.service.settings import Settings, SettingsError
    from dsu.worker.settings import WorkerSettings

    with pytest.raises(BadRequest, match="--backend"):
        WorkerSettings(backend="fast")
    with pytest.raises(SettingsError, match="DSU_BACKEND='fast'"):
        Settings.from_env({"DSU_BACKEND": "fast"})
    assert json.loads(json.dumps(WorkerSettings().backend)) == "auto"
