"""The web page of ``dsu serve`` in a real headless Chromium (Debian's package, driven by
Playwright) against a real ``dsu serve`` on 127.0.0.1: upload, follow the job, play, solo
and download the stems, error texts, escaping, history across a reload, the CSP.

The test run writes a screenshot of the finished page to ``docs/screenshots/web-page.png``
(the README shows it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import soundfile as sf

from test_service_support import ROOT, Server

playwright_sync = pytest.importorskip(
    "playwright.sync_api", reason="the browser tests need playwright: pip install -e '.[test]'"
)
Page = playwright_sync.Page
BrowserContext = playwright_sync.BrowserContext

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# No outside connections on a test machine: nothing in the browser may try one.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = ROOT / "docs" / "screenshots" / "web-page.png"
HOSTILE = '<img src=x onerror="window.__pwned=1">.wav'
KEY = "page-test-key"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Two real ``dsu serve``: an open one with small caps, and one that needs an API key.

    Started side by side: most of a start is importing torch.
    """
    open_server = Server(
        tmp_path_factory.mktemp("web"), {"DSU_MAX_UPLOAD_MB": "1.5", "DSU_MAX_DURATION": "20"}
    )
    keyed_server = Server(tmp_path_factory.mktemp("web-keys"), {"DSU_API_KEYS": KEY})
    with ThreadPoolExecutor(2) as pool:
        started = [pool.submit(s.start) for s in (open_server, keyed_server)]
    try:
        for future in started:
            future.result()
        yield open_server, keyed_server
    finally:
        open_server.stop()
        keyed_server.stop()


@pytest.fixture(scope="module")
def server(servers: tuple[Server, Server]) -> Server:
    return servers[0]


@pytest.fixture(scope="module")
def keyed(servers: tuple[Server, Server]) -> Server:
    return servers[1]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """One Chromium with a new, empty profile; each test opens its own page in it."""
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM}: `make install-test` installs it")
    with playwright_sync.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            accept_downloads=True,
            viewport={"width": 1100, "height": 900},
        )
        context.set_default_timeout(30_000)
        yield context
        context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    """A new tab; the test fails if the page's own scripts threw anything uncaught."""
    page = browser.new_page()
    uncaught: list[str] = []
    page.on("pageerror", lambda error: uncaught.append(str(error)))
    yield page
    page.close()
    assert not uncaught, f"the page threw: {uncaught}"


def open_page(page: Page, server: Server, path: str = "/ui") -> playwright_sync.Response:
    response = page.goto(server.url + path)
    page.wait_for_selector("body[data-ready=true]", state="attached")
    return response


def submit(page: Page, files: object, model: str = "center", fmt: str = "wav") -> None:
    page.set_input_files("#file", files)
    page.select_option("#model", f"model:{model}")
    page.select_option("#format", fmt)
    page.click("#start")


def current_job(page: Page) -> str:
    """The job the page shows: its id is in the URL's fragment."""
    return page.evaluate("decodeURIComponent(location.hash.slice('#job='.length))")


