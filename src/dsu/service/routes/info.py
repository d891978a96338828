"""``GET /``, ``/health``, ``/models`` and ``/metrics``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response

from dsu import __version__
from dsu.service.deps import AUTH, CatalogDep, QueueDep, ServiceDep
from dsu.service.pipelines import presets
from dsu.service.routes.page import page_response, prefers_html
from dsu.service.runner import FAILED_TO_LOAD, READY
from dsu.service.schemas import Health, ModelList, ModelView, PresetView, WorkerView, iso

router = APIRouter()

ENDPOINTS = {
    "/separate-sync": "POST - synchronous separation (base64 JSON or upload)",
    "/separate-async": "POST - asynchronous separation of audio_url or a file, webhook",
    "/jobs/{job_id}": "GET - job status; DELETE - remove the job",
    "/jobs/{job_id}/files/{stem}": "GET - a result stem",
    "/models": "GET - available models and preset pipelines",
    "/health": "GET - health check",
    "/metrics": "GET - Prometheus metrics",
    "/ui": "GET - the web page",
    "/docs": "GET - OpenAPI documentation",
}


@router.get(
    "/",
    response_model=dict[str, Any],
    summary="Service information (a browser that asks for HTML gets the web page)",
)
async def root(request: Request, catalog: CatalogDep) -> Any:
    if prefers_html(request.headers.get("accept", "")):
        return page_response()
    return {
        "service": "DSU separation service",
        "version": __version__,
        "model": await asyncio.to_thread(catalog.default),
        "endpoints": ENDPOINTS,
    }


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "starting, or unhealthy"}},
    summary="Health check: 200 when the default model is loaded, 503 otherwise",
)
async def health(service: ServiceDep, queue: QueueDep, response: Response) -> Health:
    import torch

    status = await asyncio.to_thread(queue.status)
    cuda = torch.cuda.is_available()
    hardware = "CPU"
    if status.device.startswith("cuda") and cuda:
        hardware = torch.cuda.get_device_name(torch.device(status.device))
    if status.default_model == READY:
        state = "healthy"
    else:
        # A load balancer takes the instance out until its default model is loaded.
        response.status_code = 503
        state = "unhealthy" if status.default_model == FAILED_TO_LOAD else "starting"
    depth = await asyncio.to_thread(queue.depth)
    return Health(
        status=state,
        model=status.model_loaded or service.catalog.configured_default or "default",
        hardware=hardware,
        torch_version=torch.__version__,
        cuda_available=cuda,
        device=status.device,
        model_loaded=status.model_loaded is not None,
        model_error=status.load_error,
        queue_depth=depth,
        version=__version__,
        workers=[
            WorkerView(
                name=w.name,
                device=w.device,
                state=w.default_model,
                models=list(w.models),
                busy=w.busy,
                completed=w.completed,
                failed=w.failed,
                last_seen=iso(w.last_seen),
            )
            for w in status.workers
        ],
    )


@router.get(
    "/models",
    response_model=ModelList,
    dependencies=AUTH,
    summary="Available models, and the preset pipelines (with the models each lacks here)",
)
def models(catalog: CatalogDep) -> ModelList:
    return ModelList(
        default=catalog.default(),
        models=[
            ModelView(
                name=m.name,
                arch=m.arch,
                stems=list(m.stems),
                description=m.description,
                aliases=list(m.aliases),
                license=m.license,
            )
            for m in catalog.models()
        ],
        presets=[
            PresetView(
                name=p.name,
                description=p.description,
                models=list(p.models),
                stems=list(p.stems),
                installed=p.installed,
                missing=list(p.missing),
            )
            for p in presets(catalog.registry())
        ],
    )


@router.get("/metrics", dependencies=AUTH, summary="Prometheus metrics")
def prometheus(service: ServiceDep) -> Response:
    return Response(service.metrics.render(), media_type=service.metrics.content_type)
