"""Prometheus metrics of one service instance, in a registry of its own.

A private registry (not prometheus-client's global one) lets several apps live in one
process (tests) and keeps library metrics out of ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_JOB_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)


class ServiceMetrics:
    """The counters, gauges and histograms ``/metrics`` exposes."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "dsu_http_requests_total",
            "HTTP requests answered, by route template and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "dsu_http_request_seconds",
            "Time to answer an HTTP request, by route template.",
            ("route",),
            registry=self.registry,
        )
        self.jobs = Counter(
            "dsu_jobs_total",
            "Jobs that ended, by kind (sync/async) and status.",
            ("kind", "status"),
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "dsu_job_seconds",
            "Time a job ran (fetch, decode, separate, encode).",
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            "dsu_rejected_total",
            "Submissions refused before queueing, by reason code.",
            ("code",),
            registry=self.registry,
        )
        self.webhooks = Counter(
            "dsu_webhook_deliveries_total",
            "Webhook delivery attempts, by outcome (delivered, retry, failed).",
            ("outcome",),
            registry=self.registry,
        )
        self.model_loads = Counter(
            "dsu_model_loads_total",
            "Models loaded into memory (misses of the warm-model cache), by model.",
            ("model",),
            registry=self.registry,
        )
        depth = Gauge("dsu_queue_depth", "Jobs queued or running.", registry=self.registry)
        depth.set_function(queue_depth)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