@pytest.mark.shared
def test_upload_follow_play_solo_and_download(
    page: Page, server: Server, mu_dir: Path, tmp_path: Path
) -> None:
    mixture = mu_dir / "mixture.wav"
    info = sf.info(mixture)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    open_page(page, server)
    # Slower jobs ahead, so the page's job waits in the queue first.
    for _ in range(2):
        ahead = httpx.post(
            f"{server.url}/separate-async",
            data={"model": "hpss", "output_format": "wav"},
            files={"file": ("ahead.wav", mixture.read_bytes(), "audio/wav")},
        )
        assert ahead.status_code == 202
    submit(page, str(mixture))
    page.wait_for_selector("#job[data-status=queued]")
    assert re.fullmatch(r"Queued, position [12]", page.text_content("#job-state"))
    assert "waiting" in page.text_content("#job-detail")
    page.wait_for_selector("#job[data-status=completed]")
    page.wait_for_selector("#player[data-state=paused]")
    job_id = current_job(page)
    job = httpx.get(f"{server.url}/jobs/{job_id}").json()
    assert job["status"] == "completed" and job["model"] == "center"

    rows = page.query_selector_all("#stems li")
    assert [r.get_attribute("data-stem") for r in rows] == list(job["result"]["stems"])
    for row in rows:
        # Each stem was fetched, decoded by Web Audio and is as long as the mixture.
        assert float(row.get_attribute("data-duration")) == pytest.approx(info.duration, abs=1e-3)
    assert "took" in page.text_content("#job-detail")

    page.click("#play")
    page.wait_for_selector("#player[data-state=playing]")
    played = "() => Number(document.querySelector('#player').dataset.position) > 0.3"
    page.wait_for_function(played)
    assert page.text_content("#play") == "Pause"

    page.click("#stems li[data-stem=vocals] .solo")
    audible = {r.get_attribute("data-stem"): r.get_attribute("data-audible") for r in rows}
    assert audible == {"vocals": "true", "instrumental": "false"}
    page.click("#play")
    page.wait_for_selector("#player[data-state=paused]")
    paused_at = float(page.get_attribute("#player", "data-position"))
    assert 0.3 < paused_at < info.duration

    with page.expect_download() as download:
        page.click("#stems li[data-stem=vocals] .download")
    saved = tmp_path / "vocals.wav"
    download.value.save_as(saved)
    assert download.value.suggested_filename == "vocals.wav"
    assert saved.read_bytes() == httpx.get(f"{server.url}/jobs/{job_id}/files/vocals").content

    # The whole session needed nothing beyond the service: no CDN, font or tracker.
    elsewhere = [u for u in requested if not u.startswith((f"{server.url}/", "blob:", "data:"))]
    assert len(requested) > 5 and not elsewhere, elsewhere

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def api_error(server: Server, name: str, data: bytes) -> dict:
    answer = httpx.post(
        f"{server.url}/separate-async",
        data={"model": "center", "output_format": "wav"},
        files={"file": (name, data, "audio/wav")},
    )
    assert answer.status_code >= 400
    return answer.json()["error"]


@pytest.mark.parametrize(
    ("data", "code", "title"),
    [
        (b"this is not audio at all", "bad_audio", "not audio"),
        (b"\0" * (2 * 1024 * 1024), "payload_too_large", "too large"),
    ],
    ids=["bad-audio", "too-large"],
)
def test_a_refused_file_shows_the_api_error(
    page: Page, server: Server, data: bytes, code: str, title: str
) -> None:
    expected = api_error(server, "song.wav", data)
    assert expected["code"] == code
    open_page(page, server)
    submit(page, {"name": "song.wav", "mimeType": "audio/wav", "buffer": data})
    page.wait_for_selector("#error:not([hidden])")
    assert page.get_attribute("#error", "data-code") == code
    assert page.text_content("#error-text") == expected["message"]
    assert title in page.text_content("#error-title")
    assert page.is_hidden("#job")


@pytest.mark.shared
def test_hostile_name_is_shown_as_text_and_history_survives_a_reload(
    page: Page, server: Server, mu_dir: Path
) -> None:
    data = (mu_dir / "mixture.wav").read_bytes()
    open_page(page, server)
    submit(page, {"name": HOSTILE, "mimeType": "audio/wav", "buffer": data})
    page.wait_for_selector("#job[data-status=completed]")
    job_id = current_job(page)

    def shown_escaped() -> None:
        assert page.text_content("#job-title") == HOSTILE
        entry = page.locator(f'#history-list li[data-job-id="{job_id}"] .open')
        assert entry.text_content() == HOSTILE
        assert page.evaluate("document.querySelectorAll('img').length") == 0
        assert page.evaluate("window.__pwned") is None

    shown_escaped()
    assert HOSTILE in page.text_content("#file-name")
    page.reload()
    page.wait_for_selector("body[data-ready=true]", state="attached")
    # The history came back from localStorage, and the page reopened the job of its URL.
    page.wait_for_selector("#job[data-status=completed]")
    page.wait_for_selector("#player[data-state=paused]")
    shown_escaped()
    assert "completed" in page.text_content(f'#history-list li[data-job-id="{job_id}"]')

    # Removing an entry deletes the job on the server too.
    page.click(f'#history-list li[data-job-id="{job_id}"] .forget')
    page.wait_for_selector(f'#history-list li[data-job-id="{job_id}"]', state="detached")
    assert httpx.get(f"{server.url}/jobs/{job_id}").status_code == 404
    assert page.is_hidden("#job")


