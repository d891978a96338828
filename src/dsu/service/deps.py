"""What the route handlers share, handed to them by FastAPI's dependency injection.

:func:`dsu.service.app.create_app` puts one :class:`Service` on ``app.state``; a handler
asks for the piece it needs with an annotated parameter (``queue: QueueDep``) instead of
closing over it, so every router module stands on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from dsu.errors import DSUError
from dsu.service.errors import ApiError, api_error
from dsu.service.fetch import AddressPolicy
from dsu.service.messages import PublicText
from dsu.service.metrics import ServiceMetrics
from dsu.service.models import ModelCatalog
from dsu.service.queue import JobQueue
from dsu.service.settings import Settings


@dataclass
class Service:
    """One instance's settings, model catalog, metrics, URL policy and (once started) queue."""

    settings: Settings
    catalog: ModelCatalog
    metrics: ServiceMetrics
    policy: AddressPolicy
    text: PublicText
    queue: JobQueue | None = None


def get_service(request: Request) -> Service:
    return request.app.state.service


def get_settings(service: Annotated[Service, Depends(get_service)]) -> Settings:
    return service.settings


def get_catalog(service: Annotated[Service, Depends(get_service)]) -> ModelCatalog:
    return service.catalog


def get_queue(service: Annotated[Service, Depends(get_service)]) -> JobQueue:
    """The running queue; 503 before the lifespan started it or after it stopped."""
    if service.queue is None:
        raise ApiError(503, "starting", "the service is starting; retry in a moment")
    return service.queue


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]

# Enforced by the ApiKeys middleware before any body is read; declared on the protected
# routers so the OpenAPI document says which operations need a key.
bearer = HTTPBearer(auto_error=False, description="one of DSU_API_KEYS, when set")
AUTH = [Depends(bearer)]


def base_url(request: Request, settings: Settings) -> str:
    """Where result links point: DSU_PUBLIC_URL, else the base URL the client used."""
    return settings.public_url or str(request.base_url)


async def blocking(fn: Callable[..., Any], *args: Any, text: PublicText | None = None) -> Any:
    """Run ``fn`` in a thread, turning typed errors into API errors (reworded by ``text``)."""
    try:
        return await asyncio.to_thread(fn, *args)
    except DSUError as exc:
        raise api_error(exc, text.of(exc) if text is not None else None) from None
