"""The web page of ``dsu serve``: ``GET /ui``, its static assets and its settings.

The page is plain files in ``dsu/service/web`` (no build step, no third-party code, no
CDN), so it works offline and behind a firewall. It is a client of the same API as any
other: it uploads to ``POST /separate-async``, polls ``GET /jobs/{id}`` and fetches the
stems, sending the API key the same way (``Authorization: Bearer``). The page and its
assets are open (a browser cannot send a key before the page has asked for one); the API
behind them is not.

Every answer here carries a Content-Security-Policy that allows scripts, styles and
connections from this origin only, and no inline script or style: the page shows file
names and model descriptions that came from users, and it writes them as text, but the
policy is the second wall should that ever slip.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel

from dsu.audio.formats import OUTPUT_FORMATS
from dsu.service.deps import SettingsDep
from dsu.service.errors import ApiError
from dsu.service.schemas import DEFAULT_FORMAT

PAGE_PATH = "/ui"
# The page's files and their types; nothing else under /ui/ is served.
ASSETS = {
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "history.js": "text/javascript; charset=utf-8",
    "mixer.js": "text/javascript; charset=utf-8",
    "waveform.js": "text/javascript; charset=utf-8",
}
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # Stems are fetched with the API key, then played and offered for download from
        # in-memory blobs.
        "media-src 'self' blob:",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load, so an upgraded server never runs an old script.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


class PageConfig(BaseModel):
    """What the page needs to know about this server before its first request."""

    output_formats: list[str]
    default_format: str
    max_upload_bytes: int
    max_duration: float
    auth_required: bool


@cache
def _asset(name: str) -> bytes:
    return resources.files("dsu.service").joinpath("web", name).read_bytes()


def page_response() -> Response:
    """The page itself, with its security headers."""
    return Response(
        _asset("index.html"), media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS
    )


def prefers_html(accept: str) -> bool:
    """Whether an ``Accept`` header ranks ``text/html`` above JSON (a browser, not a client).

    ``*/*`` alone (curl, httpx, the seed's clients) keeps the JSON answer.
    """
    html = json = 0.0
    for item in accept.split(","):
        media, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.strip().lower()
        if media == "text/html":
            html = max(html, quality)
        elif media in ("application/json", "*/*", "application/*"):
            json = max(json, quality)
    return html > json


@router.get(PAGE_PATH)
def page() -> Response:
    return page_response()


@router.get(f"{PAGE_PATH}/config")
def page_config(settings: SettingsDep) -> Response:
    config = PageConfig(
        output_formats=list(OUTPUT_FORMATS),
        default_format=DEFAULT_FORMAT,
        max_upload_bytes=settings.max_upload_bytes,
        max_duration=settings.max_duration,
        auth_required=bool(settings.api_keys),
    )
    return Response(
        config.model_dump_json(), media_type="application/json", headers=SECURITY_HEADERS
    )


@router.get(PAGE_PATH + "/{name}")
def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise ApiError(404, "not_found", f"the page has no file {name!r}")
    return Response(_asset(name), media_type=media_type, headers=SECURITY_HEADERS)