def test_csp_forbids_inline_scripts(page: Page, server: Server) -> None:
    for path in ("/ui", "/ui/app.js", "/ui/app.css", "/ui/config"):
        policy = httpx.get(server.url + path).headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy and "http" not in policy
    assert httpx.get(f"{server.url}/ui/page.py").status_code == 404

    response = open_page(page, server, "/")  # a browser asking for / gets the page
    assert "default-src 'self'" in response.headers["content-security-policy"]
    refused = page.evaluate(
        """() => new Promise((resolve) => {
            document.addEventListener('securitypolicyviolation',
                (e) => resolve(e.violatedDirective), {once: true});
            const s = document.createElement('script');
            s.textContent = 'window.__inline = 1';
            document.body.append(s);
        })"""
    )
    assert refused.startswith("script-src")
    assert page.evaluate("window.__inline") is None
    # API clients still get the seed's JSON at /.
    assert httpx.get(server.url + "/").json()["service"] == "DSU separation service"


def test_api_key_is_asked_for_and_kept_out_of_the_url(page: Page, keyed: Server) -> None:
    open_page(page, keyed)
    assert page.get_attribute("#error", "data-code") == "unauthorized"
    assert "API key is required" in page.text_content("#error-title")
    assert page.is_visible("#key-form")
    assert page.is_disabled("#start")

    page.fill("#api-key", KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#model option[value='model:center']", state="attached")
    assert page.is_hidden("#error")
    assert KEY not in page.url
    assert page.evaluate("sessionStorage.getItem('dsu.apiKey')") == KEY
    assert KEY not in page.evaluate("JSON.stringify(localStorage)")


@pytest.mark.shared
def test_async_upload_api(server: Server, mu_dir: Path) -> None:
    """The endpoint the page uses: POST /separate-async with a file instead of audio_url."""
    data = (mu_dir / "mixture.wav").read_bytes()
    form = {"model": "center", "output_format": "flac", "job_id": "web-upload-1"}
    files = {"file": ("mixture.wav", data, "audio/wav")}
    first = httpx.post(f"{server.url}/separate-async", data=form, files=files)
    assert first.status_code == 202 and first.json()["created"]
    again = httpx.post(f"{server.url}/separate-async", data=form, files=files)
    assert again.status_code == 200 and not again.json()["created"]
    job = server.wait_job("web-upload-1")
    assert job["status"] == "completed" and job["result"]["format"] == "flac"
    assert job["audio_url"] is None

    both = httpx.post(
        f"{server.url}/separate-async",
        data={"audio_url": "https://example.com/a.wav"},
        files=files,
    )
    neither = httpx.post(f"{server.url}/separate-async", data={"model": "center"})
    for answer in (both, neither):
        assert answer.status_code == 422
        assert "either audio_url or a file" in answer.json()["error"]["message"]
    unknown = httpx.post(f"{server.url}/separate-async", data={"model": "nope"}, files=files)
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "model_not_found"


def test_assets_ship_in_the_package() -> None:
    from importlib import resources

    from dsu.service.routes.page import ASSETS

    web = resources.files("dsu.service").joinpath("web")
    for name in [*ASSETS, "index.html"]:
        assert web.joinpath(name).is_file(), name
