"""The worker's pure parts: LRU cache, path confinement, line parsing, device guess,
progress throttle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsu.cache import CachedModel, ModelCache, ModelKey
from dsu.errors import BadRequest, PathNotAllowed
from dsu.progress import ProgressThrottle
from dsu.worker import protocol
from dsu.worker.device import check_device_name, guess_device
from dsu.worker.paths import confine


def _item(name: str, cost: int = 0) -> CachedModel:
    return CachedModel(ModelKey(name, "cpu", "fp32"), separator=object(), cost_bytes=cost)


def test_cache_count_limit_evicts_least_recently_used() -> None:
    cache = ModelCache(max_models=2)
    assert cache.put(_item("a")) == []
    assert cache.put(_item("b")) == []
    assert cache.lookup("a") is not None  # a is now the most recently used
    evicted = cache.make_room()
    assert [i.key.name for i in evicted] == ["b"]
    cache.put(_item("c"))
    assert [i.key.name for i in cache.items()] == ["c", "a"]


def test_cache_budget_keeps_the_newest_even_alone_over_budget() -> None:
    cache = ModelCache(max_models=5, budget_bytes=100)
    cache.put(_item("a", 60))
    assert [i.key.name for i in cache.put(_item("b", 30))] == []
    assert [i.key.name for i in cache.put(_item("c", 50))] == ["a"]
    assert cache.total_bytes() == 80
    assert [i.key.name for i in cache.put(_item("huge", 500))] == ["b", "c"]
    assert [i.key.name for i in cache.items()] == ["huge"]


def test_cache_aliases_and_removal() -> None:
    cache = ModelCache(max_models=3)
    cache.put(_item("htdemucs"), aliases=("hdemucs-alias", None))
    assert cache.lookup("hdemucs-alias") is cache.lookup("htdemucs")
    assert [i.key.name for i in cache.remove_name("hdemucs-alias")] == ["htdemucs"]
    assert cache.lookup("hdemucs-alias") is None and len(cache) == 0


def test_confine(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "escape").symlink_to(tmp_path / "secret", target_is_directory=True)
    roots = (root.resolve(),)
    assert confine(root / "sub" / "x.wav", roots, "input") == (root / "sub" / "x.wav").resolve()
    assert confine(root, roots, "output") == root.resolve()
    for outside in (tmp_path / "secret" / "x", root / "escape" / "x", root / ".." / "secret"):
        with pytest.raises(PathNotAllowed, match="outside the allowed roots"):
            confine(outside, roots, "input")
    assert confine("/anything", (), "input") == Path("/anything").resolve()


@pytest.mark.parametrize(
    ("line", "request_id"),
    [
        (b'{"cmd": "ping", "id": 4}', 4),
        (b'{"cmd": "ping", "id": "x"}', "x"),
        (b'{"cmd": "ping", "id": null}', None),
        (b'  {"cmd":"ping"}\r', None),
    ],
)
def test_parse_valid_lines(line: bytes, request_id) -> None:
    request = protocol.parse_line(line.strip())
    assert request.cmd == "ping" and request.id == request_id
    reply = request.reply("pong", model_loaded=None)
    assert ("id" in reply) == (request_id is not None)


def test_encode_is_one_ascii_json_line() -> None:
    line = protocol.encode({"status": "done", "path": "/tmp/é\ud800", "id": 1})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["path"] == "/tmp/é\ud800"
    fallback = json.loads(protocol.encode({"status": "x", "bad": float("nan"), "id": 2}))
    assert (fallback["status"], fallback["code"], fallback["id"]) == ("error", "internal", 2)


def test_error_mapping() -> None:
    assert protocol.error_code_and_message(MemoryError())[0] == "out_of_memory"
    oom = type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory. Tried 2 GiB")
    assert protocol.error_code_and_message(oom)[0] == "out_of_memory"
    assert protocol.error_code_and_message(FileNotFoundError("x"))[0] == "io_error"
    code, message = protocol.error_code_and_message(ValueError("line one\nline two"))
    assert (code, message) == ("internal", "ValueError: line one line two")


def test_device_guess_agrees_with_torch() -> None:
    assert guess_device("cuda:1") == "cuda:1"
    import torch

    if torch.cuda.is_available():
        expected = "cuda"
    elif torch.backends.mps.is_available():
        expected = "mps"
    else:
        expected = "cpu"
    assert guess_device("auto") == expected


def test_progress_throttle_passes_each_stage_then_one_per_interval() -> None:
    now = [0.0]
    seen: list[tuple[str, float]] = []
    throttle = ProgressThrottle(lambda s, f: seen.append((s, f)), 0.5, clock=lambda: now[0])
    for t, stage, fraction in [
        (0.0, "reading", 0.1),
        (0.2, "reading", 0.2),  # too soon
        (0.3, "separating", -0.5),  # a new stage passes at once, clamped
        (0.6, "separating", 0.4),  # too soon for this stage
        (0.9, "separating", 1.7),
    ]:
        now[0] = t
        throttle(stage, fraction)
    assert seen == [("reading", 0.1), ("separating", 0.0), ("separating", 1.0)]


def test_device_names() -> None:
    for name in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert check_device_name(name) == name
    for name in ("tpu", "cuda:", "CPU", "cuda:x", ""):
        with pytest.raises(BadRequest, match="not a device"):
            check_device_name(name)


def test_service_warm_models_is_the_shared_cache_of_one() -> None:
    from dsu.service.runner import WarmModels
    from dsu.service.settings import Settings

    loads: list[str] = []
    models = WarmModels(Settings(device="cpu"), on_load=loads.append)
    assert isinstance(models.cache, ModelCache) and models.current is None
    center = models.get("center")
    assert models.get("center") is center, "a warm model is not reloaded"
    hpss = models.get("hpss")
    assert models.current is hpss and [i.key.name for i in models.cache.items()] == ["hpss"]
    assert center._model is None, "the evicted model was unloaded"
    assert loads == ["center", "hpss"]


def test_service_keeps_as_many_warm_models_as_configured() -> None:
    from dsu.service.runner import WarmModels
    from dsu.service.settings import Settings

    settings = Settings.from_env({"DSU_DEVICE": "cpu", "DSU_MAX_LOADED_MODELS": "2"})
    loads: list[str] = []
    models = WarmModels(settings, on_load=loads.append)
    center, hpss = models.get("center"), models.get("hpss")
    assert models.get("center") is center and models.get("hpss") is hpss
    assert loads == ["center", "hpss"] and center._model is not None
