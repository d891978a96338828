"""The FastAPI app of ``dsu serve`` (DESIGN §4), compatible with the seed's API.

``create_app(settings)`` builds it; uvicorn runs it (``dsu serve``, or
``uvicorn --factory dsu.service.app:create_app`` with the settings from the environment).
The routes live in :mod:`dsu.service.routes`, what they share in :mod:`dsu.service.deps`,
the error answers (and the 400/422 rule) in :mod:`dsu.service.errors`. Handlers only
parse, validate and talk to the queue; separation runs in the worker thread, and every
blocking step of a request (DNS, base64, probing, file copies, SQLite) runs in a thread
so the event loop keeps answering.

Open without an API key, on purpose: ``/``, ``/health``, ``/openapi.json``, ``/docs`` and
the web page ``/ui`` with its files (:class:`dsu.service.middleware.ApiKeys`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from dsu import __version__
from dsu.errors import DSUError
from dsu.service.datadir import DataDirLock
from dsu.service.deps import Service
from dsu.service.errors import install_error_handlers
from dsu.service.fetch import AddressPolicy
from dsu.service.messages import PublicText
from dsu.service.metrics import ServiceMetrics
from dsu.service.middleware import ApiKeys, BodyLimit, MetricsMiddleware
from dsu.service.models import ModelCatalog
from dsu.service.queue import open_queue
from dsu.service.routes import info, jobs, page, separate
from dsu.service.settings import Settings

log = logging.getLogger("dsu.service")


def create_app(
    settings: Settings | None = None, *, data_lock: DataDirLock | None = None
) -> FastAPI:
    """The service app.

    Args:
        settings: default :meth:`Settings.from_env`.
        data_lock: the data dir, claimed already (:func:`dsu.service.datadir.claim_data_dir`);
            None claims it when the app starts.
    """
    settings = settings or Settings.from_env()
    catalog = ModelCatalog(settings.models_dir, settings.default_model)
    text = PublicText()
    text.add_place(settings.data_dir, "the server's storage")
    holder: list[Service] = []
    metrics = ServiceMetrics(
        queue_depth=lambda: float(holder[0].queue.depth()) if holder and holder[0].queue else 0.0
    )
    policy = AddressPolicy(settings.allow_private_urls, settings.url_allowlist)
    service = Service(settings, catalog, metrics, policy, text)
    holder.append(service)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # torch is imported here, before the port opens, so /health never waits on it.
        await asyncio.to_thread(__import__, "torch")
        text.add_place(await asyncio.to_thread(lambda: catalog.root), "the server's models")
        queue = await asyncio.to_thread(open_queue, settings, metrics, data_lock, text)
        warm: str | None = None
        warm_error: str | None = None
        try:
            warm = (await asyncio.to_thread(catalog.resolve, None)).name
        except DSUError as exc:
            warm_error = f"default model: {text.clean(exc.message)}"
        queue.start(asyncio.get_running_loop(), warm_model=warm, warm_error=warm_error)
        service.queue = queue
        log.info("dsu serve: data dir %s, default model %s", settings.data_dir, warm)
        try:
            yield
        finally:
            service.queue = None
            await asyncio.to_thread(queue.stop)

    app = FastAPI(
        title="DSU separation service",
        version=__version__,
        description="Music source separation over HTTP: synchronous base64 requests, "
        "asynchronous URL jobs with signed webhooks (DESIGN §4). When the server has API "
        "keys, every operation but `/` and `/health` needs `Authorization: Bearer <key>`; "
        "this description and `/docs` stay open.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout)
    app.add_middleware(ApiKeys, keys=settings.api_keys)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_error_handlers(app, metrics)
    for module in (info, separate, jobs, page):
        app.include_router(module.router)
    return app
