"""The in-process worker: one thread, one separation at a time, the model kept warm.

It claims jobs from the store, renews their lease from a heartbeat thread while they
run, fetches ``audio_url`` inputs, checks the audio, separates with
:class:`dsu.Separator` (at ``DSU_PRECISION``; an ensemble or chain on the warm models,
its progress recorded per step as ``separating:<step>``) and records the outcome with
the job's webhook. The event loop never waits on any of it. Before the first job it loads the
default model, and says how that went (:attr:`Runner.default_state`) for ``/health``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dsu.cache import ModelCache
from dsu.errors import BadAudio, Cancelled, DSUError
from dsu.progress import ProgressThrottle
from dsu.service.checks import check_duration, check_encoding
from dsu.service.fetch import Fetcher
from dsu.service.jobs import COMPLETED, FAILED, Job, JobSpec, JobStore
from dsu.service.messages import PublicText
from dsu.service.metrics import ServiceMetrics
from dsu.service.pipelines import SEPARATING
from dsu.service.schemas import webhook_payload
from dsu.service.settings import Settings
from dsu.service.storage import ResultStorage, input_extension
from dsu.service.webhooks import new_webhook

if TYPE_CHECKING:
    from dsu.api import Separator

log = logging.getLogger("dsu.service.runner")

# Runner.default_state: the default model is loading, loaded, or cannot be loaded.
LOADING, READY, FAILED_TO_LOAD = "loading", "ready", "failed"


class WarmModels:
    """The models kept loaded between jobs: the warm-model cache the worker also uses.

    One at a time by default (loading another releases it first) keeps memory within a
    small instance (4 GB for the seed's Akash profile) whatever the mix of requested
    models; ``Settings.max_loaded_models`` and ``memory_budget_mb`` raise it.
    ``on_load(name)`` is called for every load (a cache miss).
    """

    def __init__(
        self,
        settings: Settings,
        on_load: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.models_dir = settings.models_dir
        self.device = settings.device
        self.cache = ModelCache(settings.max_loaded_models, settings.memory_budget_bytes)
        self.on_load = on_load

    @property
    def current(self) -> Separator | None:
        """The most recently used model, None before the first load."""
        item = self.cache.newest()
        return item.separator if item is not None else None

    def get(self, name: str) -> Separator:
        """The loaded model ``name`` (a registry name or alias), loading it on a miss."""
        item, warm = self.cache.acquire(name, models_dir=self.models_dir, device=self.device)
        if not warm:
            self.on_load(item.key.name)
        return item.separator


class _Cancel:
    """Why the running job should stop, if it should: read by the engine between chunks."""

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def __call__(self) -> bool:
        if self.reason is None and time.monotonic() > self.deadline:
            self.reason = "timeout"
        return self.reason is not None


class Runner:
    """Runs queued jobs in a background thread, one after the other."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        storage: ResultStorage,
        fetcher: Fetcher,
        metrics: ServiceMetrics,
        on_finished: Callable[[Job], None],
        text: PublicText,
    ) -> None:
        self.settings = settings
        self.text = text
        self.store = store
        self.storage = storage
        self.fetcher = fetcher
        self.metrics = metrics
        self.on_finished = on_finished
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.models = WarmModels(
            settings, on_load=lambda name: metrics.model_loads.labels(name).inc()
        )
        self.average_job_seconds = 10.0
        self.default_state = LOADING
        self.load_error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._running: tuple[str, _Cancel] | None = None
        self._warm_model: str | None = None
        self._thread = threading.Thread(target=self._loop, name="dsu-runner", daemon=True)

    # -- control from the API --------------------------------------------------------------

    def start(self, warm_model: str | None, warm_error: str | None = None) -> None:
        """Start the thread; it loads ``warm_model`` first (``warm_error``: why there is none)."""
        from dsu.engine.allocator import keep_freed_memory

        # Before the thread starts, so that its separations share the tuned main heap.
        keep_freed_memory(share_main_heap=True)
        self._warm_model = warm_model
        if warm_model is None:
            self._failed_default(warm_error or "no default model is configured")
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after putting the running job (if any) back in the queue."""
        self._stop.set()
        self.cancel_running("shutdown")
        self._wake.set()
        self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> bool:
        """Stop ``job_id`` if it is the running one (it was deleted)."""
        with self._lock:
            if self._running is not None and self._running[0] == job_id:
                self._running[1].set("deleted")
                return True
        return False

    def cancel_running(self, reason: str) -> None:
        with self._lock:
            if self._running is not None:
                self._running[1].set(reason)

    @property
    def device(self) -> str:
        current = self.models.current
        return str(current.device) if current is not None else self.settings.device

    @property
    def model_loaded(self) -> str | None:
        current = self.models.current
        return current.name if current is not None else None

    # -- the thread ------------------------------------------------------------------------

    def _failed_default(self, reason: str) -> None:
        self.load_error = reason
        self.default_state = FAILED_TO_LOAD
        log.error("the default model is unavailable: %s", reason)

    def _load_default(self, name: str) -> None:
        from dsu.engine import precision_context

        try:
            separator = self.models.get(name)
            # The engine's own rule for precision on this device, applied now rather than
            # at the first job (a no-op context where the pair is fine).
            with precision_context(separator.device, self.settings.precision):
                pass
        except DSUError as exc:
            self._failed_default(self.text.clean(exc.message))
            return
        except Exception:
            log.exception("could not load the default model")
            self._failed_default("the default model failed to load (see the server log)")
            return
        self.default_state = READY
        log.info("model %s loaded on %s", name, self.device)

    def _loop(self) -> None:
        if self._warm_model:
            self._load_default(self._warm_model)
        while not self._stop.is_set():
            try:
                job = self.store.claim(self.owner, self.settings.lease_seconds)
            except Exception:
                log.exception("claiming a job failed")
                job = None
                self._stop.wait(1.0)
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            started = time.monotonic()
            try:
                self._run(job)
            except Exception:
                log.exception("job %s: unexpected error outside the job", job.id)
            seconds = time.monotonic() - started
            self.average_job_seconds = 0.7 * self.average_job_seconds + 0.3 * seconds

    def _heartbeat(self, job_id: str, cancel: _Cancel, done: threading.Event) -> None:
        interval = max(self.settings.lease_seconds / 3, 0.2)
        while not done.wait(interval):
            try:
                if not self.store.renew(job_id, self.owner, self.settings.lease_seconds):
                    cancel.set("deleted")
                    return
            except Exception:
                log.exception("renewing the lease of job %s failed", job_id)

    def _run(self, job: Job) -> None:
        if job.attempts > job.max_attempts:
            self._finish_failed(
                job,
                "interrupted",
                f"gave up after {job.max_attempts} attempts: the server stopped (crashed or "
                "was killed) while running this job each time",
            )
            return
        cancel = _Cancel(self.settings.separation_timeout)
        done = threading.Event()
        heartbeat = threading.Thread(
            target=self._heartbeat, args=(job.id, cancel, done), daemon=True
        )
        with self._lock:
            self._running = (job.id, cancel)
        heartbeat.start()
        started = time.monotonic()
        log.info("job %s: attempt %d of %d", job.id, job.attempts, job.max_attempts)
        try:
            result = self._separate(job, cancel)
            result["duration"] = round(time.monotonic() - started, 3)
            self._finish_completed(job, result)
        except Cancelled:
            self._cancelled(job, cancel)
        except DSUError as exc:
            source = self.storage.find_input(job.key)
            label = "audio_url" if job.spec.audio_url else "the uploaded audio"
            self._finish_failed(job, exc.code, self.text.of(exc, source, label))
        except Exception:
            log.exception("job %s failed with an internal error", job.id)
            self._finish_failed(
                job, "internal", "internal error while running the job (see the server log)"
            )
        finally:
            done.set()
            with self._lock:
                self._running = None
            self.metrics.job_seconds.observe(time.monotonic() - started)

    def _separate(self, job: Job, cancel: _Cancel) -> dict[str, Any]:
        spec = job.spec
        source = self.storage.find_input(job.key)
        if spec.audio_url and source is None:
            self.store.set_progress(job.id, self.owner, "downloading", 0.0)
            target = self.storage.input_path(job.key, input_extension(spec.audio_url))
            # Downloaded under another name and renamed when complete: a run killed
            # mid-download must not leave a partial file that the rerun takes as the input.
            partial = target.with_name(".download")
            self.fetcher.download(
                spec.audio_url, partial, self.settings.max_upload_bytes, self.settings.fetch_timeout
            )
            source = partial.replace(target)
        if source is None:
            raise BadAudio("input", "the uploaded audio is missing from the server's storage")
        info = check_duration(source, self.settings.max_duration)
        check_encoding(spec.output_format, spec.bitrate, info.samplerate, info.channels)
        if cancel():
            raise Cancelled("cancelled before separation")
        self.store.set_progress(job.id, self.owner, "loading model", 0.0)
        separator = self._separator(spec)
        self.storage.remove_outputs(job.key)
        step: dict[str, str] = {}

        def record(stage: str, fraction: float) -> None:
            if stage == SEPARATING and step:
                stage = f"{SEPARATING}:{step['name']}"
            self.store.set_progress(job.id, self.owner, stage, fraction)

        # A new stage is recorded at once; fractions (and a pipeline's step, which changes
        # with every chunk as its steps run in lockstep) at most twice a second.
        progress = ProgressThrottle(record, 0.5)

        result = separator.separate(
            source,
            two_stems=spec.two_stems,
            output_dir=self.storage.output_dir(job.key),
            format=spec.output_format,
            bitrate=spec.bitrate if spec.output_format == "mp3" else None,
            progress=progress,
            cancel=cancel,
            options=dataclasses.replace(
                separator.options,
                precision=self.settings.precision,
                backend=self.settings.backend,
            ),
            step_progress=(lambda name, _fraction: step.update(name=name))
            if spec.pipeline
            else None,
        )
        files = result.files or {}
        return {
            "stems": {
                stem: {"file": path.name, "size": path.stat().st_size}
                for stem, path in files.items()
            },
            "model": separator.name,
            "format": spec.output_format,
            "samplerate": result.samplerate,
            "separation_seconds": round(result.elapsed, 3),
        }

    def _separator(self, spec: JobSpec) -> Separator:
        """The job's model, warm; or its pipeline, each model taken from the warm cache
        (a model evicted while a later one loads stays alive for this job, held by the
        pipeline)."""
        if spec.pipeline is None:
            return self.models.get(spec.model)
        from dsu.api import Separator

        separator = Separator(
            pipeline=spec.pipeline,
            models_dir=self.settings.models_dir,
            device=self.settings.device,
            member_loader=self.models.get,
        )
        separator.load()
        return separator

    def _cancelled(self, job: Job, cancel: _Cancel) -> None:
        if cancel.reason == "timeout":
            self._finish_failed(
                job,
                "timeout",
                f"the separation took longer than SEPARATION_TIMEOUT={cancel.timeout:g} s",
            )
        elif cancel.reason == "shutdown":
            self.storage.remove_outputs(job.key)
            self.store.release(job.id, self.owner)
            log.info("job %s: put back in the queue at shutdown", job.id)
        else:
            self.storage.delete(job.key)
            log.info("job %s: cancelled (deleted)", job.id)

    def _finish_completed(self, job: Job, result: dict[str, Any]) -> None:
        done = dataclasses.replace(job, status=COMPLETED, result=result, finished_at=time.time())
        webhook = None
        if job.spec.webhook_url:
            inline = None
            if self.settings.webhook_inline_audio:
                out = self.storage.output_dir(job.key)
                inline = {s: (out / i["file"]).read_bytes() for s, i in result["stems"].items()}
            webhook = new_webhook(webhook_payload(done, inline))
        if self.store.complete(job.id, self.owner, result, webhook):
            self.storage.remove_input(job.key)
            self.metrics.jobs.labels(job.kind, COMPLETED).inc()
            log.info("job %s: completed in %.2f s", job.id, result["duration"])
            self.on_finished(done)
        else:
            # Deleted while finishing: nothing refers to the files any more.
            self.storage.delete(job.key)

    def _finish_failed(self, job: Job, code: str, message: str) -> None:
        failed = dataclasses.replace(
            job, status=FAILED, error_code=code, error_message=message, finished_at=time.time()
        )
        webhook = new_webhook(webhook_payload(failed)) if job.spec.webhook_url else None
        if self.store.fail(job.id, self.owner, code, message, webhook):
            self.storage.delete(job.key)
            self.metrics.jobs.labels(job.kind, FAILED).inc()
            log.info("job %s: failed (%s): %s", job.id, code, message)
            self.on_finished(failed)
        else:
            self.storage.delete(job.key)
