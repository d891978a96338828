"""What each protocol command does: the worker's state and its handlers.

Handlers return the request's terminal reply as a dict and raise typed errors
(:mod:`dsu.errors`) for anything a client can cause; :mod:`dsu.worker.server` turns
exceptions into error replies and decides which thread runs what. torch and the model
code are imported only when a model is first needed (or by :meth:`Commands.warm_up` in the
background), never at import time.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dsu
from dsu import archs
from dsu.cache import CachedModel, ModelCache, release
from dsu.errors import AudioIOError, BadRequest, Cancelled, ModelNotFound, UnsupportedModel
from dsu.memory import gpu_bytes, megabytes, rss_bytes
from dsu.progress import ProgressThrottle
from dsu.worker import protocol
from dsu.worker.device import guess_device
from dsu.worker.paths import confine
from dsu.worker.protocol import Request
from dsu.worker.settings import WorkerSettings

if TYPE_CHECKING:
    from dsu.engine.options import EngineOptions
    from dsu.pipeline.preset import PreparedPipeline
    from dsu.registry.entry import ModelEntry

Send = Callable[[dict[str, Any]], bool]


class Commands:
    """The worker's models and the handler of every command.

    Args:
        settings: the worker's configuration.
        send: writes one protocol line (used for progress events).
        queue_state: reports ``queue_length`` and the running request, for ``status``.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        send: Send,
        queue_state: Callable[[], dict[str, Any]],
    ) -> None:
        self.settings = settings
        self._send = send
        self._queue_state = queue_state
        self.cache = ModelCache(settings.max_loaded_models, settings.memory_budget_bytes)
        self.device = guess_device(settings.device)
        self.current: str | None = None
        self._warm = threading.Event()
        self._handlers: dict[str, Callable[[Request, threading.Event], dict[str, Any]]] = {
            "ping": self.ping,
            "status": self.status,
            "get_status": self.status,
            "list_models": self.list_models,
            "load_model": self.load_model,
            "unload_model": self.unload_model,
            "separate": self.separate,
        }

    # start-up

    def architectures(self) -> list[str]:
        """Families this worker serves and this build can run."""
        return [a for a in archs.supported() if self.settings.serves(a)]

    def ready(self) -> dict[str, Any]:
        """The first line a worker prints, before any heavy import."""
        pending = sorted((self.settings.archs or frozenset()) - set(archs.supported()))
        message: dict[str, Any] = {
            "status": protocol.READY,
            "device": self.device,
            "protocol": protocol.PROTOCOL_VERSION,
            "version": dsu.__version__,
            "architectures": self.architectures(),
            "max_loaded_models": self.settings.max_loaded_models,
        }
        if pending:
            message["unsupported_architectures"] = pending
        return message

    def warm_up(self) -> None:
        """Import torch and the API now (background thread), so a first load pays less."""
        try:
            import dsu.api  # noqa: F401
        except Exception as exc:  # reported again, as a reply, when a model is needed
            print(f"dsu worker: warm-up import failed: {exc}", file=sys.stderr)
        finally:
            self._warm.set()

    def handle(self, request: Request, cancel: threading.Event) -> dict[str, Any]:
        """Run one command; returns its terminal reply."""
        return self._handlers[request.cmd](request, cancel)

    # quick commands

    def ping(self, request: Request, cancel: threading.Event) -> dict[str, Any]:
        return request.reply(protocol.PONG, model_loaded=self.current)

    def status(self, request: Request, cancel: threading.Event) -> dict[str, Any]:
        gpu = gpu_bytes() or {}
        loaded = [
            {
                "model": item.key.name,
                "device": item.key.device,
                "precision": item.key.precision,
                "memory_mb": megabytes(item.cost_bytes),
                "load_seconds": round(item.load_seconds, 3),
            }
            for item in self.cache.items()
        ]
        return request.reply(
            protocol.STATUS,
            ready=True,
            device=self.device,
            model_loaded=self.current,
            loaded_models=loaded,
            max_loaded_models=self.settings.max_loaded_models,
            memory={
                "rss_mb": megabytes(rss_bytes()),
                "gpu_allocated_mb": megabytes(gpu.get("allocated")),
                "gpu_reserved_mb": megabytes(gpu.get("reserved")),
                "models_mb": megabytes(self.cache.total_bytes()),
                "budget_mb": self.settings.memory_budget_mb,
            },
            architectures=self.architectures(),
            protocol=protocol.PROTOCOL_VERSION,
            version=dsu.__version__,
            **self._queue_state(),
        )

    def list_models(self, request: Request, cancel: threading.Event) -> dict[str, Any]:
        loaded = {item.key.name for item in self.cache.items()}
        infos = [
            info
            for info in self._registry().listing()
            if info.status != "available" and self.settings.serves(info.arch)
        ]
        details = [
            {
                **info.to_json(),
                "runnable": archs.runnable(info.arch),
                "loaded": info.name in loaded,
            }
            for info in infos
        ]
        return request.reply(protocol.MODELS, models=[i.name for i in infos], details=details)

    # model work (runner thread)

    def load_model(self, request: Request, cancel: threading.Event) -> dict[str, Any]:
        started = time.perf_counter()
        item, cached = self._acquire(request.text("model"))
        return request.reply(
            protocol.MODEL_LOADED,
            model=item.key.name,
            stems=list(item.separator.stems),
            elapsed=round(time.perf_counter() - started, 4),
            cached=cached,
        )

    def unload_model(self, request: Request, cancel: threading.Event) -> dict[str, Any]:
        name = request.text("model")
        removed = self.cache.clear() if name is None else self.cache.remove_name(name)
        for item in removed:
            release(item)
        remaining = self.cache.items()
        if self.current is not None and not any(i.key.name == self.current for i in remaining):
            self.current = remaining[0].key.name if remaining else None
        return request.reply(
            protocol.UNLOADED,
            model=name,
            models=[item.key.name for item in removed],
            was_loaded=bool(removed),
        )

    def separate(self, request: Request, cancel: threading.Event) -> dict[str, Any]:
        started = time.perf_counter()
        roots = self.settings.allowed_roots
        source = confine(request.require("input"), roots, "input")
        output = request.text("output") or request.text("output_dir")
        if output is None:
            raise BadRequest("'separate' needs the field 'output': the directory for the stems")
        out_dir = confine(output, roots, "output")
        if not source.is_file():
            raise AudioIOError(f"input {source} does not exist or is not a file")
        self._check_device(request.text("device"))
        options = {
            "stems": request.text_list("stems"),
            "two_stems": request.text("two_stems"),
            "format": request.text("format") or "wav",
            "bit_depth": request.integer("bit_depth"),
            "bitrate": request.integer("bitrate"),
        }
        # Checked before any model loads: a bad number costs the client no load.
        engine = self._engine_options(request)
        pipeline = self._pipeline(request)
        step: dict[str, str] = {}

        def event(stage: str, fraction: float) -> None:
            extra = {"step": step["name"]} if step and stage == "separating" else {}
            self._send(
                request.reply(protocol.PROGRESS, stage=stage, progress=round(fraction, 4), **extra)
            )

        progress = ProgressThrottle(event, self.settings.progress_interval)
        if cancel.is_set():
            raise Cancelled("cancelled before it started")
        if pipeline is not None:
            separator, cached = self._pipeline_separator(pipeline, progress)
            name = separator.name
            options["step_progress"] = lambda name, _fraction: step.update(name=name)
        else:
            item, cached = self._acquire(
                request.text("model") or self.current,
                on_load=lambda: progress("loading_model", 0.0),
            )
            separator, name = item.separator, item.key.name
        if cancel.is_set():
            raise Cancelled("cancelled while the model was loading")
        result = separator.separate(
            source, output_dir=out_dir, progress=progress, cancel=cancel, options=engine, **options
        )
        files: dict[str, Path] = dict(result.files or {})
        # As in the seed, `elapsed` is the separation itself; `total_elapsed` adds the
        # model look-up or load and the request's validation.
        return request.reply(
            protocol.DONE,
            elapsed=round(result.elapsed, 4),
            total_elapsed=round(time.perf_counter() - started, 4),
            model=name,
            model_from_cache=cached,
            **(
                {"pipeline": pipeline.spec.name, "models": pipeline.spec.models} if pipeline else {}
            ),
            output_dir=str(out_dir),
            files=[path.name for path in files.values()],
            stems={stem: str(path) for stem, path in files.items()},
            clipped=result.clipped,
        )

    # pipelines

    def _pipeline(self, request: Request) -> PreparedPipeline | None:
        """The request's ``pipeline`` (a preset name or a spec object) or ``models`` +
        ``ensemble`` + ``weights``, checked against the models directory; None for one model.

        Raises:
            BadRequest: fields that do not go together, or a malformed pipeline.
            ModelNotFound: models not installed (all named).
        """
        from dsu.pipeline.ensemble import DEFAULT_ALGORITHM
        from dsu.pipeline.preset import pipeline_from, prepare
        from dsu.pipeline.spec import short_spec

        raw, models = request.fields.get("pipeline"), request.text_list("models")
        if raw is None and models is None:
            return None
        if request.text("model") is not None or (raw is not None and models is not None):
            raise BadRequest("give one of 'model', 'models' (an ensemble) or 'pipeline'")
        if raw is not None:
            if not isinstance(raw, str | dict):
                raise BadRequest("field 'pipeline' must be a preset name or a pipeline object")
            spec = pipeline_from(raw)
        else:
            weights = request.fields.get("weights")
            if weights is not None and not isinstance(weights, list):
                raise BadRequest("field 'weights' must be a list of numbers, one per model")
            algorithm = request.text("ensemble") or DEFAULT_ALGORITHM
            spec = short_spec(models or [], algorithm, weights)
        prepared = prepare(spec, self._registry())
        for entry in prepared.entries.values():
            self._accept(entry)
        return prepared

    def _pipeline_separator(
        self, pipeline: PreparedPipeline, progress: Callable[[str, float], None]
    ) -> tuple[Any, bool]:
        """A Separator running ``pipeline`` on the cache's warm models (a model evicted
        while a later one loads stays alive for this request, held by the pipeline);
        whether every model was warm."""
        from dsu.api import Separator

        warm = []

        def member(name: str) -> Any:
            item, cached = self._acquire(name, on_load=lambda: progress("loading_model", 0.0))
            warm.append(cached)
            return item.separator

        separator = Separator(
            pipeline=pipeline.spec,
            models_dir=self.settings.models_dir,
            device=self.settings.device,
            precision=self.settings.precision,
            member_loader=member,
        )
        separator.load()
        return separator, all(warm)

    # request fields

    def _check_device(self, device: str | None) -> None:
        """A request's ``device`` must be this worker's: one worker runs on one device."""
        if device is not None and device not in (self.device, self.settings.device):
            raise BadRequest(
                f"this worker runs on {self.device}, not {device!r}: leave 'device' out, or "
                "send the request to a worker started on that device (--device)"
            )

    def _engine_options(self, request: Request) -> EngineOptions:
        """The request's engine options over the worker's defaults (validated)."""
        from dsu.engine.options import EngineOptions

        values = {
            "overlap": request.number("overlap"),
            "shifts": request.integer("shifts"),
            "batch_size": request.integer("batch_size"),
            "segment": request.number("segment"),
            "framing": request.text("framing"),
        }
        given = {name: value for name, value in values.items() if value is not None}
        return EngineOptions(
            precision=self.settings.precision, backend=self.settings.backend, **given
        )

    # the model cache

    def _registry(self) -> Any:
        # Imported here: the registry pulls in urllib and friends, which the ready line
        # need not wait for.
        from dsu.registry.registry import Registry

        return Registry.open(self.settings.models_dir)

    def _acquire(
        self, name: str | None, on_load: Callable[[], None] | None = None
    ) -> tuple[CachedModel, bool]:
        """The warm model ``name`` names (None: the default), loading it on a miss
        (``on_load`` is called first then).

        Returns:
            The cached model and whether it was already loaded.
        """
        item, cached = self.cache.acquire(
            name,
            models_dir=self.settings.models_dir,
            device=self.settings.device,
            precision=self.settings.precision,
            accept=self._accept,
            on_load=on_load,
        )
        self.current = item.key.name
        self.device = item.key.device
        return item, cached

    def _accept(self, entry: ModelEntry) -> None:
        """Refuse a model of a family this worker does not serve or cannot run."""
        if not self.settings.serves(entry.arch):
            served = ", ".join(sorted(self.settings.archs or ())) or "none"
            raise ModelNotFound(
                f"model {entry.name!r} is a {entry.arch!r} model; this worker serves the "
                f"families {served} (start the matching dsu-* worker, or pass --arch)"
            )
        if not archs.runnable(entry.arch):
            raise UnsupportedModel(
                f"model {entry.name!r} is a {entry.arch!r} model, a family this version of "
                f"DSU cannot run yet (it runs: {', '.join(archs.supported())})"
            )
