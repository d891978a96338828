"""ASGI middleware of the service: body limits, API keys, request metrics.

Each runs before FastAPI reads a request body, so a client that is not allowed in, or
sends too much or too slowly, costs the server nothing but the headers.
"""

from __future__ import annotations

import asyncio
import hmac
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dsu.service.errors import ApiError, error_response
from dsu.service.metrics import ServiceMetrics


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` or slower than ``timeout`` seconds.

    A declared Content-Length over the cap is answered 413 before any byte is read; a
    body without one (chunked) is counted as it streams and stopped at the cap.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(400, "bad_request", "invalid Content-Length")(
                    scope, receive, send
                )
                return
            if int(declared) > self.max_bytes:
                await error_response(
                    413,
                    "payload_too_large",
                    f"request body of {int(declared)} bytes is over the "
                    f"{self.max_bytes}-byte limit",
                )(scope, receive, send)
                return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        received = 0
        body_done = False

        async def limited() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            except TimeoutError:
                raise ApiError(
                    408, "request_timeout", f"request body not received within {self.timeout:g} s"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise ApiError(
                        413,
                        "payload_too_large",
                        f"request body is over the {self.max_bytes}-byte limit",
                    )
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, limited, send)


class ApiKeys:
    """Require ``Authorization: Bearer <key>`` on every path but the open ones.

    Checked before the app runs, so an unauthenticated client cannot make the server read
    or parse a request body. Open on purpose: ``/`` and ``/health`` (load balancers), the
    web page ``/ui`` and its files (it asks for the key, then sends it to the API), and
    the API's description, ``/openapi.json`` and ``/docs`` (the browser page cannot send a
    key when it fetches the schema; the schema holds no secrets and says which operations
    need a key).
    """

    OPEN = frozenset({"/", "/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/ui"})
    # The web page's assets (dsu.service.routes.page): static files, no data.
    OPEN_PREFIXES = ("/ui/",)

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    def allowed(self, header: bytes | None) -> bool:
        scheme, _, given = (header or b"").partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        # Compare with every key so the time taken says nothing about which one matched.
        return any([hmac.compare_digest(given.strip(), key) for key in self.keys])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.keys
            and scope["path"] not in self.OPEN
            and not scope["path"].startswith(self.OPEN_PREFIXES)
            and not self.allowed(dict(scope["headers"]).get(b"authorization"))
        ):
            response = error_response(
                401,
                "unauthorized",
                "a valid API key is required: Authorization: Bearer <key>",
                {"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class MetricsMiddleware:
    """Count requests and time them by route template (never by raw path)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status[0])).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
